"""Schedules and branches (issue 21): the schedules' shapes, run ids kept while the new fields are
unset, a cooldown branch of a constant run equal bit for bit to the same WSD run trained
straight through, a killed branch resumed, dense curves, and bad branches as one-line errors.

Tiny models (d_model 32, 2 layers, seq 64, batch 16) on the small embedded corpus, 8 steps, on
one CPU device.
"""

import dataclasses
import math
import time

import jax
import numpy as np
import pytest

from experiments.harness import corpus, io
from experiments.harness import train as train_module
from experiments.harness.config import Config, TrainConfig, apply_overrides, config_hash
from experiments.harness.data import DataConfig
from experiments.harness.train import check_branch, lr_schedule, make_plan, train
from models.transformer import ModelConfig
from test_train import tiny as train_tiny

SMALL = "python_stdlib/small"
BATCH, SEQ, STEPS, LEAVE = 16, 64, 8, 4  # the branch leaves the parent at step 4 of 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    corpus.prepare(SMALL, path)
    return str(path)


def tiny(data_dir, steps=STEPS, **train_fields) -> Config:
    """`test_train.tiny` (the same model and data) with checkpoints every 2 steps and dense curves."""
    fields = dict(warmup=2, checkpoint_every=2, curve_every=2 * BATCH * SEQ, curve_batches=1)
    fields.update(train_fields)
    return train_tiny(data_dir, steps, **fields)


def rates(cfg, n=None):
    plan = make_plan(cfg)
    return lr_schedule(cfg, plan, np)(np.arange(n or plan.steps))


def test_schedule_shapes():
    base = Config(model=ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4),
                  data=DataConfig(seq_len=64),
                  train=TrainConfig(tokens=100 * 32 * 64, lr=1.0, warmup=10, min_lr_ratio=0.1))
    sqrt = rates(apply_overrides(base, ["train.schedule=wsd", "train.decay_steps=20",
                                        "train.cooldown=1-sqrt"]))
    np.testing.assert_array_equal(sqrt[10:80], 1.0)
    np.testing.assert_allclose(sqrt[80:], 1.0 - 0.9 * np.sqrt(np.arange(1, 21) / 20), rtol=1e-6)
    linear = rates(apply_overrides(base, ["train.schedule=wsd", "train.decay_steps=20"]))
    assert np.all(sqrt[80:-1] < linear[80:-1]) and sqrt[-1] == pytest.approx(0.1, rel=1e-6)
    step = rates(apply_overrides(base, ["train.schedule=step", "train.step_milestones=0.5,0.8",
                                        "train.step_factor=0.3"]))
    np.testing.assert_allclose(step[10:50], 1.0)
    np.testing.assert_allclose(step[50:80], 0.3, rtol=1e-6)
    np.testing.assert_allclose(step[80:], 0.09, rtol=1e-6)
    # before its cooldown a wsd rate is the constant schedule's number, bit for bit
    constant = rates(apply_overrides(base, ["train.schedule=constant"]))
    np.testing.assert_array_equal(linear[:80], constant[:80])
    np.testing.assert_array_equal(sqrt[:80], constant[:80])


def test_unset_fields_keep_run_ids_and_set_ones_change_them():
    cfg = Config(model=ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4,
                                   max_seq_len=64), data=DataConfig(seq_len=64))
    assert config_hash(cfg) == "432214c0619c"  # the id before the schedule fields existed
    ids = {config_hash(apply_overrides(cfg, [o])) for o in (
        "train.decay_steps=5", "train.cooldown=1-sqrt", "train.step_milestones=0.5",
        "train.step_factor=0.5", "train.keep_every=4", "train.curve_every=1000",
        "train.curve_batches=1", "train.schedule=wsd", "train.keep_steps=3,5")}
    assert len(ids) == 9 and config_hash(cfg) not in ids
    branch = apply_overrides(cfg, ["train.schedule=wsd", "train.parent=abc"])
    assert config_hash(branch) != config_hash(apply_overrides(cfg, ["train.schedule=wsd"]))


def test_bad_schedules_are_one_line_errors():
    with pytest.raises(ValueError, match="train.step_milestones"):
        make_plan(Config(model=ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4),
                         data=DataConfig(seq_len=64), train=TrainConfig(schedule="step")))
    with pytest.raises(ValueError, match="train.step_milestones"):
        TrainConfig(schedule="step", step_milestones=(0.8, 0.5))
    with pytest.raises(ValueError, match="train.cooldown"):
        TrainConfig(cooldown="cubic")
    with pytest.raises(ValueError, match="train.parent"):
        TrainConfig(schedule="cosine", parent="abc")
    with pytest.raises(ValueError, match="train.keep_steps"):
        TrainConfig(keep_steps=(5, 3))


@pytest.fixture(scope="module")
def family(data_dir, tmp_path_factory):
    """A constant parent, the WSD run trained straight through, and its branch from the parent."""
    root = tmp_path_factory.mktemp("branches")
    one = jax.devices()[:1]
    parent = tiny(data_dir, schedule="constant", keep_steps=(LEAVE,))  # kept: 4, and the latest 6, 8
    straight = tiny(data_dir, schedule="wsd", decay_steps=STEPS - LEAVE, cooldown="1-sqrt")
    branch = dataclasses.replace(straight, train=dataclasses.replace(straight.train,
                                                                     parent="parent"))
    results = {"parent": train(parent, root / "parent", devices=one),
               "straight": train(straight, root / "straight", devices=one),
               "branch": train(branch, root / "branch", devices=one)}
    return dict(root=root, cfgs={"parent": parent, "straight": straight, "branch": branch},
                results=results, devices=one)


def records(run_dir, key):
    return [(r["step"], r[key]) for r in io.read_jsonl(run_dir / "metrics.jsonl") if key in r]


def test_a_branch_equals_the_wsd_run_trained_straight_through(family):
    root, res = family["root"], family["results"]
    assert res["branch"]["status"] == "completed" and res["branch"]["step"] == STEPS
    assert res["branch"]["eval_loss"] == res["straight"]["eval_loss"]  # bit for bit
    assert res["branch"]["eval_loss_sem"] == res["straight"]["eval_loss_sem"]
    assert res["branch"]["eval_loss"] != res["parent"]["eval_loss"]  # the cooldown did something
    for key in ("train_loss", "learning_rate", "curve_loss"):
        assert records(root / "branch", key) == records(root / "straight", key)
    assert res["branch"]["parent"] == "parent" and res["branch"]["branch_step"] == LEAVE
    own = res["branch"]["flops_own"]["6N"] / res["branch"]["flops"]["6N"]
    assert own == pytest.approx((STEPS - LEAVE) / STEPS)


def test_dense_curves_every_two_steps(family):
    root, res = family["root"], family["results"]
    curve = records(root / "straight", "curve_loss")
    assert [s for s, _ in curve] == [2, 4, 6, 8]
    assert all(math.isfinite(v) for _, v in curve) and curve[-1][1] < curve[0][1]
    assert [s for s, _ in records(root / "straight", "curve_loss_sem")] == [2, 4, 6, 8]
    assert 0 <= res["straight"]["curve_eval_s"] < res["straight"]["wall_time_s"]


class Dies:
    """A training iterator that raises after ``n`` batches (a killed process, in-process)."""

    def __init__(self, inner, n):
        self.inner, self.n = inner, n

    def __next__(self):
        if self.n == 0:
            raise KeyboardInterrupt("killed")
        self.n -= 1
        return next(self.inner)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_killed_branch_resumes_exactly(family, monkeypatch):
    root, cfg = family["root"], family["cfgs"]["branch"]
    real = train_module.make_train_iterator
    monkeypatch.setattr(train_module, "make_train_iterator",
                        lambda *a, **k: Dies(real(*a, **k), 3))  # dies after step 7
    with pytest.raises(KeyboardInterrupt):
        train(cfg, root / "killed", devices=family["devices"], parent_dir=root / "parent")
    for _ in range(100):  # the save of step 6 finishes in the background
        if train_module.checkpoint_steps(root / "killed") == [6]:
            break
        time.sleep(0.1)
    assert train_module.checkpoint_steps(root / "killed") == [6]
    monkeypatch.setattr(train_module, "make_train_iterator", real)
    result = train(cfg, root / "killed", devices=family["devices"], parent_dir=root / "parent")
    assert result["eval_loss"] == family["results"]["straight"]["eval_loss"]
    assert records(root / "killed", "train_loss") == records(root / "straight", "train_loss")


def test_bad_branches_are_one_line_errors(family, data_dir):
    root, parent = family["root"], family["root"] / "parent"
    straight = family["cfgs"]["straight"]

    def branch(**fields):
        cfg = dataclasses.replace(straight, train=dataclasses.replace(
            straight.train, parent="parent", **fields))
        check_branch(cfg, make_plan(cfg), parent)

    with pytest.raises(ValueError, match=r"no checkpoint at step 5 \(it has \[4, 6, 8\]"):
        branch(decay_steps=3)
    with pytest.raises(ValueError, match="cooldown of 7 steps is longer than the stable phase"):
        branch(decay_steps=7)
    with pytest.raises(ValueError, match="learning rates differ before the branch step: step 0"):
        branch(lr=2e-2)
    with pytest.raises(ValueError, match=r"parent is another run.*train.seed"):
        branch(seed=1)
    with pytest.raises(ValueError, match="stable phase ends at step 4"):
        cfg = dataclasses.replace(straight, train=dataclasses.replace(
            straight.train, parent="straight", decay_steps=2))
        check_branch(cfg, make_plan(cfg), root / "straight")
    with pytest.raises(ValueError, match="no run at"):
        cfg = dataclasses.replace(straight, train=dataclasses.replace(straight.train, parent="x"))
        check_branch(cfg, make_plan(cfg), root / "nowhere")
