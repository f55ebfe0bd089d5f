"""experiments.harness.metrics_log: TensorBoard event files beside metrics.jsonl (read back with
TensorBoard's own reader), W&B in offline mode, and the ``--set log.*`` settings."""

import glob
import json
import os
import struct
import time

import pytest

from experiments.harness import io, metrics_log
from experiments.harness.config import Config
from experiments.harness.data import DataConfig
from models.transformer import ModelConfig

CFG = Config(model=ModelConfig(vocab_size=256, max_seq_len=64), data=DataConfig(seq_len=64))


def event_scalars(run_dir, tag="train/loss") -> list[tuple[int, float]]:
    """(step, value) of one tag, as TensorBoard shows it (its own reader, purges applied)."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(os.fspath(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def record(step, loss):
    return {"step": step, "tokens": 64 * step, "flops": {"6N": 1e6 * step, "exact": None},
            "train_loss": loss, "learning_rate": 1e-3, "grad_norm": 0.5, "step_time_s": 0.01,
            "tokens_per_s": 6400.0, "mfu": None}


def test_event_files_beside_metrics_jsonl_hold_the_loss_curve_and_a_resume_purges(tmp_path):
    run_dir = tmp_path / "runs" / "C1e9_N1e3_D1e5_s0_abcd1234"
    log = metrics_log.MetricsLog(run_dir, CFG, settings=metrics_log.LogSettings())
    for step in (10, 20, 30):
        log.append(record(step, 3.0 / step))
    log.append({"step": 30, "tokens": 1920, "flops": {"6N": 3e7}, "eval_loss": 0.2, "eval_loss_sem": 0.01})
    log.close("completed")
    assert glob.glob(os.fspath(run_dir / "events.out.tfevents.*"))
    assert [r["step"] for r in io.read_jsonl(run_dir / "metrics.jsonl")] == [10, 20, 30, 30]
    assert event_scalars(run_dir) == [(10, 0.30000001192092896), (20, 0.15000000596046448),
                                      (30, 0.10000000149011612)]
    assert event_scalars(run_dir, "eval/loss") == [(30, pytest.approx(0.2))]
    assert event_scalars(run_dir, "progress/flops_6N")[-1] == (30, 3e7)

    # resumed from a checkpoint at step 20 (train rewrites metrics.jsonl up to 20 first): the
    # curve continues from there, the old step 30 is purged, nothing is doubled
    io.write_jsonl(run_dir / "metrics.jsonl", [r for r in io.read_jsonl(run_dir / "metrics.jsonl")
                                               if r["step"] <= 20])
    log = metrics_log.MetricsLog(run_dir, CFG, start_step=20, settings=metrics_log.LogSettings())
    log.append(record(30, 0.5))
    log.close()
    assert [s for s, _ in event_scalars(run_dir)] == [10, 20, 30]
    assert event_scalars(run_dir)[-1] == (30, 0.5)
    assert event_scalars(run_dir, "eval/loss") == []

    # restarted from scratch (killed before its first checkpoint; train drops metrics.jsonl): the
    # earlier sessions' curves go, the new one starts alone
    time.sleep(1.1)  # event files are named by the second they start in (and the process)
    log = metrics_log.MetricsLog(run_dir, CFG, start_step=0, settings=metrics_log.LogSettings())
    log.append(record(10, 0.7))
    log.close()
    assert event_scalars(run_dir) == [(10, pytest.approx(0.7))]


def test_tensorboard_off_and_other_processes_write_nothing(tmp_path):
    off = metrics_log.MetricsLog(tmp_path / "a", CFG, settings=metrics_log.LogSettings(tensorboard=False))
    off.append(record(1, 1.0))
    off.close()
    assert os.listdir(tmp_path / "a") == ["metrics.jsonl"]
    other = metrics_log.MetricsLog(tmp_path / "b", CFG, writer=False)
    other.append(record(1, 1.0))
    other.close()
    assert not (tmp_path / "b").exists()


def test_log_settings_come_from_set_and_leave_the_config_alone():
    rest, settings = metrics_log.split_overrides(
        ["train.tokens=2e7", "log.wandb=scaling-ladder", "log.tensorboard=false", "log.wandb_mode=offline"])
    assert rest == ["train.tokens=2e7"]
    assert settings == metrics_log.LogSettings(tensorboard=False, wandb="scaling-ladder", wandb_mode="offline")
    with pytest.raises(ValueError, match="log.wandb"):
        metrics_log.split_overrides(["log.project=x"])
    with pytest.raises(ValueError, match="wandb_mode"):
        metrics_log.split_overrides(["log.wandb_mode=sometimes"])


def wandb_records(run_dir) -> list:
    """The protobuf records of an offline W&B run (its .wandb file: a LevelDB-style log of
    32 KiB blocks after a 7-byte ':W&B' header), as `wandb sync` would upload them."""
    from wandb.proto import wandb_internal_pb2

    # the latest session's file (a run killed and resumed has one per session)
    path = sorted(glob.glob(os.fspath(run_dir / "wandb" / "offline-run-*" / "run-*.wandb")))[-1]
    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    chunks, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding to the block's end
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
    records = []
    for raw in chunks:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        records.append(rec)
    return records


def wandb_history(run_dir) -> tuple[dict, list[dict]]:
    run, history = {}, []
    for rec in wandb_records(run_dir):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = {"id": rec.run.run_id, "name": rec.run.display_name, "group": rec.run.run_group,
                   "project": rec.run.project}
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in rec.history.item})
    return run, history


def test_wandb_offline_run_is_named_by_run_id_and_grouped_by_study(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "runs" / "C1.0e9_N1.0e3_D1.0e5_s0_abcd1234"
    settings = metrics_log.LogSettings(wandb="scaling-test", wandb_mode="offline", group="isoflop_smoke")
    log = metrics_log.MetricsLog(run_dir, CFG, settings=settings)
    for step in (10, 20):
        log.append(record(step, 3.0 / step))
    log.close("completed")
    for _ in range(60):  # W&B's service process may still be writing the file: at most 30 s
        run, history = wandb_history(run_dir)
        if run and len(history) == 2:
            break
        time.sleep(0.5)
    assert run["name"] == run_dir.name and run["group"] == "isoflop_smoke"
    assert run["project"] == "scaling-test" and run["id"] == metrics_log.wandb_id(run_dir)
    assert [(h["_step"], h["train/loss"]) for h in history] == [(10, 0.3), (20, 0.15)]


def test_every_smoke_run_writes_its_loss_curve_to_tensorboard(smoke_grid):
    """The README's smoke study (serial runner): each run's event files give the same train_loss
    curve as its metrics.jsonl, tagged train/loss, in one logdir per study (workdir/runs)."""
    workdir, _, _ = smoke_grid
    run_dirs = sorted((workdir / "runs").iterdir())
    assert len(run_dirs) == 9
    for run_dir in run_dirs:
        expected = [(r["step"], r["train_loss"]) for r in io.read_jsonl(run_dir / "metrics.jsonl")
                    if "train_loss" in r]
        got = event_scalars(run_dir)
        assert [s for s, _ in got] == [s for s, _ in expected], run_dir.name
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)
        assert event_scalars(run_dir, "eval/loss")
