"""experiments.measures.samples on a tiny model trained a few steps on the task data:
counts from the sampler agree with an independent greedy decoder (full forward passes) and the
checkers; run metadata and sampling FLOPs come from result.json and scaling.flops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.harness import restore, tasks
from experiments.measures import samples as measure_samples
from experiments.harness.config import Config, TrainConfig
from experiments.harness.data import DataConfig
from experiments.harness.train import train
from models.transformer import ModelConfig, Transformer, shape_dict
from scaling import flops as sflops

TASKS = "verifiable_tasks/small"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tasks.prepare(TASKS, data_dir)
    cfg = Config(
        model=ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, max_seq_len=64),
        data=DataConfig(dataset=TASKS, data_dir=data_dir, seq_len=64, eval_split="test",
                        eval_sequences=8, prefetch_batches=0, shuffle_tokens=0),
        train=TrainConfig(tokens=80 * 16 * 64, batch_size=16, lr=1e-2, warmup=4, log_every=20,
                          checkpoint_every=0, eval_batch_size=8))
    workdir = tmp_path_factory.mktemp("runs") / "tiny-run"
    result = train(cfg, workdir, devices=jax.devices()[:1])
    problems = tasks.load_problems(TASKS, "test", data_dir)[:12]
    return dict(cfg=cfg, workdir=workdir, result=result, problems=problems)


def _greedy_completion(forward, params, prompt: str, steps: int) -> str:
    """Independent greedy decoder: full forward passes on a right-padded fixed-length row."""
    seq = list(prompt.encode())
    for _ in range(steps):
        row = np.zeros((1, 32), np.int32)
        row[0, :len(seq)] = seq
        seq.append(int(np.argmax(np.asarray(forward(params, jnp.asarray(row)))[0, len(seq) - 1])))
        if seq[-1] == 10:
            break
    return bytes(seq[len(prompt.encode()):]).decode("utf-8", "replace")


def test_greedy_counts_match_an_independent_decoder(run):
    rows = measure_samples.sample_counts(run["workdir"], run["problems"], 8, temperature=0.0, max_rows=32)
    params = restore.load_run(run["workdir"]).params
    assert [r["problem"] for r in rows] == [p.prompt for p in run["problems"]]
    steps = max(len(p.answer) for p in run["problems"]) + 2
    model = Transformer(run["cfg"].model)
    forward = jax.jit(lambda p, t: model.apply({"params": p}, t))
    for row, problem in zip(rows, run["problems"]):
        completion = _greedy_completion(forward, params, problem.prompt, steps)
        assert row["n"] == 8
        assert row["c"] == 8 * tasks.exact_check(problem, completion)
        assert row["c_weak"] == 8 * tasks.weak_check(problem, completion)


def test_sampled_counts_fields_and_flops(run):
    result = run["result"]
    rows = measure_samples.sample_counts(run["workdir"], run["problems"], 40, temperature=1.0, seed=3,
                                         max_rows=32, run_id="tiny")
    assert len(rows) == len(run["problems"])
    shape = shape_dict(run["cfg"].model)
    for row, problem in zip(rows, run["problems"]):
        assert {"run_id", "n_params", "tokens", "flops", "problem", "difficulty", "n", "c", "c_weak"} <= set(row)
        assert row["run_id"] == "tiny" and row["difficulty"] == problem.difficulty
        assert (row["n_params"], row["tokens"], row["flops"]) == (
            result["n_params"], result["tokens"], result["flops"]["exact"])
        assert row["n"] == 40 and 0 <= row["c"] <= row["c_weak"] <= 40
        assert 1 <= row["mean_new_tokens"] <= len(problem.answer) + 3
        prompt_len = len(problem.prompt.encode())
        assert row["sampling_flops"] == pytest.approx(
            sflops.sampling_flops(shape, prompt_len, row["mean_new_tokens"], 40, "exact"))
    assert sum(r["c"] for r in rows) > 0  # 80 steps: pass@1 ~ 2% (measured), so some of 480 samples pass
    (sampler,) = measure_samples._SAMPLERS.values()  # one model shape: one Sampler for all calls
    traces = sampler.traces
    again = measure_samples.sample_counts(run["workdir"], run["problems"][:3], 40, temperature=0.7, seed=4,
                                          max_rows=32)
    assert sampler.traces == traces and [r["n"] for r in again] == [40] * 3  # no new compile
    fpr = tasks.weak_false_positive_rate(rows)
    assert 0 <= fpr < 1
    with pytest.raises(ValueError, match="no config.json"):
        measure_samples.sample_counts(run["workdir"].parent, run["problems"], 2)


@pytest.mark.filterwarnings("ignore:'VariableState' was removed:DeprecationWarning")
def test_int8_kv_cache_counts_match_a_fake_quantized_decoder(run):
    """kv_cache="int8": greedy counts equal an independent decoder whose keys/values are
    fake-quantized to int8 (``ptq_model(kv="int8")``, full forward passes, no cache)."""
    from models.quantization import QuantConfig, ptq_model

    problems = run["problems"][:6]
    rows = measure_samples.sample_counts(run["workdir"], problems, 4, temperature=0.0, max_rows=32,
                                         kv_cache="int8")
    params = restore.load_run(run["workdir"]).params
    model = ptq_model(run["cfg"].model, QuantConfig(kv="int8"))
    forward = jax.jit(lambda p, t: model.apply({"params": p}, t))
    steps = max(len(p.answer) for p in problems) + 2
    for row, problem in zip(rows, problems):
        completion = _greedy_completion(forward, params, problem.prompt, steps)
        assert row["c"] == 4 * tasks.exact_check(problem, completion)
        assert row["c_weak"] == 4 * tasks.weak_check(problem, completion)
    assert any(s.kv_cache == "int8" for s in measure_samples._SAMPLERS.values())
