"""The test-time-compute study end to end at smoke size, run as its docstring says (relative
workdir, from an empty directory, one CPU device): runs on the task mixture, counts.csv, fits,
held-out checks, the compute frontier, plots and report.md."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import scaling
from conftest import TTS_COMMAND
from experiments.harness import tasks
from experiments.reports import pass_at_k as report
from experiments.runner import runs as runs_lib
from experiments.studies import inference_compute as tts
from scaling.laws.pass_at_k import pass_at_k_curve


def test_the_docstring_command_is_the_tested_one():
    assert TTS_COMMAND in " ".join(tts.__doc__.split())


def test_smoke_test_time_study_end_to_end(tts_smoke):
    workdir, proc = tts_smoke
    study = tts.smoke()
    runs = list(tts.sweep(study))
    results = runs_lib.read_results(workdir)
    assert results["run_id"].tolist() == [r.run_id for r in runs] and (results["status"] == "completed").all()
    config = json.loads((workdir / "runs" / runs[0].run_id / "config.json").read_text())
    assert config["data"]["mixture"] == [f"{study.task}:{study.task_share}"]  # the mixture is part of the run

    counts = pd.read_csv(workdir / "counts.csv")
    problems = tts.problems(study)
    assert len(counts) == len(runs) * len(problems) and (counts["status"] == "completed").all()
    assert {"run_id", "n_params", "tokens", "flops", "problem", "difficulty", "n", "c", "c_weak"} <= set(counts.columns)
    assert (counts["n"] == study.samples).all() and (counts["c"] <= counts["c_weak"]).all()
    assert all(tasks.is_held_out(p) for p in problems)
    assert counts["c"].sum() > 0  # tiny models already solve some 1-2 digit sums

    fits = {p.stem: scaling.load(p) for p in (workdir / "fits").glob("*.json")}
    assert any(name.startswith("pass_at_k_beta__") for name in fits)
    text = (workdir / "report.md").read_text()
    for section in ("## Per model", "## Across models", "## Held-out check 1", "## Held-out check 2",
                    "## Weak checker", "## Training + sampling compute"):
        assert section in text, section
    # two training budgets: too few to select the cross-model law by extrapolation, and the report says so
    assert ("## Law selection: which cross-model pass@k law extrapolates to larger training budgets\n\n"
            "Not run: 2 distinct level(s) of train_budget") in text
    frontier = pd.read_csv(workdir / "frontier.csv")
    assert frontier["on_frontier"].any()
    assert (np.diff(frontier.loc[frontier["on_frontier"], "pass_at_k"]) > 0).all()
    for name in ("pass_at_k", "neg_log_pass_at_k", "params_vs_compute", "compute_frontier"):
        assert (workdir / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert proc.stdout.strip().splitlines()[-1].startswith(f"{study.name}: 4 of 4 runs completed; counts: ")


def test_measured_pass_at_k_and_frontier_by_hand():
    counts = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 3, "n": 8, "c": [0, 2, 8, 1, 1, 4], "c_weak": [1, 3, 8, 2, 1, 4],
                           "flops": [1e10] * 3 + [4e10] * 3, "sampling_flops": [8e4] * 3 + [3.2e5] * 3,
                           "status": "completed"})
    results = pd.DataFrame({"run_id": ["a", "b"], "n_params": [1e4, 4e4], "tokens": [1e5, 1e5],
                            "budget": [1e10, 4e10], "status": "completed", "reason": ""})
    ks = report.ks_for(8)
    assert ks.tolist() == [1, 2, 4, 8]
    a = counts[counts["run_id"] == "a"]
    assert np.allclose(report.pass_curve(a, ks), pass_at_k_curve(a["n"], a["c"], ks))
    assert report.pass_curve(a, [8])[0] == pytest.approx(2 / 3)  # 2 of 3 problems ever solved
    models = [{"run_id": r, "n_params": n, "tokens": 1e5, "budget": c, "flops": c, "ks": ks.tolist(),
               "pass_at_k": report.pass_curve(counts[counts["run_id"] == r], ks).tolist(),
               "flops_per_sample": f} for r, n, c, f in (("a", 1e4, 1e10, 1e4), ("b", 4e4, 4e10, 4e4))]
    table = report.frontier(models, queries=1e3)
    assert table["total_flops"].is_monotonic_increasing
    row = table[(table["run_id"] == "b") & (table["k"] == 4)].iloc[0]
    assert row["total_flops"] == pytest.approx(4e10 + 1e3 * 4 * 4e4)
    best = -math.inf
    for r in table.itertuples():  # on the frontier exactly when nothing cheaper is as good
        assert r.on_frontier == (r.pass_at_k > best)
        best = max(best, r.pass_at_k)
    acc = report.verifier(a.reset_index(drop=True), [1, 1e6])["accuracy"]
    # k = 1: mean of q_c over problems; k -> inf: mean of q_c / (q_c + q_f) (the weak checker's ceiling)
    assert acc[0] == pytest.approx(np.mean([0, 2 / 8, 1]))
    assert acc[1] == pytest.approx(np.mean([0, 2 / 3, 1]))


def test_cross_model_law_selection_ranks_the_simulating_law_first():
    """The report's `Select` of cross-model pass@k laws on simulated pass@k curves of 5 budgets x 2
    sizes from `coverage_compute_law` with a_N != a_D: it beats the law in compute alone."""
    from experiments.reports import choose

    truth = {"A": 30.0, "a_N": 0.05, "a_D": 0.2, "b": 0.3}
    rows = []
    for budget in (1e10, 3e10, 1e11, 3e11, 1e12):
        for n in (budget ** 0.5 / 30, budget ** 0.5 / 10):
            d = budget / (6 * n)
            for k in (1, 2, 4, 8, 16, 32):
                cov = np.exp(-truth["A"] * n ** -truth["a_N"] * d ** -truth["a_D"] * k ** -truth["b"])
                rows.append({"run_id": f"{budget:g}_{n:g}", "N": n, "D": d, "C": 6 * n * d, "train_budget": budget,
                             "k": float(k), "coverage": cov})
    out = choose.run_select(report.SELECT_COVERAGE, pd.DataFrame(rows))
    sel = out["selection"]
    assert out["reduced"] is None and sel.chosen == "coverage_compute_law"
    assert sel.table.set_index("law").loc["coverage_compute_law", "score"] < 1e-3
    lines = choose.select_lines(report.SELECT_COVERAGE, out, "coverage_compute_law")
    assert lines[-1].startswith("This report uses **coverage_compute_law** for the cross-model law")


def test_answer_nll_is_the_hand_computed_nll_of_the_answer_tokens():
    """`task_loss.answer_nll` on a random tiny model: the sum of -log softmax of the answer and
    newline tokens given the prompt (the model applied to that one document alone, no padding),
    the same in a padded batch beside a longer problem; at temperature T, exp(-nll) is the product
    of the softmax(logits / T) probabilities of those tokens."""
    import jax
    import jax.numpy as jnp

    from experiments.harness.tokenizers import ByteTokenizer
    from experiments.measures import task_loss
    from models.transformer import ModelConfig, Transformer

    cfg = ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=64, init_std=0.3)
    model = Transformer(cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    short = tasks.Problem("reversed_addition", 1, "3+4=", "7")
    long = tasks.Problem("reversed_addition", 3, "123+456=", "975")
    tok = ByteTokenizer()
    prompt, answer = list(tok.encode(short.prompt)), list(tok.encode(short.answer + "\n"))
    doc = jnp.asarray([prompt + answer], jnp.int32)
    logits = np.asarray(model.apply({"params": params}, doc), np.float64)[0]
    for temperature in (1.0, 0.7):
        logp = jax.nn.log_softmax(logits / temperature, axis=-1)
        hand = -sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(answer))
        for problems in ([short], [short, long]):
            batch = task_loss.answer_batch(tok, problems)
            assert batch["weights"][0].sum() == len(answer) == 2
            nll, nll_t = task_loss.answer_nll(cfg, params, batch, temperature)
            assert nll_t[0] == pytest.approx(hand, rel=1e-4)
            assert np.isfinite(nll).all() and (nll > 0).all()
    with pytest.raises(ValueError, match="temperature"):
        task_loss.answer_nll(cfg, params, batch, 0.0)
    with pytest.raises(ValueError, match="no problems"):
        task_loss.answer_batch(tok, [])


def test_smoke_two_step_task_prediction(tts_smoke):
    """task.csv holds the kept intermediate checkpoint and the final one of every run, with finite
    task losses and pass@1 in [0, 1] (the expected pass@1 close to the sampled one at the final
    checkpoint); report.md's two-step section has the held-out model's predictions, two-step and
    coverage_compute_law, as numbers."""
    workdir, _ = tts_smoke
    study = tts.smoke()
    runs = list(tts.sweep(study))
    task = pd.read_csv(workdir / "task.csv")
    assert (task["status"] == "completed").all() and len(task) == 2 * len(runs)
    for run in runs:
        rows = task[task["run_id"] == run.run_id].sort_values("step")
        steps = run.config.train.tokens // (run.config.train.batch_size * run.config.data.seq_len)
        assert rows["step"].tolist() == [round(steps * study.task_checkpoints[0]), steps]
        assert rows["final"].tolist() == [False, True]
        assert (rows["tokens"] == rows["step"] * run.config.train.batch_size * run.config.data.seq_len).all()
    assert np.isfinite(task["task_loss"]).all() and (task["task_loss"] > 0).all()
    assert task["pass_at_1"].between(0, 1).all() and (task["pass_at_1"] > 0).all()
    counts = pd.read_csv(workdir / "counts.csv")
    sampled = counts.groupby("run_id").apply(lambda g: (g["c"] / g["n"]).mean())
    final = task[task["final"]].set_index("run_id")["pass_at_1"]
    assert np.abs(final - sampled[final.index]).max() < 0.05  # 24 problems x 32 samples vs the expectation

    text = (workdir / "report.md").read_text()
    head = "## Two-step task prediction: (N, D) -> task loss -> pass@1, the largest model held out"
    assert head in text
    body = text.split(head)[1].split("\n## ")[0]
    results = runs_lib.read_results(workdir)
    held = results.sort_values(["n_params", "tokens"])["run_id"].iloc[-1]  # the largest N, then the most tokens
    assert f"Held out: the largest model, {held}" in body
    measured = float(body.split("Measured pass@1 (expected, from the logits): ")[1].split(";")[0])
    assert measured == pytest.approx(float(final[held]), abs=1e-4)
    for method in ("two-step, accuracy_sigmoid", "two-step, error_exponential", "coverage_compute_law (k = 1)"):
        row = next(line for line in body.splitlines() if line.startswith(f"| {method} |"))
        predicted = float(row.split("|")[2])
        assert 0 <= predicted <= 1, row
        assert row.split("|")[4].strip().endswith("%"), row  # the error against the measured pass@1
    assert (workdir / "plots" / "two_step.png").read_bytes()[:4] == b"\x89PNG"
    assert {"task_loss_chinchilla__held_out", "task_accuracy_sigmoid__held_out"} <= {
        p.stem for p in (workdir / "fits").glob("*.json")}


def test_task_table_is_validated_and_the_largest_model_is_held_out():
    from experiments.reports import task_prediction

    task = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "n_params": [1e4, 1e4, 3e4, 3e4], "step": [5, 10, 5, 10],
                         "tokens": [5e3, 1e4, 5e3, 1e4], "final": [False, True, False, True],
                         "task_loss": [5.0, 4.0, 4.5, 3.5], "pass_at_1": [0.01, 0.02, 0.015, 0.03],
                         "status": "completed", "reason": ""})
    table = task_prediction.checkpoint_table(task)
    assert table["error"].tolist() == pytest.approx([0.99, 0.98, 0.985, 0.97])
    assert task_prediction.largest_model(table) == "b"
    with pytest.raises(ValueError, match="pass_at_1 must be in"):
        task_prediction.checkpoint_table(task.assign(pass_at_1=[0.1, 1.2, 0.1, 0.1]))
    with pytest.raises(ValueError, match="task_loss must be finite"):
        task_prediction.checkpoint_table(task.assign(task_loss=[1.0, np.nan, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"missing columns \['final'\]"):
        task_prediction.checkpoint_table(task.drop(columns="final"))
    with pytest.raises(ValueError, match="held_out='c' has no final checkpoint"):
        task_prediction.analyze(task, [], report.cross_model, held_out="c")
    two = task_prediction.analyze(task, [], report.cross_model)  # one model besides the held-out one
    assert two["held_out_id"] == "b" and "too few to fit" in two["skipped"]
