"""experiments.runner.executors: a study's runs as Ray tasks on a local cluster of 2 workers.

* the runner's contract under Ray, in-process with stand-in runs (no JAX): rows in run order,
  failures recorded as the serial runner records them, measure rows the same bytes;
* the README's smoke isoFLOP study under ``--executor ray``: the same run ids and the same
  results.csv, byte for byte, as the serial smoke study (the session's ``smoke_grid``);
* a smaller grid killed (SIGKILL, driver and Ray together) after its first finished run resumes
  under Ray, skips what finished, and gives the serial study's rows for those runs, with W&B
  (offline) runs named by run id and grouped by the study.

results.csv has no wall-clock column (`experiments.runner.runs`: "nothing time-dependent goes
in"), so the whole file is compared; the per-run seconds go to the progress lines only.
"""

import csv
import io as _io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from conftest import README_MAIN, _argv, user_env  # noqa: E402
from experiments.harness import io, metrics_log  # noqa: E402
from experiments.harness.config import Config, TrainConfig  # noqa: E402
from experiments.harness.data import DataConfig  # noqa: E402
from experiments.runner import executors  # noqa: E402
from experiments.runner.measure import Measure, measure_runs  # noqa: E402
from experiments.runner.runs import Run, train_runs  # noqa: E402
from models.transformer import ModelConfig  # noqa: E402

RAY = "--executor ray --ray_workers 2"


def tiny_runs(n=4):
    model = ModelConfig(vocab_size=256, d_model=32, n_layers=1, n_heads=2, max_seq_len=16)
    return [Run(budget=1e9 * (i + 1), config=Config(model=model, data=DataConfig(seq_len=16),
                                                    train=TrainConfig(tokens=10_000 * (i + 1), seed=i)))
            for i in range(n)]


def test_task_resources_follow_the_config():
    cfg = tiny_runs(1)[0].config
    assert executors.task_resources(cfg, "cpu") == {"num_cpus": 1}
    assert executors.task_resources(cfg, "gpu") == {"num_cpus": 1, "num_gpus": 1}
    import dataclasses
    assert executors.task_resources(dataclasses.replace(cfg, mesh="data=2,fsdp=4"), "gpu")["num_gpus"] == 8
    assert executors.task_resources(cfg, "v5p-8") == {"num_cpus": 1, "resources": {"TPU-v5p-8-head": 1}}
    with pytest.raises(ValueError, match="--ray_resources"):
        executors.task_resources(cfg, "quantum")


def test_ray_runner_matches_serial_rows_failures_and_measures(tmp_path):
    """Stand-in training (no JAX) through a local 2-worker cluster: results.csv and the measure
    CSV are the serial runner's bytes, a raising run is recorded with its type and message."""
    runs = tiny_runs()

    def fake_train(cfg, run_dir):  # pickled by value into the workers
        import time as _time

        from experiments.harness import io as hio
        _time.sleep(0.3 * (4 - cfg.train.seed))  # later runs finish first under Ray
        if cfg.train.seed == 2:
            raise ValueError(f"boom in run {cfg.train.seed}")
        result = {"status": "completed", "eval_loss": 1.0 / (1 + cfg.train.seed), "eval_loss_sem": 0.01}
        hio.write_json(run_dir / "result.json", result)
        return result

    def fake_measure(trained, items):
        for item in items:
            if trained.run.config.train.seed == 3 and item["k"] == 2:
                raise RuntimeError("measure failed")
            yield {**item, "value": trained.result["eval_loss"] * item["k"]}

    measure = Measure(name="m", key=("k",), items=lambda t: [{"k": 1}, {"k": 2}], measure=fake_measure)
    tables = {}
    for name in ("serial", "ray"):
        workdir = tmp_path / name
        executor = executors.make_executor(name, workers=2)
        try:
            results = train_runs(runs, workdir, train_fn=fake_train, progress=False, executor=executor)
            measure_runs(measure, runs, results, workdir, progress=False, executor=executor)
        finally:
            executor.close()
        tables[name] = ((workdir / "results.csv").read_text(), (workdir / "m.csv").read_text())
    assert tables["ray"] == tables["serial"]
    rows = list(csv.DictReader(_io.StringIO(tables["ray"][0])))
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "completed"]
    assert rows[2]["reason"] == "ValueError: boom in run 2"
    measured = list(csv.DictReader(_io.StringIO(tables["ray"][1])))
    assert [(r["run_id"], r["k"], r["status"]) for r in measured] == [
        (rows[i]["run_id"], k, "failed" if (i, k) == (3, "2") else "completed")
        for i in (0, 1, 3) for k in ("1", "2")]
    assert measured[-1]["reason"] == "RuntimeError: measure failed"


def _completed_rows(path) -> int:
    if not path.exists():
        return 0
    return sum(r["status"] == "completed" for r in csv.DictReader(_io.StringIO(path.read_text())))


def test_killed_ray_study_resumes_under_ray_to_the_serial_results_byte_for_byte(smoke_grid, tmp_path):
    """The README's smoke study under Ray (a local 2-worker cluster), W&B offline: SIGKILLed
    (driver and its cluster) once a run has finished, then rerun under Ray to the end: the
    results, the fitted laws and the last line are the serial runner's; finished runs are skipped;
    each run is one W&B run of the study's group."""
    serial_workdir, serial, cache = smoke_grid
    command = f"{README_MAIN} {RAY} --set log.wandb=scaling-ci --set log.wandb_mode=offline"
    env = {**user_env(cache), "WANDB_SILENT": "true"}
    workdir = tmp_path / "runs" / "ci"
    results = workdir / "results.csv"
    with open(tmp_path / "first.err", "w") as err:
        first = subprocess.Popen(_argv(command), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                 stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while _completed_rows(results) < 1 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert first.poll() is None, "the study ended before it could be killed"
        assert _completed_rows(results) >= 1
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    killed_with = _completed_rows(results)
    finished_before = {p.parent.name: p.stat().st_mtime_ns
                       for p in (workdir / "runs").glob("*/result.json")}
    started_before = {p.name for p in (workdir / "runs").glob("*") if p.is_dir()}

    second = subprocess.run(_argv(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-4000:]
    rows = list(csv.DictReader(_io.StringIO(results.read_text())))
    assert len(rows) == 9 and all(r["status"] == "completed" for r in rows), rows
    assert killed_with < 9 and started_before < {r["run_id"] for r in rows}  # some trained afresh
    assert json.loads((workdir / "study.json").read_text())["run_ids"] == \
        json.loads((serial_workdir / "study.json").read_text())["run_ids"]
    assert results.read_bytes() == (serial_workdir / "results.csv").read_bytes()
    last = lambda text: text.strip().splitlines()[-1].split("; report")[0]  # noqa: E731
    assert last(second.stdout) == last(serial.stdout)  # "9 of 9 runs completed; N laws fitted"
    assert sorted(p.name for p in (workdir / "fits").iterdir()) == \
        sorted(p.name for p in (serial_workdir / "fits").iterdir())
    # what had finished was skipped, not retrained
    run_dirs = workdir / "runs"
    for name, mtime in finished_before.items():
        assert (run_dirs / name / "result.json").stat().st_mtime_ns == mtime
    # one W&B group (the study) with one run per run id, named by it; a run the second invocation
    # trained from scratch has its whole curve in its W&B history (a run that was in progress at
    # the SIGKILL has two sessions, the first cut off wherever the kill found W&B's writer)
    from test_metrics_log import wandb_history, wandb_records
    for row in rows:
        run_dir = run_dirs / row["run_id"]
        fresh = row["run_id"] not in started_before
        for _ in range(60 if fresh else 0):  # W&B's service process may still be writing the file
            if any(r.WhichOneof("record_type") == "exit" for r in wandb_records(run_dir)):
                break  # (at most 30 s): its exit record comes last
            time.sleep(0.5)
        run, history = wandb_history(run_dir)
        assert (run.get("name"), run.get("group")) == (row["run_id"], "isoflop_chinchilla_smoke"), run
        if fresh:
            by_step: dict[int, dict] = {}  # W&B merges what is logged at one step into one row
            for record in io.read_jsonl(run_dir / "metrics.jsonl"):
                by_step.setdefault(record["step"], {}).update(metrics_log.MetricsLog.scalars(record))
            assert [h["_step"] for h in history] == sorted(by_step)
            for h in history:
                assert {k: v for k, v in h.items() if not k.startswith("_")} == pytest.approx(by_step[h["_step"]])


def test_branches_wait_for_their_parents_under_a_concurrent_executor():
    """A branch starts from its parent's checkpoint: under Ray (which runs units concurrently and
    in any order) the train stage trains in waves, parents first; serial keeps the runs' order."""
    from types import SimpleNamespace

    from experiments.runner.runs import waves

    def run(parent=""):  # waves() reads only a run's train.parent
        return SimpleNamespace(config=SimpleNamespace(train=SimpleNamespace(parent=parent)))

    # r1 branches from r0, r3 from r1 (a branch of a branch), r2 from a parent already trained
    todo = [(run(), "r0"), (run("r0"), "r1"), (run("done"), "r2"), (run("r1"), "r3")]
    assert waves(todo) == [[0, 2], [1], [3]]
    assert waves([(run(), "r0"), (run(), "r1")]) == [[0, 1]]
    loop = [(run("r1"), "r0"), (run("r0"), "r1")]
    with pytest.raises(ValueError, match="returns to itself"):
        waves(loop)
