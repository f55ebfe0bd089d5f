"""The study runner: sizes and ids, failures and exit status, measure stages, the README's main
command end to end, and kill-and-resume.

The end-to-end tests run the real experiment file in subprocesses exactly as the README says
(``python -m experiments.isoflop_chinchilla --workdir runs/ci --preset smoke``: a RELATIVE
workdir, from a directory that is not the repository, with the repository importable as after
``pip install -e .``), with one CPU device as on a laptop; the smoke study's outputs are shared
through a module-scoped fixture, and the kill test reruns part of it and compares its rows with
the uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import scaling
from conftest import README_MAIN, user_env  # the session fixture smoke_grid runs README_MAIN
from experiments import isoflop_chinchilla as chinchilla
from experiments import isoflop_nonembed as nonembed
from experiments.harness.config import config_hash
from experiments.runner import design, runs as grid
from experiments.runner.measure import Measure, measure_runs, read_measurements
from experiments.runner.study import StudyFailed, run_study
from scaling import flops as sflops

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "smoke"]


def _env(cache_dir: Path | None = None) -> dict:
    return user_env(cache_dir)


def _study_cmd(workdir: Path | str, *extra: str, module: str = "experiments.isoflop_chinchilla") -> list[str]:
    return [sys.executable, "-m", module, "--workdir", str(workdir), *SMOKE, *extra]


# ----------------------------------------------------------------------------- cheap units


def test_log_spaced_sizes_center_and_spread():
    sizes = design.log_spaced(1e5, 5, 16.0)
    assert sizes.max() / sizes.min() == pytest.approx(16.0)
    assert math.exp(np.mean(np.log(sizes))) == pytest.approx(1e5)
    assert np.allclose(np.diff(np.log(sizes)), math.log(16.0) / 4)
    assert design.log_spaced(3.0, 1, 10.0).tolist() == [3.0]
    with pytest.raises(ValueError, match="spread"):
        design.log_spaced(1e5, 3, 0.5)


def test_prior_optimum_matches_the_published_law_and_converts_conventions():
    hoffmann = scaling.published.get("hoffmann2022")
    for budget in (1e11, 1e18, 5.76e23):
        expected = float(np.asarray(hoffmann.compute_optimal(budget)["N"]).reshape(-1)[0])
        assert design.prior_optimal_params(budget) == pytest.approx(expected, rel=1e-9)
    # our FLOPs per token are half of 6N: the prior sees half our budget -> a smaller N_opt
    half = design.prior_optimal_params(1e18, flops_ratio=lambda n: 2.0)
    assert half == pytest.approx(design.prior_optimal_params(0.5e18), rel=1e-6)


def test_sweep_spends_each_budget_under_its_convention():
    for study in (chinchilla.cpu(), nonembed.cpu()):
        runs = list(chinchilla.sweep(study))
        assert len({r.budget for r in runs}) == len(study.budgets) >= 5
        assert len(runs) >= 4 * 5
        for run in runs:
            plan = run.plan()
            flops = plan.flops_at(plan.steps)[study.flop_convention]
            step_flops = plan.flops_per_token[study.flop_convention] * plan.tokens_per_step
            assert abs(flops - run.budget) <= step_flops / 2 + 1e-6 * run.budget
            assert plan.steps >= study.min_steps


def test_run_ids_are_readable_stable_unique_and_ignore_the_mesh():
    study = chinchilla.smoke()
    runs = list(chinchilla.sweep(study))
    ids = grid.check_runs(runs)
    assert ids == grid.check_runs(list(chinchilla.sweep(study)))
    assert len(set(ids)) == len(ids)
    pattern = re.compile(r"^C\d\.\de\d+_N\d(\.\d+)?e\d+_D\d(\.\d+)?e\d+_s\d+_[0-9a-f]{8}$")
    assert all(pattern.match(i) for i in ids), ids
    run = runs[0]
    resharded = grid.Run(run.budget, dataclasses.replace(run.config, mesh="data=1,fsdp=1,tensor=1"))
    assert resharded.run_id == run.run_id
    assert run.run_id.endswith(config_hash(run.config)[:8])
    seed1 = grid.Run(run.budget, dataclasses.replace(
        run.config, train=dataclasses.replace(run.config.train, seed=1)))
    assert seed1.run_id != run.run_id
    with pytest.raises(ValueError, match="same config"):
        grid.check_runs([run, resharded])


def test_grid_records_failures_keeps_going_and_skips_finished_runs(tmp_path):
    runs = list(chinchilla.sweep(chinchilla.smoke()))[:4]
    bad = runs[1].run_id
    calls = []

    def fake_train(cfg, run_dir, fail=True):
        rid = run_dir.name
        calls.append(rid)
        if fail and rid == bad:
            raise RuntimeError("out of memory\nat step 3")
        status = "diverged" if rid == runs[2].run_id else "completed"
        result = {"status": status, "reason": "loss exploded" if status == "diverged" else "",
                  "eval_loss": None if status == "diverged" else 3.0 - 0.1 * len(calls),
                  "eval_loss_sem": 0.01, "n_params": 1000, "n_params_nonembedding": 100,
                  "tokens": 5000, "flops": {c: 1.0 for c in sflops.CONVENTIONS}}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "result.json").write_text(json.dumps(result))
        return result

    first = grid.train_runs(runs, tmp_path, train_fn=fake_train, progress=False)
    assert calls == [r.run_id for r in runs]
    table = grid.read_results(tmp_path)
    assert list(table.columns) == list(grid.RESULT_COLUMNS)
    assert table["run_id"].tolist() == [r.run_id for r in runs]
    assert table["status"].tolist() == ["completed", "failed", "diverged", "completed"]
    assert table.loc[1, "reason"] == "RuntimeError: out of memory at step 3"
    assert math.isnan(table.loc[1, "eval_loss"]) and math.isnan(table.loc[2, "eval_loss"])
    assert table.loc[1, "n_params"] == runs[1].plan().n_params["total"]  # planned values
    pd.testing.assert_frame_equal(first.reset_index(drop=True), table, check_dtype=False)

    calls.clear()  # rerun: only the failed run is tried again
    grid.train_runs(runs, tmp_path, train_fn=lambda c, d: fake_train(c, d, fail=False), progress=False)
    assert calls == [bad]
    assert grid.read_results(tmp_path)["status"].tolist() == ["completed", "completed", "diverged", "completed"]


# ----------------------------------------------------------------------------- end to end


def test_readme_headline_commands_are_the_tested_ones():
    readme = (REPO / "README.md").read_text()
    assert README_MAIN.replace("runs/ci --preset smoke", "runs/demo --preset cpu") in readme
    assert README_MAIN in readme
    doc = chinchilla.__doc__
    assert README_MAIN in " ".join(doc.split())


def test_smoke_grid_end_to_end(smoke_grid):
    workdir, proc, _ = smoke_grid
    study = chinchilla.smoke()
    expected_ids = grid.check_runs(list(chinchilla.sweep(study)))
    results = grid.read_results(workdir)
    assert results["run_id"].tolist() == expected_ids
    assert (results["status"] == "completed").all(), results[["run_id", "status", "reason"]]
    assert np.isfinite(results["eval_loss"]).all() and (results["eval_loss"] > 0).all()
    assert np.allclose(results["flops_6N"], results["budget"], rtol=0.05)
    for rid in expected_ids:
        assert (workdir / "runs" / rid / "result.json").exists()

    analysis = json.loads((workdir / "analysis.json").read_text())
    fits = sorted((workdir / "fits").glob("*.json"))
    names = {f.stem for f in fits}
    fitted = {f"approach{i}_{law}" for i, res in analysis["approaches"].items()
              for law, key in (("n_opt", "n_opt_law"), ("d_opt", "d_opt_law"), ("loss_opt", "loss_opt_law"),
                               ("parametric", "parametric")) if res.get(key)}
    assert names == fitted  # one file per fitted law, nothing else
    assert {"approach3_parametric", "approach3_n_opt", "approach3_d_opt", "approach3_loss_opt"} <= names
    for path in fits:
        law = scaling.load(path)
        assert all(math.isfinite(v) for v in law.params.values())
    parametric = scaling.load(workdir / "fits" / "approach3_parametric.json")
    assert parametric.law.name == "chinchilla"
    assert len(parametric.residuals) == len(results)

    for name in ("isoflop_curves", "compute_optimal", "isoloss_frontier", "training_envelope"):
        png = workdir / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    report = (workdir / "report.md").read_text()
    assert "## Compute-optimal exponents" in report
    rows = [line for line in report.splitlines() if re.match(r"^\| [123]\. ", line)]
    assert len(rows) == 3, rows
    for row in rows:  # every approach has numbers: a, its interval, b, its interval
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert "not fitted" not in row and re.match(r"^-?\d\.\d{3}$", cells[1]), row
        assert re.match(r"^\[-?[\d.e+-]+, -?[\d.e+-]+\]$", cells[2]), row
    a3 = parametric.params["beta"] / (parametric.params["alpha"] + parametric.params["beta"])
    assert f"{a3:.3f}" in report  # Approach 3's a = beta / (alpha + beta), as fitted
    assert "Extrapolation to the held-out largest budget" in report
    # law selection: chinchilla, kaplan and overtraining refitted on the two smaller budgets
    assert "## Law selection: which loss law L(N, D) extrapolates to larger budgets" in report
    chosen = json.loads((workdir / "select_loss.json").read_text())
    assert {r["law"] for r in chosen["table"]} == {"chinchilla", "kaplan", "overtraining"}
    assert {s["level"] for s in chosen["splits"]} == {max(results["budget"])}
    assert "This report uses **chinchilla** for Approach 3" in report
    assert "Tokens per parameter" in report
    assert "report.md" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{study.name}: {len(results)} of {len(results)} runs completed")
    assert str(workdir / "report.md") in last  # the relative workdir, resolved once
    assert "Downloading" not in proc.stdout + proc.stderr  # the local corpus is built, not downloaded


def _kill_mid_run(workdir: Path, cmd: list[str], env: dict, cwd: Path, timeout: float = 600) -> None:
    """Start the grid; SIGKILL its process group once a run after the first has checkpointed."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            runs_dir = workdir / "runs"
            dirs = list(runs_dir.glob("*")) if runs_dir.exists() else []
            finished = [d for d in dirs if (d / "result.json").exists()]
            checkpointed = [d for d in dirs if not (d / "result.json").exists() and (d / "checkpoints").exists()
                            and any(p.name.isdigit() for p in (d / "checkpoints").iterdir())]
            if finished and checkpointed:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the grid ended before it could be killed"


def test_killed_grid_resumes_to_the_same_results(smoke_grid, tmp_path):
    reference_dir, _, cache = smoke_grid
    reference = grid.read_results(reference_dir)
    workdir = tmp_path / "grid"
    # the two smaller budgets of the smoke grid, without the analysis (to keep CI short); the
    # workdir is relative to the command's directory
    budgets = sorted(chinchilla.smoke().budgets)[:2]
    cmd = _study_cmd("grid", "--set", f"budgets={','.join(map(str, budgets))}", "--set", "analyze=false")
    _kill_mid_run(workdir, cmd, _env(cache), cwd=tmp_path)
    partial = grid.read_results(workdir)
    interrupted = [d.name for d in (workdir / "runs").glob("*") if not (d / "result.json").exists()]
    assert interrupted, "no run was interrupted"
    assert (partial["status"] == "completed").sum() >= 1
    assert set(partial.loc[partial["run_id"].isin(interrupted), "status"]) == {"pending"}

    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(cache), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    resumed = grid.read_results(workdir)
    assert resumed["run_id"].is_unique and (resumed["status"] == "completed").all()
    expected = reference[reference["budget"].isin(budgets)].reset_index(drop=True)
    assert resumed["run_id"].tolist() == expected["run_id"].tolist()  # same rows, same order
    pd.testing.assert_frame_equal(resumed, expected)  # eval losses equal, every column
    for victim in interrupted:  # the interrupted run resumed: no step logged twice, none missing
        records = [json.loads(line) for line in (workdir / "runs" / victim / "metrics.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in records if "train_loss" in r]
        assert steps == sorted(set(steps))
        every = chinchilla.smoke().base.train.log_every
        assert steps[:-1] == list(range(every, every * len(steps), every))


# ----------------------------------------------------------------------------- exit status


def _fake_result(run_dir, status="completed", loss=3.0):
    result = {"status": status, "reason": "" if status == "completed" else "loss exploded",
              "eval_loss": loss if status == "completed" else None, "eval_loss_sem": 0.01,
              "n_params": 1000, "n_params_nonembedding": 100, "tokens": 5000,
              "flops": {c: 1.0 for c in sflops.CONVENTIONS}}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps(result))
    return result


def test_a_study_where_every_run_failed_raises_with_the_first_reason(tmp_path):
    runs = list(chinchilla.sweep(chinchilla.smoke()))[:3]

    def broken(cfg, run_dir):
        raise RuntimeError(f"no accelerator for {run_dir.name}")

    with pytest.raises(StudyFailed, match=rf"all 3 runs failed.*{runs[0].run_id}: failed \(RuntimeError: no accelerator"):
        run_study("s", tmp_path, runs, train_fn=broken, progress=False, analyze=lambda c: {"fitted": ["x"]})
    assert grid.read_results(tmp_path)["status"].tolist() == ["failed"] * 3


def test_partial_failures_are_counted_on_the_last_line_and_an_empty_analysis_fails(tmp_path, capsys):
    runs = list(chinchilla.sweep(chinchilla.smoke()))[:3]

    def flaky(cfg, run_dir):
        if run_dir.name == runs[1].run_id:
            raise RuntimeError("preempted\ntwice")
        return _fake_result(run_dir)

    out = run_study("s", tmp_path, runs, train_fn=flaky, progress=False,
                    analyze=lambda c: {"fitted": ["law"], "report": c.workdir / "report.md"})
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == out["summary"]
    assert last.startswith("s: 2 of 3 runs completed (1 failed; first: run "
                           f"{runs[1].run_id}: failed (RuntimeError: preempted twice))")
    assert "1 laws fitted" in last
    with pytest.raises(StudyFailed, match="fitted no law: too few budgets"):
        run_study("s", tmp_path, runs, train_fn=flaky, progress=False,
                  analyze=lambda c: {"fitted": [], "notes": ["too few budgets"]})


def test_the_cli_turns_a_failed_study_into_one_line_and_exit_status_1(tmp_path):
    cmd = _study_cmd("runs/bad", "--set", "budgets=5e9", "--set", "sizes_per_budget=1",
                     "--set", "base.data.dataset=no_such_dataset")
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m experiments.isoflop_chinchilla: error: isoflop_chinchilla_smoke: "
                           "all 1 runs failed or diverged; first: run C5.0e9_")
    assert "no_such_dataset" in last and len(last) < 700
    assert "Traceback" not in last


@pytest.mark.parametrize("module", ["experiments.train_lm", "experiments.isoflop_chinchilla",
                                    "experiments.isoflop_nonembed", "experiments.quantization_degradation",
                                    "experiments.studies.inference_compute"])
def test_bad_workdirs_are_one_line_errors_with_exit_status_2(module, tmp_path, capsys):
    import importlib

    main = importlib.import_module(module).main
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    cases = {str(a_file): "exists and is not a directory",
             str(a_file / "run"): "is a file, not a directory",
             "/proc/no_such_process/run": "not writable"}  # a read-only file system, even for root
    if os.geteuid() != 0:  # root writes into a read-only folder anyway
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases[str(locked / "run")] = "not writable"
    for workdir, message in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(["--workdir", workdir, "--preset", "smoke"])
        assert exit_info.value.code == 2, workdir
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"workdir {workdir}" in err[0] and message in err[0], err
        assert err[0].startswith(f"python -m {module}: error: ") or ": error: " in err[0]


def test_relative_workdirs_resolve_against_the_current_directory(tmp_path, monkeypatch):
    from experiments.harness import io

    monkeypatch.chdir(tmp_path)
    assert str(io.resolve_workdir("runs/x")) == str(tmp_path / "runs" / "x")
    assert str(io.resolve_workdir("gs://bucket/x")) == "gs://bucket/x"
    assert str(io.check_workdir("runs/y")) == str(tmp_path / "runs" / "y")
    assert (tmp_path / "runs" / "y").is_dir() and not list((tmp_path / "runs" / "y").iterdir())


# ----------------------------------------------------------------------------- measure stage


def test_measure_stage_resumes_item_by_item_and_records_failures(tmp_path):
    runs = list(chinchilla.sweep(chinchilla.smoke()))[:3]
    results = grid.train_runs(runs, tmp_path, train_fn=lambda c, d: _fake_result(d), progress=False)
    calls = []
    crash_after = {"n": 4}

    def measure(run, items):
        calls.append((run.run_id, [i["bits"] for i in items]))
        assert run.run_dir.name == run.run_id and run.run_dir.parent.name == "runs"
        assert run.result["status"] == "completed" and run.run_dir.parent.parent in (tmp_path, tmp_path / "other")
        for item in items:
            if crash_after["n"] == 0:
                raise RuntimeError("killed")
            crash_after["n"] -= 1
            yield {**item, "delta": 1.0 / item["bits"] + len(run.run_id) * 1e-3}

    stage = Measure(name="ptq", key=("bits",), items=lambda run: [{"bits": b} for b in (8, 4, 2)],
                    measure=measure)
    first = measure_runs(stage, runs, results, tmp_path, progress=False)
    # run 0 finished, run 1 died after its first item, run 2 died at once
    assert first["status"].tolist() == ["completed"] * 4 + ["failed"] * 5
    failed = first[first["status"] == "failed"]
    assert set(failed["reason"]) == {"RuntimeError: killed"}
    crash_after["n"] = 10**9
    calls.clear()
    second = measure_runs(stage, runs, results, tmp_path, progress=False)
    assert calls == [(runs[1].run_id, [4, 2]), (runs[2].run_id, [8, 4, 2])]  # only what was missing
    assert (second["status"] == "completed").all() and len(second) == 9
    assert second["run_id"].tolist() == [r.run_id for r in runs for _ in range(3)]
    assert second["bits"].tolist() == [8, 4, 2] * 3
    calls.clear()  # finished: nothing is measured again, and the file is the same
    third = measure_runs(stage, runs, results, tmp_path, progress=False)
    assert calls == [] and third.equals(second)
    # an uninterrupted stage writes the same file
    other = tmp_path / "other"
    grid.train_runs(runs, other, train_fn=lambda c, d: _fake_result(d), progress=False)
    straight = measure_runs(stage, runs, results, other, progress=False)
    assert (other / "ptq.csv").read_text() == (tmp_path / "ptq.csv").read_text()
    assert straight.equals(second)
    (tmp_path / "ptq.csv").write_text("run_id,bits,status,reason\nx,8,weird,\n")
    with pytest.raises(ValueError, match="unknown status"):
        read_measurements(tmp_path / "ptq.csv")


def test_run_labels_become_results_columns(tmp_path):
    runs = list(chinchilla.sweep(chinchilla.smoke()))[:2]
    labelled = [grid.Run(r.budget, r.config, labels={"role": role}) for r, role in zip(runs, ("grid", "control"))]
    assert [r.run_id for r in labelled] == [r.run_id for r in runs]  # labels are not part of the id
    grid.train_runs(labelled, tmp_path, train_fn=lambda c, d: _fake_result(d), progress=False)
    table = grid.read_results(tmp_path)
    assert table["role"].tolist() == ["grid", "control"]
    with pytest.raises(ValueError, match="overwrite"):
        grid.label_columns([grid.Run(runs[0].budget, runs[0].config, labels={"tokens": 3})])


def test_prior_can_be_a_fitted_law_file_written_by_an_earlier_study(tmp_path):
    hoffmann = scaling.published.get("hoffmann2022")
    path = tmp_path / "fits" / "parametric.json"
    path.parent.mkdir()
    hoffmann.save(path)
    for budget in (1e12, 1e18):
        assert design.prior_optimal_params(budget, prior=str(path)) == pytest.approx(
            design.prior_optimal_params(budget), rel=1e-9)
    with pytest.raises(ValueError, match="no such fitted-law file"):
        design.prior_optimal_params(1e12, prior=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="neither a published law"):
        design.prior_optimal_params(1e12, prior="hoffman2022")


# ----------------------------------------------------------------------------- prediction rung


def test_rung_trains_what_the_fitted_laws_choose_and_reports_predicted_against_measured(smoke_grid, tmp_path):
    import shutil

    from experiments.reports import isoflop as isoflop_report
    from experiments.runner.study import Rung

    grid_dir, _, _ = smoke_grid
    study = dataclasses.replace(chinchilla.smoke(), rung_budgets=(6e10,))
    runs = list(chinchilla.sweep(study))[:2]
    trained = []

    def fake_train(cfg, run_dir):
        trained.append(run_dir)
        return _fake_result(run_dir, loss=2.25)

    def analyze(context):  # stands in for the isoFLOP analysis: the smoke grid's fitted laws
        shutil.copytree(grid_dir / "fits", context.workdir / "fits")
        (context.workdir / "report.md").write_text("# report\n")
        return {"fitted": ["approach2_n_opt"], "report": context.workdir / "report.md"}

    rung = Rung(runs=lambda w: isoflop_report.rung_runs(w, study.rung_budgets,
                                                         lambda b, n: chinchilla.rung_run(study, b, n)),
                report=isoflop_report.rung_report)
    out = run_study("s", tmp_path, runs, train_fn=fake_train, progress=False, analyze=analyze, rung=rung)
    n_opt = design.prior_optimal_params(6e10, prior=str(grid_dir / "fits" / "approach2_n_opt.json"))
    rung_table = grid.read_results(tmp_path / "rung")
    assert len(rung_table) == 1 and rung_table.loc[0, "budget"] == 6e10
    assert rung_table.loc[0, "role"] == "rung" and trained[-1].parent == tmp_path / "rung" / "runs"
    planned = chinchilla.rung_run(study, 6e10, n_opt).plan().n_params["total"]
    assert 0.7 < planned / n_opt < 1.4  # the shape lattice's model nearest the fitted N_opt
    rows = json.loads((tmp_path / "rung.json").read_text())["rows"]
    pred = rows[0]["predictions"]["approach2_loss_opt"]
    law = scaling.load(grid_dir / "fits" / "approach2_loss_opt.json")
    with pytest.warns(UserWarning):
        assert pred["loss"] == pytest.approx(float(law.predict(x=np.array([6e10]))[0]), rel=1e-12)
    assert pred["rel_error"] == pytest.approx(pred["loss"] / 2.25 - 1)
    lo, hi = pred["interval"]
    assert lo < pred["loss"] < hi and pred["interval_covers"] == (lo <= 2.25 <= hi)
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# report") and "## Prediction rung" in report
    assert "approach3_parametric" in report and "2.2500 ± 0.0100" in report
    assert "rung: 1 runs trained beyond the grid" in out["summary"]
    trained.clear()  # rerun: nothing is trained again
    run_study("s", tmp_path, runs, train_fn=fake_train, progress=False, analyze=lambda c: {
        "fitted": ["x"], "report": c.workdir / "report.md"}, rung=rung)
    assert trained == []
