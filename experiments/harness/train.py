"""Train a language model: ``train(cfg, workdir) -> result dict``.

    from experiments.harness.train import train
    result = train(cfg, "/tmp/lm")      # rerun: resumes, or returns the stored result

The loop: a sharded train state {step, params, opt_state, schedule} on a ``data x fsdp x
tensor`` mesh (``models.sharding``); an ahead-of-time compiled ``jax.jit`` train step with
explicit in/out shardings and the state donated; AdamW (``experiments.harness.optimizer``) with a
cosine / warmup-stable-decay / constant schedule, global-norm clipping, optional z-loss and muP
per-parameter learning rates; batches from ``experiments.harness.data``, each process loading
exactly the rows its devices hold (``experiments.harness.batches``, derived from the batch
sharding). Before anything is allocated, fresh start or resume, ``models.sharding.check_sharding``
refuses a mesh on which a device would hold more than (1 + ``cfg.sharding_tolerance``) x the
ideal parameter bytes.

The schedule's numbers (peak and final rate, warmup, decay and total steps) are data in the
train state, not constants in the step: the step computes the rate from ``state["step"]`` and
writes it into AdamW's injected hyperparameter. The compiled steps are cached by what they
depend on (:class:`StepKey`: model, optimizer settings, mesh, rules, batch shape), so the runs
of a grid that share shapes (the seeds of one grid point, or budgets that give one model the
same batch) compile once whatever their length or learning rate. The attention implementation
is resolved per platform (``models.transformer.attention_impl_name``), logged, and stored in
result.json as ``attention_impl``.

Loss (per step): the weighted mean token cross-entropy
    L = sum_t w_t CE_t / sum_t w_t,   CE_t = logsumexp(z_t) - z_t[y_t]
plus, when ``train.z_loss > 0``, z_loss * sum_t w_t logsumexp(z_t)^2 / sum_t w_t (PaLM,
Chowdhery et al. 2022, arXiv:2204.02311, Sec. 5). Logged ``train_loss`` is L without the z-term.

Evaluation on the fixed held-out batches: the token-weighted mean loss R = sum_i s_i / sum_i n_i
over sequences i (s_i = summed token loss, n_i = weighted tokens, sequences with n_i > 0), and its
standard error with sequences as clusters (the variance of a ratio estimator, Cochran 1977,
"Sampling Techniques", Ch. 6; tokens of one sequence are not independent):
    SEM = sqrt( sum_i (s_i - R n_i)^2 / (k (k - 1)) ) / mean_i(n_i),   k sequences.

Files in ``workdir`` (process 0 writes; each atomically): ``config.json``; ``metrics.jsonl``, one
object per logged step {step, tokens, flops{convention: FLOPs}, train_loss (mean over the steps
since the previous record), learning_rate (the rate the step of the record used, as computed by
the compiled step), grad_norm (mean, before clipping), step_time_s, tokens_per_s, mfu (from the
"exact" FLOP count; null when the device's peak is unknown)} and per evaluation {step, tokens,
flops, eval_loss, eval_loss_sem}; ``result.json`` at the end; ``checkpoints/`` (orbax: the train
state and, as JSON, every process's data-iterator state, the divergence monitor's state and the
wall time, so a resumed run continues exactly).

Timing: the steps run asynchronously; at every host sync point (log, eval and checkpoint steps)
the loop blocks until the last step's outputs are ready, so the time between consecutive sync
points is real time: data loading, dispatch and the device work of those steps. step_time_s is
that time over the steps in between (evaluation and checkpoint saving excluded), and
tokens_per_s = global_batch_size x seq_len / step_time_s.

Divergence (:class:`DivergenceMonitor`): a NaN/inf training loss ends the run at once with
status "diverged"; otherwise the run diverges when the smoothed loss, the median of the last
``train.divergence_window`` step losses (the lower median for an even count), exceeds
``train.divergence_ratio`` x the lowest smoothed loss so far. The median ignores spikes that
are a minority of the window, so a noisy but healthy run goes on, while a loss that stays high
is caught after floor(window / 2) + 1 steps (4 of the default 7). The record of the step where it fired is written.
Losses are fetched at log, eval and checkpoint steps (one host sync per ``log_every`` steps), so
the run may go on for up to ``log_every - 1`` steps past that step; nothing after it is saved.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from experiments.harness import batches, checkpoint, io, metrics_log
from experiments.harness.config import (BATCH_RULES, LR_RULES, Config, TrainConfig, config_hash,
                                        from_dict, to_dict)
from experiments.harness.data import make_eval_batches, make_tokenizer, make_train_iterator
from experiments.harness.optimizer import (SCHEDULE_KEYS, learning_rate, lr_schedule,  # noqa: F401
                                          make_optimizer, schedule_args, set_learning_rate)
from models.quantization import QuantConfig, qat_model
from models import sharding as msharding
from models.transformer import (ModelConfig, Transformer, param_counts, resolve_attention,
                                shape_dict)
from scaling import flops as sflops

log = logging.getLogger(__name__)

MFU_CONVENTION = "exact"
FINAL_STATUSES = ("completed", "diverged")
BATCH_KEYS = ("inputs", "targets", "segment_ids", "positions", "weights")


# ----------------------------------------------------------------------------- the plan


@dataclasses.dataclass(frozen=True)
class Plan:
    """The numbers a config resolves to: steps, batch, learning rate, sizes and FLOPs."""

    steps: int
    global_batch_size: int
    seq_len: int
    peak_lr: float
    warmup_steps: int
    decay_steps: int
    n_params: dict
    flops_per_token: dict

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len

    def tokens_at(self, step: int) -> int:
        return step * self.tokens_per_step

    def flops_at(self, step: int) -> dict:
        tokens = self.tokens_at(step)
        return {c: f * tokens for c, f in self.flops_per_token.items()}


def make_plan(cfg: Config, batch_multiple: int = 1) -> Plan:
    """Resolve rules into numbers. ``batch_multiple``: the global batch must be a multiple of it
    (data x fsdp mesh axes, and the process count); a rule's batch is rounded to it."""
    tc, seq_len = cfg.train, cfg.data.seq_len
    counts = param_counts(cfg.model)
    if isinstance(tc.batch_size, str):
        batch_tokens = BATCH_RULES[tc.batch_size](counts["nonembedding"], tc.tokens)
        rows = max(1, round(batch_tokens / seq_len / batch_multiple)) * batch_multiple
    else:
        rows = tc.batch_size
        if rows % batch_multiple:
            raise ValueError(f"train.batch_size={rows} must be a multiple of {batch_multiple} "
                             "(the data x fsdp mesh axes and the process count)")
    if isinstance(tc.lr, str):
        peak_lr = float(LR_RULES[tc.lr](counts["nonembedding"], tc.tokens))
    else:
        peak_lr = float(tc.lr)
    steps = max(1, tc.tokens // (rows * seq_len))
    warmup = round(tc.warmup * steps) if tc.warmup < 1 else int(tc.warmup)
    warmup = min(warmup, steps)
    decay = round(tc.decay_fraction * steps) if tc.schedule == "wsd" else 0
    shape = shape_dict(cfg.model)
    per_token = {c: sflops.flops_per_token(shape, seq_len, c) for c in sflops.CONVENTIONS}
    return Plan(steps=steps, global_batch_size=rows, seq_len=seq_len, peak_lr=peak_lr,
                warmup_steps=warmup, decay_steps=decay, n_params=counts,
                flops_per_token=per_token)


# ----------------------------------------------------------------------------- steps


def token_losses(model: nn.Module, params, batch):
    """Per-token cross-entropy and logsumexp, [B, L] float32 each."""
    logits = model.apply({"params": params}, batch["inputs"], batch["segment_ids"],
                         batch["positions"])
    log_z = jax.nn.logsumexp(logits, axis=-1)
    # one-hot contraction rather than a gather: stays sharded when the vocab axis is split
    target_logit = jnp.sum(logits * jax.nn.one_hot(batch["targets"], logits.shape[-1],
                                                   dtype=logits.dtype), axis=-1)
    return log_z - target_logit, log_z


def loss_fn(model, params, batch, z_loss: float):
    ce, log_z = token_losses(model, params, batch)
    w = batch["weights"]
    denom = jnp.maximum(jnp.sum(w), 1.0)
    loss = jnp.sum(ce * w) / denom
    total = loss
    if z_loss > 0:
        total = total + z_loss * jnp.sum(jnp.square(log_z) * w) / denom
    return total, loss


@dataclasses.dataclass(frozen=True)
class StepKey:
    """What a compiled train step depends on, and nothing else: the model, the optimizer's
    compiled-in settings, the loss, the schedule's formula, the mesh, the rules and the batch
    shape. The schedule's numbers (rate, warmup, length) are not in it: they are data."""

    model: ModelConfig
    optimizer: tuple  # (b1, b2, eps, weight_decay, grad_clip)
    z_loss: float
    schedule: str
    mesh: Mesh
    rules: tuple
    batch: int
    seq_len: int
    quant: QuantConfig | None = None  # quantization-aware training (None: the float model)

    @classmethod
    def of(cls, cfg: Config, plan: Plan, mesh: Mesh, rules=msharding.DEFAULT_RULES) -> "StepKey":
        tc = cfg.train
        platform = mesh.devices.flat[0].platform
        return cls(model=resolve_attention(cfg.model, platform, plan.seq_len), optimizer=(tc.b1, tc.b2, tc.eps, tc.weight_decay, tc.grad_clip),
                   z_loss=tc.z_loss, schedule=tc.schedule, mesh=mesh,
                   rules=tuple((k, v) for k, v in rules), batch=plan.global_batch_size,
                   seq_len=plan.seq_len, quant=cfg.quant if cfg.quant.enabled else None)

    def train_config(self) -> Config:
        """A Config carrying exactly the fields of this key (for ``make_optimizer``)."""
        b1, b2, eps, weight_decay, grad_clip = self.optimizer
        return Config(model=self.model, data=None, train=TrainConfig(
            b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, grad_clip=grad_clip,
            z_loss=self.z_loss, schedule=self.schedule))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Model, optimizer, shardings and abstract train state of a :class:`StepKey`.

    The train state is {"step": int32, "params", "opt_state", "schedule": {SCHEDULE_KEYS:
    float32}}: the schedule's numbers travel with the state (and its checkpoints)."""

    model: nn.Module
    tx: optax.GradientTransformationExtraArgs
    state_shardings: Any
    batch_sharding: NamedSharding
    abstract_state: Any


@functools.lru_cache(maxsize=64)
def layout(key: StepKey) -> Layout:
    """The :class:`Layout` of ``key`` (shapes only: nothing is allocated or placed)."""
    model = Transformer(key.model) if key.quant is None else qat_model(key.model, key.quant)
    mesh, rules = key.mesh, key.rules
    with msharding.sharding_context(mesh, rules):
        abstract_boxed = jax.eval_shape(lambda: model.init(  # traced key: no device array
            jax.random.key(0), jnp.zeros((key.batch, key.seq_len), jnp.int32))["params"])
    param_shardings = msharding.logical_shardings(abstract_boxed, mesh, rules)
    abstract_params = msharding.strip_boxes(abstract_boxed)  # no constraint, any context
    tx = make_optimizer(key.train_config(), abstract_params)
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    opt_shardings = optax.tree_map_params(
        tx, lambda _, s: s, abstract_opt, param_shardings,
        transform_non_params=lambda _: replicated)
    state_shardings = {"step": replicated, "params": param_shardings, "opt_state": opt_shardings,
                       "schedule": {k: replicated for k in SCHEDULE_KEYS}}
    abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": abstract_params,
         "opt_state": abstract_opt,
         "schedule": {k: jax.ShapeDtypeStruct((), jnp.float32) for k in SCHEDULE_KEYS}},
        state_shardings)
    return Layout(model=model, tx=tx, state_shardings=state_shardings,
                  batch_sharding=msharding.batch_sharding(mesh, rules),
                  abstract_state=abstract_state)


def _abstract_batch(rows: int, seq_len: int, sharding) -> dict:
    return {k: jax.ShapeDtypeStruct((rows, seq_len), jnp.float32 if k == "weights" else jnp.int32,
                                    sharding=sharding) for k in BATCH_KEYS}


def lower_train_step(key: StepKey):
    """``jax.jit(train_step).lower(...)`` for ``key``, from abstract values only (no device
    buffer is touched, so it works on compile-only devices: ``experiments.harness.aot``).

    train_step(state, batch) -> (state, {loss, grad_norm, learning_rate}); the state is
    donated. The rate of step s is ``learning_rate(s, state["schedule"], key.schedule)``,
    written into the optimizer's injected hyperparameter before the AdamW update.
    """
    lay = layout(key)
    model, tx, z_loss, kind = lay.model, lay.tx, key.z_loss, key.schedule
    replicated = NamedSharding(key.mesh, PartitionSpec())

    def train_step(state, batch):
        (_, loss), grads = jax.value_and_grad(
            lambda p: loss_fn(model, p, batch, z_loss), has_aux=True)(state["params"])
        grad_norm = optax.tree.norm(grads)
        lr = learning_rate(state["step"], state["schedule"], kind)
        updates, opt_state = tx.update(grads, set_learning_rate(state["opt_state"], lr),
                                       state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}
        return new_state, {"loss": loss, "grad_norm": grad_norm, "learning_rate": lr}

    with msharding.sharding_context(key.mesh, key.rules):
        return jax.jit(
            train_step, in_shardings=(lay.state_shardings, lay.batch_sharding),
            out_shardings=(lay.state_shardings, replicated), donate_argnums=0,
        ).lower(lay.abstract_state, _abstract_batch(key.batch, key.seq_len, lay.batch_sharding))


@functools.lru_cache(maxsize=32)
def compiled_train_step(key: StepKey):
    """The compiled train step of ``key``, compiled once per process (least recently used out)."""
    return lower_train_step(key).compile()


@functools.lru_cache(maxsize=32)
def compiled_eval_step(model_cfg: ModelConfig, mesh: Mesh, rules: tuple, rows: int, seq_len: int,
                       quant: QuantConfig | None = None):
    """Compiled eval_step(params, batch) -> (loss_sum [B], weight_sum [B]) for that shape (the
    fake-quantized model of a quantization-aware run)."""
    key = StepKey(model=model_cfg, optimizer=(0.9, 0.95, 1e-8, 0.0, 0.0), z_loss=0.0,
                  schedule="constant", mesh=mesh, rules=rules, batch=rows, seq_len=seq_len, quant=quant)
    lay = layout(key)
    model = lay.model
    replicated = NamedSharding(mesh, PartitionSpec())

    def eval_step(params, batch):
        ce, _ = token_losses(model, params, batch)
        w = batch["weights"]
        return jnp.sum(ce * w, axis=-1), jnp.sum(w, axis=-1)

    with msharding.sharding_context(mesh, rules):
        return jax.jit(
            eval_step, in_shardings=(lay.state_shardings["params"], lay.batch_sharding),
            out_shardings=(replicated, replicated),
        ).lower(lay.abstract_state["params"], _abstract_batch(rows, seq_len, lay.batch_sharding)
                ).compile()


@dataclasses.dataclass
class Setup:
    """Everything the loop needs besides the data: mesh, model, optimizer, compiled steps.

    ``train_step(state, batch)`` is ``compiled_train_step``, shared by every run with the same
    :class:`StepKey` (the run's schedule numbers are in its state).
    """

    mesh: Any
    model: nn.Module
    tx: optax.GradientTransformationExtraArgs
    state_shardings: Any
    batch_sharding: NamedSharding
    abstract_state: Any
    schedule: dict  # SCHEDULE_KEYS -> this run's numbers (Python floats)
    compiled_train_step: Any  # (state, batch) -> (state, {loss, grad_norm, learning_rate})
    eval_step: Any  # compiled: (params, batch) -> (loss_sum [B], weight_sum [B]), or None
    compile_s: float
    compiled_fresh: int  # how many of the steps were compiled here, not found in the cache

    def train_step(self, state, batch):
        return self.compiled_train_step(state, batch)


def _misses() -> int:
    return compiled_train_step.cache_info().misses + compiled_eval_step.cache_info().misses


def build(cfg: Config, plan: Plan, mesh, rules=msharding.DEFAULT_RULES, *,
          compile_eval: bool = True) -> Setup:
    """Model, optimizer, shardings and the AOT-compiled train (and eval) steps for ``mesh``.

    Compiled steps are cached by their :class:`StepKey`, so configs that differ only in their
    length, learning rate or schedule numbers share one executable. Touches no device buffer.
    """
    key = StepKey.of(cfg, plan, mesh, rules)
    lay = layout(key)
    start, misses = time.perf_counter(), _misses()
    compiled_train = compiled_train_step(key)
    compiled_eval = (compiled_eval_step(cfg.model, mesh, key.rules, cfg.train.eval_batch_size,
                                        plan.seq_len, key.quant) if compile_eval else None)
    return Setup(mesh=mesh, model=lay.model, tx=lay.tx, state_shardings=lay.state_shardings,
                 batch_sharding=lay.batch_sharding, abstract_state=lay.abstract_state,
                 schedule=schedule_args(cfg, plan), compiled_train_step=compiled_train,
                 eval_step=compiled_eval, compile_s=time.perf_counter() - start,
                 compiled_fresh=_misses() - misses)


def init_state(cfg: Config, plan: Plan, setup: Setup, rules=msharding.DEFAULT_RULES):
    """A fresh state, created sharded in one jit: params from ``cfg.train.seed`` (the same
    values as ``models.sharding.init_params``), zero optimizer moments, step 0, and this run's
    schedule numbers (float32)."""
    batch, length = plan.global_batch_size, plan.seq_len
    numbers = schedule_args(cfg, plan)

    def init(key):
        tokens = jnp.zeros((batch, length), jnp.int32)
        segment_ids = jnp.ones((batch, length), jnp.int32)
        positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        params = nn.unbox(setup.model.init(key, tokens, segment_ids, positions)["params"])
        return {"step": jnp.zeros((), jnp.int32), "params": params,
                "opt_state": setup.tx.init(params),
                "schedule": {k: jnp.asarray(numbers[k], jnp.float32) for k in SCHEDULE_KEYS}}

    with msharding.sharding_context(setup.mesh, rules):
        return jax.jit(init, out_shardings=setup.state_shardings)(jax.random.key(cfg.train.seed))


def with_schedule(state, cfg: Config, plan: Plan):
    """``state`` with its schedule numbers replaced by ``cfg``'s (same shardings)."""
    numbers = schedule_args(cfg, plan)
    schedule = {k: jax.device_put(np.float32(numbers[k]), v.sharding)
                for k, v in state["schedule"].items()}
    return {**state, "schedule": schedule}


def global_batch(batch: dict, sharding: NamedSharding, global_rows: int, layout=None) -> dict:
    """This process's rows -> global arrays laid out by ``sharding``
    (``experiments.harness.batches.global_batch``; the rows a process loads come from
    ``batches.row_layout``)."""
    return batches.global_batch(batch, sharding, global_rows, layout, keys=BATCH_KEYS)


def host_value(x) -> np.ndarray:
    """A replicated (possibly multi-process) array as numpy, from this process's copy."""
    return np.asarray(x.addressable_data(0))


def evaluate(setup: Setup, params, eval_batches: Sequence[dict]) -> tuple[float, float]:
    """(token-weighted mean loss, its cluster SEM over sequences); formulas in the docstring."""
    sums, counts = [], []
    for batch in eval_batches:
        s, n = setup.eval_step(params, batch)
        sums.append(host_value(s))
        counts.append(host_value(n))
    s = np.concatenate(sums).astype(np.float64)
    n = np.concatenate(counts).astype(np.float64)
    keep = n > 0
    s, n = s[keep], n[keep]
    if n.size == 0:
        raise ValueError("the held-out batches hold no weighted tokens")
    ratio = s.sum() / n.sum()
    k = n.size
    sem = (math.sqrt(np.sum((s - ratio * n) ** 2) / (k * (k - 1))) / n.mean()) if k > 1 else math.nan
    return float(ratio), float(sem)


# ----------------------------------------------------------------------------- divergence


class DivergenceMonitor:
    """Decides, step by step, whether the training loss has diverged.

    ``update(step, loss)`` returns None while the run is healthy, else the reason:
      - the loss is NaN or inf, or
      - the smoothed loss m_t, the lower median of the last ``window`` losses (of all losses
        while fewer were seen), exceeds ``ratio`` x min_{s <= t} m_s.
    The lower median of n values is the ceil(n/2)-th smallest, so it rises above a level only
    when a majority of the window (floor(n/2) + 1 losses) lies above it: isolated spikes, and
    the low outliers that make the lowest single-step loss a poor reference, do not trigger it.
    ``state()`` is JSON (the recent losses and the best smoothed value); ``from_state``
    restores it, so a resumed run decides exactly as an uninterrupted one.
    """

    def __init__(self, ratio: float, window: int, recent: Sequence[float] = (),
                 best: float = math.inf):
        if not ratio > 1:
            raise ValueError(f"divergence ratio must be > 1, got {ratio}")
        if window < 1:
            raise ValueError(f"divergence window must be >= 1, got {window}")
        self.ratio, self.window = float(ratio), int(window)
        self.recent = collections.deque((float(x) for x in recent), maxlen=self.window)
        self.best = float(best)

    @property
    def smoothed(self) -> float:
        """The lower median of the recent losses (inf when none was seen)."""
        if not self.recent:
            return math.inf
        ordered = sorted(self.recent)
        return ordered[(len(ordered) - 1) // 2]

    def update(self, step: int, loss: float) -> str | None:
        loss = float(loss)
        if not math.isfinite(loss):
            return f"train loss {loss} is not finite at step {step}"
        self.recent.append(loss)
        smoothed = self.smoothed
        if smoothed > self.ratio * self.best:
            return (f"smoothed train loss {smoothed:.4g} (median of the last {len(self.recent)} "
                    f"steps) exceeds {self.ratio:g} x the lowest smoothed loss so far "
                    f"({self.best:.4g}) at step {step}")
        self.best = min(self.best, smoothed)
        return None

    def state(self) -> dict:
        return {"recent": list(self.recent),
                "best": self.best if math.isfinite(self.best) else None}

    @classmethod
    def from_state(cls, ratio: float, window: int, state: Mapping[str, Any]) -> DivergenceMonitor:
        if not isinstance(state, Mapping) or "recent" not in state:
            raise ValueError(f"not a divergence-monitor state: {str(state)[:200]}")
        best = state.get("best")
        return cls(ratio, window, state["recent"], math.inf if best is None else best)


# ----------------------------------------------------------------------------- helpers


def _peak_flops(device_kind: str, dtype: str) -> float | None:
    try:
        return sflops.peak_flops(device_kind, dtype)
    except ValueError:
        return None


def _comparable(config_dict: dict) -> dict:
    """What must match for a rerun to resume: everything but the mesh (restores reshard) and
    the sharding check's tolerance (neither changes the numbers)."""
    return {k: v for k, v in config_dict.items() if k not in ("mesh", "sharding_tolerance")}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]


def _check_workdir_config(cfg: Config, workdir: epath.Path) -> None:
    path = workdir / "config.json"
    if not path.exists():
        return
    # through from_dict, so a config.json written before a field existed gets its default
    diffs = _differences(_comparable(to_dict(from_dict(io.read_json(path)))), _comparable(to_dict(cfg)))
    if diffs:
        raise ValueError(f"{workdir} holds a run of a different config; use a new workdir or "
                         f"the same settings. Differences (stored -> now): {diffs[:10]}")


def read_result(workdir) -> dict | None:
    """The result.json of a workdir, or None."""
    path = epath.Path(workdir) / "result.json"
    return io.read_json(path) if path.exists() else None


# ----------------------------------------------------------------------------- the run


def train(cfg: Config, workdir, *, devices: Sequence | None = None) -> dict:
    """Train ``cfg`` in ``workdir`` (resuming from its latest checkpoint); returns result.json.

    ``devices`` defaults to all devices (every process's); ``cfg.mesh`` lays them out. A
    workdir whose result.json says "completed" or "diverged" is left untouched and its result
    returned. Exceptions after set-up write status "failed" (with the reason) and re-raise.
    """
    workdir = io.resolve_workdir(workdir)  # Orbax needs absolute paths; gs:// stays
    writer = jax.process_index() == 0
    _check_workdir_config(cfg, workdir)
    previous = read_result(workdir)
    if previous is not None and previous.get("status") in FINAL_STATUSES:
        log.info("%s: already %s at step %s; nothing to do", workdir, previous["status"],
                 previous.get("step"))
        return previous

    devices = list(jax.devices() if devices is None else devices)
    mesh = msharding.make_mesh(cfg.mesh or None, devices)
    batch_axes = mesh.shape["data"] * mesh.shape["fsdp"]
    multiple = math.lcm(batch_axes, jax.process_count())
    plan = make_plan(cfg, multiple)
    _validate(cfg, plan, multiple)
    if writer:
        io.write_json(workdir / "config.json", to_dict(cfg))

    started = time.perf_counter()
    try:
        return _run(cfg, plan, mesh, workdir, writer, started)
    except Exception as err:
        if writer:
            io.write_json(workdir / "result.json", {
                "status": "failed", "reason": f"{type(err).__name__}: {err}",
                "config_hash": config_hash(cfg), "wall_time_s": time.perf_counter() - started})
        raise


def _validate(cfg: Config, plan: Plan, multiple: int) -> None:
    vocab = make_tokenizer(cfg.data).vocab_size
    if vocab > cfg.model.vocab_size:
        raise ValueError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the "
                         f"{cfg.data.tokenizer} tokenizer's vocabulary ({vocab})")
    if cfg.data.seq_len > cfg.model.max_seq_len:
        raise ValueError(f"data.seq_len={cfg.data.seq_len} exceeds model.max_seq_len="
                         f"{cfg.model.max_seq_len}")
    if cfg.train.eval_batch_size % multiple:
        raise ValueError(f"train.eval_batch_size={cfg.train.eval_batch_size} must be a multiple "
                         f"of {multiple} (data x fsdp mesh axes and process count)")


def _run(cfg: Config, plan: Plan, mesh, workdir: epath.Path, writer: bool, started: float) -> dict:
    tc = cfg.train
    pid, pcount = jax.process_index(), jax.process_count()
    setup = build(cfg, plan, mesh)
    log.info("train and eval steps ready in %.1f s (%d compiled, the rest from the cache); "
             "attention implementation: %s", setup.compile_s, setup.compiled_fresh,
             setup.model.cfg.attention_impl)
    # each process loads exactly the rows its devices hold (derived from the batch sharding)
    layout = batches.row_layout(setup.batch_sharding, plan.global_batch_size)
    data_iter = make_train_iterator(cfg.data, global_batch_size=plan.global_batch_size,
                                    process_index=layout.group, process_count=layout.groups)
    eval_layout = batches.row_layout(setup.batch_sharding, tc.eval_batch_size)
    eval_batches = [global_batch(b if pcount == 1 else batches.select_rows(b, eval_layout),
                                 setup.batch_sharding, tc.eval_batch_size, eval_layout)
                    for b in make_eval_batches(cfg.data, batch_size=tc.eval_batch_size)]
    manager = checkpoint.make_manager(workdir / "checkpoints", tc.max_checkpoints)
    metrics_path = workdir / "metrics.jsonl"
    monitor = DivergenceMonitor(tc.divergence_ratio, tc.divergence_window)
    wall_offset = 0.0

    # before any state exists, on a fresh start and on resume alike (shapes suffice)
    msharding.check_sharding(setup.abstract_state["params"], setup.state_shardings["params"],
                             cfg.sharding_tolerance)
    latest = manager.latest_step()
    if latest is not None:
        state, saved_meta = checkpoint.restore(manager, latest, setup.abstract_state)
        data_states = saved_meta["data"]
        if len(data_states) != pcount:
            raise ValueError(f"checkpoint {latest} was written by {len(data_states)} processes; "
                             f"this run has {pcount}")
        data_iter.set_state(data_states[pid])
        monitor = DivergenceMonitor.from_state(tc.divergence_ratio, tc.divergence_window,
                                               saved_meta.get("divergence"))
        wall_offset = saved_meta["wall_time_s"]
        if writer:
            records = io.read_jsonl(metrics_path)
            if metrics_path.exists():  # drop records past the checkpoint and any torn line
                io.write_jsonl(metrics_path, [r for r in records if r.get("step", 0) <= latest])
        log.info("resumed from step %d", latest)
    else:
        state = init_state(cfg, plan, setup)
        if writer and metrics_path.exists():
            metrics_path.unlink()

    start_step = int(host_value(state["step"]))
    metrics = metrics_log.MetricsLog(workdir, cfg, writer=writer, start_step=start_step)
    n_devices = mesh.devices.size
    peak = _peak_flops(mesh.devices.flat[0].device_kind, cfg.model.dtype)

    def record_base(step):
        return {"step": step, "tokens": plan.tokens_at(step), "flops": plan.flops_at(step)}

    pending: list[tuple[int, Any]] = []  # (step, metrics arrays) not yet checked on the host
    interval = {"losses": [], "grad_norms": [], "lr": None, "time": 0.0, "steps": 0}
    status, reason, bad_step = "completed", "", None
    last_train_loss = None
    progress = tqdm(total=plan.steps, initial=start_step, unit="step", dynamic_ncols=True,
                    disable=not (writer and sys.stderr.isatty()), desc="train")
    mark = time.perf_counter()

    def drain() -> bool:
        """Fetch pending losses, check divergence; False when the run diverged.

        Blocks on the last pending step first, so the interval since ``mark`` (the previous
        sync point) covers the device work of these steps, not only their dispatch.
        """
        nonlocal status, reason, bad_step, mark
        if pending:
            jax.block_until_ready(pending[-1][1])  # the steps run asynchronously: wait for them
            interval["lr"] = float(host_value(pending[-1][1]["learning_rate"]))
        interval["time"] += time.perf_counter() - mark
        for step, values in pending:
            loss = float(host_value(values["loss"]))
            interval["losses"].append(loss)
            interval["grad_norms"].append(float(host_value(values["grad_norm"])))
            interval["steps"] += 1
            why = monitor.update(step, loss)
            if why is not None:
                status, bad_step, reason = "diverged", step, why
                pending.clear()
                return False
        pending.clear()
        return True

    def write_train_record(step: int):
        nonlocal last_train_loss
        if not interval["steps"]:
            return
        step_time = interval["time"] / interval["steps"]
        tokens_per_s = plan.tokens_per_step / step_time if step_time > 0 else None
        mfu = (tokens_per_s * plan.flops_per_token[MFU_CONVENTION] / (n_devices * peak)
               if peak and tokens_per_s else None)
        last_train_loss = float(np.mean(interval["losses"]))
        record = {**record_base(step), "train_loss": last_train_loss,
                  "learning_rate": interval["lr"],
                  "grad_norm": float(np.mean(interval["grad_norms"])),
                  "step_time_s": step_time, "tokens_per_s": tokens_per_s, "mfu": mfu}
        metrics.append(record)
        progress.set_postfix(loss=f"{last_train_loss:.4f}",
                             tok_s=f"{tokens_per_s:.3g}" if tokens_per_s else "-")
        if progress.disable and writer:
            log.info("step %d/%d loss %.4f lr %.3g grad_norm %.3g tokens/s %.4g", step,
                     plan.steps, last_train_loss, record["learning_rate"], record["grad_norm"],
                     tokens_per_s or float("nan"))
        interval.update(losses=[], grad_norms=[], lr=None, time=0.0, steps=0)

    def save(step: int):
        checkpoint.save(manager, step, state, {
            "data": checkpoint.gather_json(data_iter.get_state()),
            "wall_time_s": wall_offset + time.perf_counter() - started,
            "divergence": monitor.state(),
            "step": step, "config_hash": config_hash(cfg)})

    step = start_step
    try:
        while step < plan.steps:
            try:
                local = next(data_iter)
            except StopIteration:
                raise RuntimeError(
                    f"the training data ran out at step {step} of {plan.steps} "
                    f"(data.num_epochs={cfg.data.num_epochs})") from None
            batch = global_batch(local, setup.batch_sharding, plan.global_batch_size, layout)
            state, values = setup.train_step(state, batch)
            step += 1
            pending.append((step, values))
            progress.update(1)
            is_log = step % tc.log_every == 0 or step == plan.steps
            is_eval = tc.eval_every > 0 and step % tc.eval_every == 0 and step != plan.steps
            is_ckpt = (tc.checkpoint_every > 0 and step % tc.checkpoint_every == 0
                       and step != plan.steps)
            if not (is_log or is_eval or is_ckpt):
                continue
            if not drain():
                write_train_record(bad_step)
                break
            if is_log:
                write_train_record(step)
            if is_eval:
                eval_loss, eval_sem = evaluate(setup, state["params"], eval_batches)
                metrics.append({**record_base(step), "eval_loss": eval_loss, "eval_loss_sem": eval_sem})
            if is_ckpt:
                save(step)
            mark = time.perf_counter()
    finally:
        progress.close()
        metrics.flush()

    result = {"status": status, "reason": reason, "config_hash": config_hash(cfg)}
    if status == "diverged":
        end_step = bad_step
        eval_loss = eval_sem = None
    else:
        end_step = plan.steps
        eval_loss, eval_sem = evaluate(setup, state["params"], eval_batches)
        records = io.read_jsonl(metrics_path) if writer else []
        if writer and not any(r.get("step") == end_step and "eval_loss" in r for r in records):
            metrics.append({**record_base(end_step), "eval_loss": eval_loss, "eval_loss_sem": eval_sem})
        if last_train_loss is None:
            last_train_loss = next((r["train_loss"] for r in reversed(records)
                                    if "train_loss" in r), None)
        if manager.latest_step() != end_step:
            save(end_step)
    metrics.close(status)
    manager.wait_until_finished()
    manager.close()
    data_iter.close()
    result.update({
        "step": end_step,
        "steps": plan.steps,
        "eval_loss": eval_loss,
        "eval_loss_sem": eval_sem,
        "train_loss": last_train_loss,
        "n_params": plan.n_params["total"],
        "n_params_nonembedding": plan.n_params["nonembedding"],
        "n_params_embedding": plan.n_params["embedding"],
        "tokens": plan.tokens_at(end_step),
        "flops": plan.flops_at(end_step),
        "flop_conventions": list(sflops.CONVENTIONS),
        "mfu_flop_convention": MFU_CONVENTION,
        "global_batch_size": plan.global_batch_size,
        "seq_len": plan.seq_len,
        "peak_lr": plan.peak_lr,
        "warmup_steps": plan.warmup_steps,
        "mesh_shape": dict(mesh.shape),
        "process_count": jax.process_count(),
        "device_kind": mesh.devices.flat[0].device_kind,
        "attention_impl": setup.model.cfg.attention_impl,
        "wall_time_s": wall_offset + time.perf_counter() - started,
    })
    if writer:
        io.write_json(workdir / "result.json", result)
    log.info("%s at step %d: eval_loss %s", status, end_step, eval_loss)
    return result
