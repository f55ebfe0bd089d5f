"""The training harness: sharded == unsharded, golden first step, divergence, honest step times,
one compiled step shared by runs of different lengths and learning rates, exact kill-and-resume,
and a 2-process jax.distributed run equal to a 1-process one.

Tiny models (d_model 32, 2 layers, seq 64) on the small embedded corpus, a few steps each. The
in-process tests use the 8 simulated CPU devices of tests/conftest.py; subprocesses set their
own device count and share a persistent compilation cache so identical programs compile once.
"""

import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.harness import corpus, io
from experiments.harness import train as train_module
from experiments.harness.config import (Config, TrainConfig, deepseek_batch_tokens, deepseek_lr,
                                        from_dict)
from experiments.harness.data import DataConfig, make_train_iterator
from experiments.harness.optimizer import set_learning_rate
from experiments.harness.train import (DivergenceMonitor, build, global_batch, init_state,
                                       lr_schedule, make_optimizer, make_plan, train)
from models import sharding as msharding
from models.transformer import ModelConfig, count_params, init_abstract
from scaling import flops as sflops

SMALL = "python_stdlib/small"
REPO = Path(__file__).resolve().parents[1]
BATCH, SEQ = 16, 64


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    corpus.prepare(SMALL, path)
    return str(path)


def tiny(data_dir, steps=4, **train_fields) -> Config:
    fields = dict(tokens=steps * BATCH * SEQ, batch_size=BATCH, lr=1e-2, warmup=1, log_every=1,
                  checkpoint_every=0, eval_batch_size=16)
    fields.update(train_fields)
    return Config(
        model=ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, max_seq_len=SEQ),
        data=DataConfig(dataset=SMALL, data_dir=data_dir, seq_len=SEQ, eval_sequences=32,
                        prefetch_batches=0),
        train=TrainConfig(**fields))


def run_steps(setup, state, batches):
    losses, grad_norms = [], []
    for batch in batches:
        state, values = setup.train_step(state, global_batch(batch, setup.batch_sharding, BATCH))
        losses.append(float(values["loss"]))
        grad_norms.append(float(values["grad_norm"]))
    return state, np.array(losses), np.array(grad_norms)


@pytest.fixture(scope="module")
def single_device(data_dir):
    """One-device reference: config, plan, setup, host copy of the initial state, batches."""
    cfg = tiny(data_dir)
    plan = make_plan(cfg)
    setup = build(cfg, plan, msharding.make_mesh(None, jax.devices()[:1]), compile_eval=False)
    state0 = jax.device_get(init_state(cfg, plan, setup))
    iterator = make_train_iterator(cfg.data, global_batch_size=BATCH)
    batches = [next(iterator) for _ in range(plan.steps)]
    iterator.close()
    state = jax.device_put(state0, setup.state_shardings)
    final, losses, grad_norms = run_steps(setup, state, batches)
    return dict(cfg=cfg, plan=plan, setup=setup, state0=state0, batches=batches,
                losses=losses, grad_norms=grad_norms, params=jax.device_get(final["params"]))


@pytest.mark.parametrize("mesh", ["data=8", "fsdp=4,tensor=2", "data=2,fsdp=2,tensor=2"])
def test_sharded_training_matches_single_device(single_device, mesh):
    ref = single_device
    cfg = dataclasses.replace(ref["cfg"], mesh=mesh)
    setup = build(cfg, ref["plan"], msharding.make_mesh(mesh), compile_eval=False)
    if mesh == "data=2,fsdp=2,tensor=2":  # sharded init creates the same parameters
        fresh = jax.device_get(init_state(cfg, ref["plan"], setup)["params"])
        jax.tree.map(np.testing.assert_array_equal, fresh, ref["state0"]["params"])
    state = jax.device_put(ref["state0"], setup.state_shardings)
    embedding = state["params"]["embed"]["embedding"]
    if "tensor=2" in mesh:  # really sharded: vocab rows over tensor, d_model over fsdp
        assert embedding.sharding.spec[0] == "tensor"
        assert embedding.addressable_shards[0].data.shape[0] == 256 // 2
    final, losses, grad_norms = run_steps(setup, state, ref["batches"])
    np.testing.assert_allclose(losses, ref["losses"], rtol=2e-5)
    np.testing.assert_allclose(grad_norms, ref["grad_norms"], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5),
                 jax.device_get(final["params"]), ref["params"])
    assert losses[-1] < losses[0]  # it trains


# Golden first step (nanodo style): fixed config, seed 0 and a fixed batch -> fixed loss and
# gradient norm. A change in initialization, model, loss or optimizer plumbing moves them.
GOLDEN_TEXT = b"def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n"
GOLDEN_LOSS = 5.5494905
GOLDEN_GRAD_NORM = 1.5929511


def golden_batch():
    stream = np.frombuffer(GOLDEN_TEXT * 64, np.uint8).astype(np.int32)[: BATCH * (SEQ + 1)]
    rows = stream.reshape(BATCH, SEQ + 1)
    return {"inputs": rows[:, :-1], "targets": rows[:, 1:],
            "segment_ids": np.ones((BATCH, SEQ), np.int32),
            "positions": np.broadcast_to(np.arange(SEQ, dtype=np.int32), (BATCH, SEQ)).copy(),
            "weights": np.ones((BATCH, SEQ), np.float32)}


def test_golden_first_step(single_device):
    ref = single_device
    state = jax.device_put(ref["state0"], ref["setup"].state_shardings)
    _, losses, grad_norms = run_steps(ref["setup"], state, [golden_batch()])
    assert abs(losses[0] - math.log(256)) < 0.05  # near-uniform predictions at init
    np.testing.assert_allclose(losses[0], GOLDEN_LOSS, rtol=1e-5)
    np.testing.assert_allclose(grad_norms[0], GOLDEN_GRAD_NORM, rtol=1e-4)


def test_absurd_learning_rate_diverges_and_records_the_step(data_dir, tmp_path):
    # lr 1e3: the loss jumps to ~1e7 at step 2 (an isolated spike, which the monitor lets
    # pass), sits at ln 256 (a dead model) and turns NaN a few steps later.
    cfg = tiny(data_dir, steps=12, lr=1e3, warmup=0, grad_clip=0.0, log_every=4)
    result = train(cfg, tmp_path)
    assert result["status"] == "diverged"
    assert 2 < result["step"] < 12 and f"at step {result['step']}" in result["reason"]
    assert result["eval_loss"] is None and result["tokens"] == result["step"] * BATCH * SEQ
    stored = io.read_json(tmp_path / "result.json")
    assert stored["status"] == "diverged" and stored["step"] == result["step"]
    records = io.read_jsonl(tmp_path / "metrics.jsonl")
    assert records[-1]["step"] == result["step"]  # the bad step is recorded, not dropped
    assert records[-1]["train_loss"] is None or records[-1]["train_loss"] > 10
    assert not list((tmp_path / "checkpoints").glob("[0-9]*"))  # nothing saved after it
    assert from_dict(io.read_json(tmp_path / "config.json")) == cfg
    assert train(cfg, tmp_path) == stored  # final: a rerun does nothing


def test_divergence_monitor_ignores_noise_and_catches_blowups():
    rng = np.random.default_rng(0)
    steps = np.arange(300)
    healthy = (1.2 + 4.3 * np.exp(-steps / 30)) * np.exp(rng.normal(0, 0.15, steps.size))
    healthy[[40, 41, 120, 200, 201, 202]] *= 5.0  # bursts of bad batches
    healthy[[60, 150]] *= 0.25  # unusually easy batches
    # The lowest single-step loss is a poor reference: 3x it is crossed all the time.
    assert sum(loss > 3 * healthy[: i + 1].min() for i, loss in enumerate(healthy)) > 100

    def first_alarm(losses, monitor=None):
        monitor = monitor or DivergenceMonitor(3.0, 7)
        for step, loss in enumerate(losses, 1):
            if (why := monitor.update(step, loss)) is not None:
                return step, why
        return None, None

    assert first_alarm(healthy) == (None, None)
    blowup = np.concatenate([healthy[:100], 20 * healthy[100:]])  # stays 20x higher
    step, why = first_alarm(blowup)
    assert 101 < step <= 104 and f"at step {step}" in why and "smoothed" in why
    slow = np.concatenate([healthy[:100], healthy[100:] * np.exp(np.arange(200) / 40)])
    step, _ = first_alarm(slow)
    assert 100 < step < 300 and slow[step - 4 : step].min() > 2 * healthy[:100].min()
    for bad in (math.nan, math.inf):
        losses = healthy.copy()
        losses[57] = bad
        step, why = first_alarm(losses)
        assert step == 58 and "not finite" in why
    # A monitor restored from its (JSON) state decides exactly as an uninterrupted one.
    monitor = DivergenceMonitor(3.0, 7)
    for step, loss in enumerate(blowup[:90], 1):
        assert monitor.update(step, loss) is None
    restored = DivergenceMonitor.from_state(3.0, 7, json.loads(json.dumps(monitor.state())))
    assert restored.state() == monitor.state()
    resumed = first_alarm(blowup[90:], restored)
    assert resumed[0] + 90 == first_alarm(blowup)[0]
    with pytest.raises(ValueError, match="ratio"):
        DivergenceMonitor(1.0, 7)
    with pytest.raises(ValueError, match="window"):
        DivergenceMonitor(3.0, 0)
    with pytest.raises(ValueError, match="divergence_window"):
        TrainConfig(divergence_window=0)


def test_step_time_includes_the_device_work(data_dir, tmp_path, monkeypatch):
    """step_time_s spans the steps' device work, not their (asynchronous) dispatch: each step
    is followed by a known amount of device work, which the recorded times must include."""
    @jax.jit
    def burn(values):  # ~tens of ms of matrix products that the loss depends on
        a = jnp.full((256, 256), 1e-3, jnp.float32) * values["loss"]
        a = jax.lax.fori_loop(0, 300, lambda _, m: jnp.tanh(m @ m + 0.5), a)
        return {**values, "loss": values["loss"] + 1e-30 * a[0, 0]}

    values = {"loss": jnp.float32(1.0)}
    burn(values)["loss"].block_until_ready()

    def burn_seconds():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            burn(values)["loss"].block_until_ready()
            times.append(time.perf_counter() - start)
        return min(times)

    burn_s = burn_seconds()
    start = time.perf_counter()
    burn(values)
    assert time.perf_counter() - start < burn_s / 5  # dispatch alone does not wait for it

    real_build = train_module.build

    def slowed_build(*args, **kwargs):
        setup = real_build(*args, **kwargs)
        step = setup.compiled_train_step

        def slowed(state, batch):
            state, values = step(state, batch)
            return state, burn(values)

        return dataclasses.replace(setup, compiled_train_step=slowed)

    monkeypatch.setattr(train_module, "build", slowed_build)
    cfg = tiny(data_dir, steps=8, log_every=2, warmup=3)
    start = time.perf_counter()
    result = train(cfg, tmp_path, devices=jax.devices()[:1])
    wall = time.perf_counter() - start
    # The suite runs on two workers: the burn's own time changes with what the other one does, so
    # it is the fastest of the calibrations before and after the run, and a step must take at
    # least 0.4 of it (dispatch alone, without waiting, takes under 0.2 of it).
    burn_s = min(burn_s, burn_seconds())
    assert result["status"] == "completed"
    records = [r for r in io.read_jsonl(tmp_path / "metrics.jsonl") if "train_loss" in r]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    for r in records:
        assert r["step_time_s"] > 0.4 * burn_s
        assert r["tokens_per_s"] == pytest.approx(BATCH * SEQ / r["step_time_s"])
    assert 8 * 0.4 * burn_s < sum(2 * r["step_time_s"] for r in records) < wall
    # The logged rate is the one the compiled step used, and it follows the schedule.
    schedule = lr_schedule(cfg, make_plan(cfg), np)
    np.testing.assert_allclose([r["learning_rate"] for r in records],
                               [schedule(r["step"] - 1) for r in records], rtol=1e-6)


def test_runs_of_other_lengths_and_rates_share_the_compiled_step(single_device):
    ref = single_device
    compiles = []

    def on_event(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
        other = tiny(ref["cfg"].data.data_dir, steps=9, lr=3e-3, warmup=2, min_lr_ratio=0.2)
        plan = make_plan(other)
        assert (plan.steps, plan.peak_lr) != (ref["plan"].steps, ref["plan"].peak_lr)
        setup = build(other, plan, ref["setup"].mesh, compile_eval=False)
        assert compiles == [] and setup.compiled_fresh == 0
        assert setup.compiled_train_step is ref["setup"].compiled_train_step
        # The shared executable follows each run's own schedule (carried by the state).
        state = train_module.with_schedule(
            jax.device_put(ref["state0"], setup.state_shardings), other, plan)
        schedule = lr_schedule(other, plan, np)
        for step in range(3):
            state, values = setup.train_step(
                state, global_batch(ref["batches"][step], setup.batch_sharding, BATCH))
            assert float(values["learning_rate"]) == pytest.approx(schedule(step), rel=1e-6)
        assert float(values["loss"]) != pytest.approx(ref["losses"][2], rel=1e-4)
        # A setting compiled into the program (weight decay) is not shared.
        decayed = dataclasses.replace(other, train=dataclasses.replace(other.train,
                                                                     weight_decay=0.3))
        fresh = build(decayed, plan, ref["setup"].mesh, compile_eval=False)
        assert fresh.compiled_fresh == 1 and len(compiles) == 1
        assert fresh.compiled_train_step is not ref["setup"].compiled_train_step
    finally:
        jax.monitoring.unregister_event_duration_listener(on_event)


def test_schedules_warm_up_then_follow_their_shape(data_dir):
    cfg = tiny(data_dir, steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1, decay_fraction=0.2)
    plan = make_plan(cfg)
    assert (plan.steps, plan.warmup_steps, plan.peak_lr) == (100, 10, 1.0)
    steps = np.arange(100)

    def curve(schedule):
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, schedule=schedule))
        return lr_schedule(c, make_plan(c), np)(steps)

    for name in ("cosine", "wsd", "constant"):
        lr = curve(name)
        np.testing.assert_allclose(lr[:10], np.arange(1, 11) / 10, rtol=1e-6)  # linear warmup
    cosine, wsd, constant = curve("cosine"), curve("wsd"), curve("constant")
    assert np.all(np.diff(cosine[10:]) < 0) and cosine[-1] == pytest.approx(0.1)
    assert cosine[54] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    np.testing.assert_allclose(wsd[10:80], 1.0)  # stable, then linear decay over 20 steps
    np.testing.assert_allclose(wsd[80:], 1.0 - 0.9 * np.arange(1, 21) / 20, rtol=1e-6)
    np.testing.assert_allclose(constant[10:], 1.0)


def test_batch_rule_is_rounded_to_the_mesh(data_dir):
    cfg = tiny(data_dir, batch_size="deepseek", lr="deepseek", tokens=10**7)
    plan = make_plan(cfg, batch_multiple=8)
    counts = plan.n_params["nonembedding"]
    expected_rows = deepseek_batch_tokens(counts, 10**7) / SEQ
    assert plan.global_batch_size % 8 == 0 and abs(plan.global_batch_size - expected_rows) <= 4
    assert plan.peak_lr == pytest.approx(deepseek_lr(counts, 10**7))
    with pytest.raises(ValueError, match="multiple of 8"):
        make_plan(tiny(data_dir, batch_size=12), batch_multiple=8)


def test_mup_scales_hidden_matrix_updates_by_the_width_multiplier(data_dir):
    """muP: Adam updates of hidden matrices shrink by m = d_model / base; others do not."""
    def first_update(mup):
        cfg = tiny(data_dir, warmup=0, weight_decay=0.0, grad_clip=0.0)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, mup=mup, mup_base_width=16))  # d_model 32: m = 2
        params = init_abstract(cfg.model)
        params = jax.tree.map(lambda x: np.ones(x.shape, x.dtype), params)
        tx = make_optimizer(cfg, params)
        grads = jax.tree.map(lambda p: np.full(p.shape, 0.5, p.dtype), params)
        return jax.jit(lambda g, p: tx.update(
            g, set_learning_rate(tx.init(p), 1e-2), p)[0])(grads, params)

    standard, mup = first_update(False), first_update(True)
    query = ("layers", "attention", "query", "kernel")
    ratio = lambda path: float(np.abs(_get(mup, path)).mean() / np.abs(_get(standard, path)).mean())
    assert ratio(query) == pytest.approx(0.5, rel=1e-5)
    assert ratio(("layers", "mlp", "down", "kernel")) == pytest.approx(0.5, rel=1e-5)
    assert ratio(("embed", "embedding")) == pytest.approx(1.0, rel=1e-5)
    assert ratio(("final_norm", "scale")) == pytest.approx(1.0, rel=1e-5)


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


# ----------------------------------------------------------------------------- subprocesses


def subprocess_env(compile_cache_dir) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = str(compile_cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


# Row-shuffle windows of 65536 tokens = 1009 rows of 65, ~63 steps: the checkpoints (every 20
# steps) fall inside windows, and the run crosses a window boundary.
RESUME_STEPS, RESUME_CKPT = 120, 20


def resume_argv(data_dir, workdir):
    sets = [f"data.dataset={SMALL}", f"data.data_dir={data_dir}", f"data.seq_len={SEQ}",
            "data.eval_sequences=32", "data.shuffle_tokens=65536", "model.d_model=32",
            f"model.max_seq_len={SEQ}",
            f"train.tokens={RESUME_STEPS * BATCH * SEQ}", f"train.batch_size={BATCH}",
            f"train.checkpoint_every={RESUME_CKPT}", "train.log_every=10",
            "train.eval_batch_size=16", "train.max_checkpoints=3"]
    argv = ["--workdir", str(workdir), "--preset", "smoke", "--mesh", "fsdp=2",
            "--host_devices", "2"]
    for item in sets:
        argv += ["--set", item]
    return argv


def launch(argv, env, cwd=REPO):
    return subprocess.Popen([sys.executable, "-m", "experiments.train_lm", *argv], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def train_losses(workdir):
    return {r["step"]: r["train_loss"] for r in io.read_jsonl(Path(workdir) / "metrics.jsonl")
            if "train_loss" in r}


def test_kill_and_resume_equals_an_uninterrupted_run(data_dir, tmp_path, compile_cache):
    env = subprocess_env(compile_cache)
    straight, killed = tmp_path / "straight", tmp_path / "runs" / "killed"
    finish(launch(resume_argv(data_dir, straight), env))
    reference = io.read_json(straight / "result.json")
    assert reference["status"] == "completed" and reference["step"] == RESUME_STEPS

    # the killed run uses a RELATIVE workdir, as the README's commands do (Orbax needs absolute
    # paths: the command resolves it once, where it enters)
    proc = launch(resume_argv(data_dir, "runs/killed"), env, cwd=tmp_path)
    checkpoints = killed / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists()
    saved = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert saved and saved[0] < RESUME_STEPS

    out, err = finish(launch(resume_argv(data_dir, "runs/killed"), env, cwd=tmp_path))
    assert "resumed from step" in err
    assert out.strip().splitlines()[-1].startswith(f"completed: step {RESUME_STEPS}, eval_loss ")
    assert str(killed / "result.json") in out
    result = io.read_json(killed / "result.json")
    assert result["status"] == "completed" and result["step"] == RESUME_STEPS
    assert result["eval_loss"] == reference["eval_loss"]  # exactly
    assert result["eval_loss_sem"] == reference["eval_loss_sem"]
    assert train_losses(killed) == train_losses(straight)  # every logged loss, exactly

    # result.json contents
    cfg = from_dict(io.read_json(killed / "config.json"))
    n_params = count_params(init_abstract(cfg.model))
    tokens = RESUME_STEPS * BATCH * SEQ
    assert result["n_params"] == n_params and result["tokens"] == tokens
    assert 0 < result["n_params_nonembedding"] < n_params
    assert result["flop_conventions"] == list(sflops.CONVENTIONS)
    assert result["flops"]["6N"] == pytest.approx(6 * n_params * tokens)
    assert result["eval_loss"] < math.log(256) and result["eval_loss_sem"] > 0
    assert result["wall_time_s"] > 0 and result["mesh_shape"]["fsdp"] == 2
    records = io.read_jsonl(killed / "metrics.jsonl")
    assert [r["step"] for r in records if "train_loss" in r] == list(range(10, 121, 10))
    assert {"tokens", "flops", "learning_rate", "grad_norm", "step_time_s", "tokens_per_s",
            "mfu"} <= set(records[0])

    # a completed workdir: rerunning does nothing; a different config is refused
    before = {p: p.stat().st_mtime_ns for p in killed.rglob("*")}
    assert train(cfg, killed) == result
    assert {p: p.stat().st_mtime_ns for p in killed.rglob("*")} == before
    with pytest.raises(ValueError, match="train.lr"):
        train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=0.5)), killed)


class ConcatenatedShards:
    """What P processes read together, served to one process: their local batches stacked."""

    def __init__(self, cfg, *, global_batch_size, processes, **_):
        self.parts = [make_train_iterator(cfg, global_batch_size=global_batch_size,
                                          process_index=i, process_count=processes)
                      for i in range(processes)]

    def __next__(self):
        batches = [next(p) for p in self.parts]
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

    def get_state(self):
        return [p.get_state() for p in self.parts]

    def set_state(self, state):
        for p, s in zip(self.parts, state):
            p.set_state(s)

    def close(self):
        for p in self.parts:
            p.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_process_run_matches_one_process(data_dir, tmp_path, compile_cache, monkeypatch):
    steps = 6
    sets = [f"data.dataset={SMALL}", f"data.data_dir={data_dir}", f"data.seq_len={SEQ}",
            "data.eval_sequences=32", "data.prefetch_batches=0", "data.shuffle_tokens=65536",
            "model.d_model=32",
            f"model.max_seq_len={SEQ}", f"train.tokens={steps * BATCH * SEQ}",
            f"train.batch_size={BATCH}", "train.checkpoint_every=3", "train.log_every=1",
            "train.eval_batch_size=16"]
    workdir = tmp_path / "two"
    port = free_port()
    env = subprocess_env(compile_cache)
    procs = []
    for pid in range(2):
        argv = ["--workdir", str(workdir), "--preset", "smoke", "--host_devices", "2",
                "--coordinator_address", f"localhost:{port}", "--num_processes", "2",
                "--process_id", str(pid)]
        for item in sets:
            argv += ["--set", item]
        procs.append(launch(argv, env))
    for proc in procs:
        finish(proc)
    two = io.read_json(workdir / "result.json")
    assert two["status"] == "completed" and two["process_count"] == 2
    assert two["mesh_shape"]["data"] == 4
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                  if p.name.isdigit()) == [3, 6]

    from experiments import train_lm
    from experiments.harness import cli
    argv = ["--workdir", "unused", "--preset", "smoke"]
    for item in sets:
        argv += ["--set", item]
    cfg = cli.config_from_args(cli.make_parser("", train_lm.PRESETS, "smoke").parse_args(argv),
                               train_lm.PRESETS)
    monkeypatch.setattr(
        train_module, "make_train_iterator",
        lambda data_cfg, **kw: ConcatenatedShards(data_cfg, processes=2, **kw))
    one = train(cfg, tmp_path / "one", devices=jax.devices()[:4])
    losses_two, losses_one = train_losses(workdir), train_losses(tmp_path / "one")
    assert sorted(losses_two) == list(range(1, steps + 1))
    np.testing.assert_allclose([losses_two[s] for s in sorted(losses_two)],
                               [losses_one[s] for s in sorted(losses_one)], rtol=1e-5)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)


TENSOR_ACROSS_PROCESSES = """
import sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
port, pid, workdir, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                           process_id=pid)
sys.path.insert(0, {tests!r})
from test_train import tiny
from experiments.harness.train import train
# [p0 d0, p1 d0, p0 d1, p1 d1] as data=2 x tensor=2: the tensor axis runs across the two
# processes, so both hold every row of the batch (one data group, two replicas)
local = {p: [d for d in jax.devices() if d.process_index == p] for p in (0, 1)}
devices = [local[0][0], local[1][0], local[0][1], local[1][1]]
cfg = tiny(data_dir, steps=4, batch_size=16)
import dataclasses
train(dataclasses.replace(cfg, mesh="data=2,tensor=2"), workdir, devices=devices)
"""


def test_processes_load_the_rows_their_devices_hold(data_dir, tmp_path, compile_cache):
    """A tensor axis that spans two processes replicates the batch across them: both must load
    the same rows (one data stream), and the run equals a 1-process run on the same mesh.
    The former rule (batch / process count disjoint rows each) fed the replicas different rows."""
    from experiments.harness import batches
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    devs = jax.devices()[:4]
    fake_process = {d: i % 2 for i, d in enumerate(devs)}  # devices alternate between processes
    mesh = Mesh(np.array(devs).reshape(2, 1, 2), ("data", "fsdp", "tensor"))
    sharding = NamedSharding(mesh, P(("data", "fsdp"), None))
    layouts = [batches.row_layout(sharding, 8, process=p, process_of=fake_process.get)
               for p in (0, 1)]
    assert [(lay.group, lay.groups, lay.rows) for lay in layouts] == [(0, 1, tuple(range(8)))] * 2
    # data=4 laid out p0, p1, p0, p1: two groups holding interleaved row blocks
    mesh4 = Mesh(np.array(devs).reshape(4, 1, 1), ("data", "fsdp", "tensor"))
    sharding4 = NamedSharding(mesh4, P(("data", "fsdp"), None))
    layouts = [batches.row_layout(sharding4, 8, process=p, process_of=fake_process.get)
               for p in (0, 1)]
    assert [(lay.group, lay.groups, lay.rows) for lay in layouts] == [
        (0, 2, (0, 1, 4, 5)), (1, 2, (2, 3, 6, 7))]

    script = TENSOR_ACROSS_PROCESSES.replace("{tests!r}", repr(str(REPO / "tests")))
    env = subprocess_env(compile_cache)
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", script, str(port), str(pid),
                               str(tmp_path / "two"), data_dir], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for pid in range(2)]
    for proc in procs:
        finish(proc)
    two = io.read_json(tmp_path / "two" / "result.json")
    assert two["process_count"] == 2 and two["mesh_shape"] == {"data": 2, "fsdp": 1, "tensor": 2}
    cfg = dataclasses.replace(tiny(data_dir, steps=4, batch_size=16), mesh="data=2,tensor=2")
    one = train(cfg, tmp_path / "one", devices=jax.devices()[:4])
    losses_two, losses_one = train_losses(tmp_path / "two"), train_losses(tmp_path / "one")
    assert sorted(losses_two) == [1, 2, 3, 4]
    np.testing.assert_allclose([losses_two[s] for s in sorted(losses_two)],
                               [losses_one[s] for s in sorted(losses_one)], rtol=1e-5)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)


def test_sharding_check_fails_the_run_on_resume_too_unless_opted_out(data_dir, tmp_path, caplog):
    """4 heads on tensor=8 cannot be split: each device would hold several times the ideal
    parameter bytes. The check runs before the checkpoint is restored, so a resume onto such a
    mesh fails; sharding_tolerance=None trains anyway, with a warning."""
    cfg = tiny(data_dir, steps=2)
    assert train(cfg, tmp_path, devices=jax.devices()[:1])["status"] == "completed"
    (tmp_path / "result.json").unlink()  # as if killed after its last checkpoint
    bad = dataclasses.replace(cfg, mesh="tensor=8")
    with pytest.raises(ValueError, match=r"x the ideal parameter bytes.*attention"):
        train(bad, tmp_path)
    assert io.read_json(tmp_path / "result.json")["status"] == "failed"
    with caplog.at_level("WARNING", logger="models.sharding"):
        result = train(dataclasses.replace(bad, sharding_tolerance=None), tmp_path)
    assert result["status"] == "completed" and "opted out" in caplog.text
    assert result["step"] == 2
