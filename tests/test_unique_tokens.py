"""The unique-token cap (``data.unique_tokens``): a fixed, nested, train-only subset of exactly U
tokens, repeated and reshuffled each epoch; run ids unchanged while unset; bad caps are one-line
errors (exit 2 from the command); a run killed in its second epoch resumes bit for bit.

On the ``python_stdlib/small`` corpus (~1.6 MB of train text), byte tokens.
"""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import train_lm
from experiments.harness import cli, corpus, data, io, subsets
from experiments.harness.config import Config, TrainConfig, config_hash, to_dict
from models.transformer import ModelConfig

SMALL = "python_stdlib/small"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    corpus.prepare(SMALL, path)
    return str(path)


def capped(data_dir, cap, **overrides):
    fields = dict(dataset=SMALL, data_dir=data_dir, seq_len=64, prefetch_batches=0,
                  unique_tokens=cap)
    fields.update(overrides)
    return data.DataConfig(**fields)


def subset_tokens(cfg) -> np.ndarray:
    """The subset's tokens, documents in selection order, the last one cut."""
    subset = subsets.unique_subset(cfg)
    source = data.load_source(cfg, cfg.train_split)
    docs = [np.frombuffer(source[i]["text"], np.uint8) for i in subset.indices]
    docs[-1] = docs[-1][: subset.last_tokens]
    return np.concatenate(docs)


def test_subset_is_exact_nested_train_only_and_seed_free(data_dir):
    cfg = capped(data_dir, 50_000)
    small, large = subsets.unique_subset(cfg), subsets.unique_subset(capped(data_dir, 200_000))
    assert len(subset_tokens(cfg)) == 50_000 and len(subset_tokens(capped(data_dir, 200_000))) == 200_000
    # nested: a smaller cap is a prefix of a larger one (all but its cut last document)
    assert large.indices[: small.documents] == small.indices
    # the same documents whatever the seed, sequence length or mixture settings
    assert subsets.unique_subset(capped(data_dir, 50_000, seq_len=128, shuffle_seed=7)) == small
    # chosen by a hash of the path, only from train documents (the held-out ones never)
    source = data.load_source(cfg, "train")
    paths = [source[i]["path"].decode() for i in large.indices]
    assert all(corpus.split_of(p) == "train" for p in paths)
    keys = [hashlib.sha256(b"unique_tokens:" + p.encode()).digest() for p in paths]
    assert keys == sorted(keys)


def test_epochs_repeat_the_subset_reshuffled(data_dir):
    # no row shuffle: the packed stream is the documents in read order, so each block of U
    # tokens is one epoch: the same tokens (as a multiset), in a different document order
    cap = 30_000
    cfg = capped(data_dir, cap, shuffle_tokens=0)
    iterator = data.make_train_iterator(cfg, global_batch_size=4, seed=3)
    rows = []
    while len(rows) * 65 < 3 * cap:
        batch = next(iterator)
        rows += [np.concatenate([i[:1], t]) for i, t in zip(batch["inputs"], batch["targets"])]
    iterator.close()
    stream = np.concatenate(rows)
    epochs = [stream[e * cap:(e + 1) * cap] for e in range(3)]
    want = np.bincount(subset_tokens(cfg), minlength=256)
    for epoch in epochs:
        np.testing.assert_array_equal(np.bincount(epoch, minlength=256), want)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert data.shuffle_window_rows(capped(data_dir, cap)) == cap // 65  # at most one epoch


def test_restore_inside_the_second_epoch_is_exact(data_dir):
    cap = 16 * 65 * 6  # 6 batches of 16 rows per epoch; the row-shuffle window is one epoch
    cfg = capped(data_dir, cap)
    iterator = data.make_train_iterator(cfg, global_batch_size=16, seed=1)
    for _ in range(9):  # into the second epoch
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    assert state["pipeline"]["unique_tokens"] == cap
    expected = [next(iterator) for _ in range(8)]  # across the second and third epoch boundary
    restored = data.make_train_iterator(cfg, global_batch_size=16, seed=1)
    restored.set_state(state)
    for want, got in zip(expected, [next(restored) for _ in range(8)]):
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])
    iterator.close()
    restored.close()
    uncapped = data.make_train_iterator(capped(data_dir, None), global_batch_size=16, seed=1)
    with pytest.raises(ValueError, match="unique_tokens"):
        uncapped.set_state(state)
    uncapped.close()


def test_bad_caps_are_one_line_errors_naming_them(data_dir, capsys, tmp_path):
    with pytest.raises(ValueError, match=r"data.unique_tokens=\d+ exceeds the \d+ tokens of split 'train'"):
        data.make_train_iterator(capped(data_dir, 10**9), global_batch_size=4)
    with pytest.raises(ValueError, match="data.unique_tokens=1000 is smaller than one batch"):
        data.make_train_iterator(capped(data_dir, 1000), global_batch_size=16)
    with pytest.raises(ValueError, match="data.unique_tokens=.*mixture entry 'python_stdlib:0.2'"):
        capped(data_dir, 50_000, mixture=("python_stdlib:0.2",))
    with pytest.raises(ValueError, match="data.unique_tokens=.*generated task data set"):
        capped(data_dir, 50_000, dataset="verifiable_tasks/small")
    with pytest.raises(ValueError, match="data.unique_tokens=0"):
        capped(data_dir, 0)
    # the command: exit 2, one line naming the cap, before anything is written
    argv = ["--workdir", str(tmp_path / "unused"), "--preset", "smoke", "--set", f"data.dataset={SMALL}",
            "--set", f"data.data_dir={data_dir}", "--set", "data.unique_tokens=1e9"]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: train_lm.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.unique_tokens=1000000000 exceeds" in err[0]
    assert not (tmp_path / "unused" / "config.json").exists()


def test_run_ids_change_only_when_the_cap_is_set():
    cfg = Config(model=ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4),
                 data=data.DataConfig(), train=TrainConfig())
    stored = to_dict(cfg)
    del stored["data"]["unique_tokens"], stored["data"]["mixture"], stored["quant"]
    del stored["sharding_tolerance"]
    for name in ("decay_steps", "cooldown", "step_milestones", "step_factor", "parent", "keep_every",
                 "keep_steps", "curve_every", "curve_batches"):  # the schedule, branch and curve fields, added later
        del stored["train"][name]
    old = hashlib.sha256(json.dumps(stored, sort_keys=True, separators=(",", ":")).encode())
    assert config_hash(cfg) == old.hexdigest()[:12]  # a run from before the field keeps its id
    capped_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, unique_tokens=10**6))
    other = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, unique_tokens=2 * 10**6))
    assert len({config_hash(cfg), config_hash(capped_cfg), config_hash(other)}) == 3


# ----------------------------------------------------------------------------- kill and resume

KILLER = """
import os, signal, sys
from experiments import train_lm
from experiments.harness import checkpoint
save = checkpoint.save
def save_then_die(manager, step, *args, **kwargs):
    save(manager, step, *args, **kwargs)
    if step == int(os.environ["KILL_AT_STEP"]):
        manager.wait_until_finished()
        os.kill(os.getpid(), signal.SIGKILL)  # as a preempted machine: no result, no cleanup
checkpoint.save = save_then_die
train_lm.main(sys.argv[1:])
"""

BATCH, SEQ, CAP, STEPS = 16, 64, 16 * 65 * 8, 40  # 8 steps per epoch, 5 epochs


def run_argv(data_dir, workdir):
    sets = [f"data.dataset={SMALL}", f"data.data_dir={data_dir}", f"data.seq_len={SEQ}",
            f"data.unique_tokens={CAP}", "data.eval_sequences=16", "model.d_model=32",
            f"model.max_seq_len={SEQ}", f"train.tokens={STEPS * BATCH * SEQ}",
            f"train.batch_size={BATCH}", "train.checkpoint_every=10", "train.log_every=5",
            "train.eval_batch_size=16"]
    return ["--workdir", str(workdir), "--preset", "smoke", "--host_devices", "1",
            *[a for s in sets for a in ("--set", s)]]


def run(argv, env, code=None):
    command = ["-c", code, *argv] if code else ["-m", "experiments.train_lm", *argv]
    return subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_kill_in_the_second_epoch_resumes_bit_for_bit(data_dir, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", KILL_AT_STEP="10",
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = run(run_argv(data_dir, straight), env)
    assert done.returncode == 0, done.stderr[-3000:]
    died = run(run_argv(data_dir, killed), env, code=KILLER)
    assert died.returncode == -9, died.stderr[-3000:]
    assert not (killed / "result.json").exists()
    records = io.read_jsonl(killed / "metrics.jsonl")
    assert 1 < records[-1]["epochs"] < 2  # killed in the second epoch (step 10 of 8 per epoch)
    resumed = run(run_argv(data_dir, killed), env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 10" in resumed.stderr
    want, got = io.read_json(straight / "result.json"), io.read_json(killed / "result.json")
    assert got["eval_loss"] == want["eval_loss"] and got["train_loss"] == want["train_loss"]
    metrics = [io.read_jsonl(w / "metrics.jsonl") for w in (straight, killed)]
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("step_time_s", "tokens_per_s")}
                        for r in rs]  # noqa: E731
    assert strip(metrics[1]) == strip(metrics[0])  # every loss and epoch count, exactly
    assert got["unique_tokens"] == CAP and got["epochs"] == STEPS * BATCH * (SEQ + 1) / CAP == 5.0
    assert got["unique_tokens_seen"] == CAP
    assert [r["epochs"] for r in metrics[1] if "train_loss" in r][:2] == [0.625, 1.25]


def test_the_cap_applies_to_the_base_data_set_of_a_mixture(data_dir):
    cfg = capped(data_dir, 20_000, mixture=("verifiable_tasks/small:0.25",))
    iterator = data.make_train_iterator(cfg, global_batch_size=8, seed=0)
    batches = [next(iterator) for _ in range(10)]
    iterator.close()
    assert all(b["inputs"].shape == (8, 64) for b in batches)
    # the base data set's share of the rows reads the capped subset
    assert subsets.epochs_read(cfg, steps=10, global_batch_size=8) == pytest.approx(10 * 8 * 65 * 0.75 / 20_000)
