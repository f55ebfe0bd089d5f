"""The compiled train step: ``build(cfg, plan, mesh) -> Setup`` (model, optimizer, shardings,
ahead-of-time compiled train and eval steps) and ``init_state`` (a fresh sharded train state).

The train state is {step, params, opt_state, schedule} on a ``data x fsdp x tensor`` mesh
(``models.sharding``); the train step is a ``jax.jit`` with explicit in/out shardings and the
state donated; AdamW (``experiments.harness.optimizer``) with a cosine / warmup-stable-decay /
constant / step schedule (``optimizer.schedule_kind``), global-norm clipping, optional z-loss and
muP per-parameter learning rates.

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
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from experiments.harness import batches
from experiments.harness.config import Config, TrainConfig
from experiments.harness.optimizer import (SCHEDULE_KEYS, learning_rate, make_optimizer, schedule_args,
                                          schedule_kind, set_learning_rate)
from experiments.harness.plan import Plan
from models import sharding as msharding
from models.quantization import QuantConfig, qat_model
from models.transformer import ModelConfig, Transformer, resolve_attention

BATCH_KEYS = ("inputs", "targets", "segment_ids", "positions", "weights")


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
    schedule: str  # optimizer.schedule_kind: "cosine", "wsd", "wsd:1-sqrt", "step:0.5,0.8:0.1", ...
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
                   z_loss=tc.z_loss, schedule=schedule_kind(tc), mesh=mesh,
                   rules=tuple((k, v) for k, v in rules), batch=plan.global_batch_size,
                   seq_len=plan.seq_len, quant=cfg.quant if cfg.quant.enabled else None)

    def train_config(self) -> Config:
        """A Config carrying exactly the fields of this key (for ``make_optimizer``)."""
        b1, b2, eps, weight_decay, grad_clip = self.optimizer
        return Config(model=self.model, data=None, train=TrainConfig(
            b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, grad_clip=grad_clip,
            z_loss=self.z_loss))  # the schedule's formula is the key's, not the optimizer's


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
    schedule numbers (float32). The jit is cached by :class:`StepKey` with the seed and the
    schedule numbers as its arguments, so runs that share a train step share its init too."""
    numbers = schedule_args(cfg, plan)
    key = StepKey.of(cfg, plan, setup.mesh, rules)
    with msharding.sharding_context(setup.mesh, rules):
        return _init_fn(key)(jax.random.key(cfg.train.seed),
                             {k: np.float32(numbers[k]) for k in SCHEDULE_KEYS})


@functools.lru_cache(maxsize=32)
def _init_fn(key: StepKey):
    """The jitted init of ``key``'s train state: ``f(rng key, schedule numbers) -> state``."""
    lay = layout(key)
    batch, length = key.batch, key.seq_len

    def init(rng, numbers):
        tokens = jnp.zeros((batch, length), jnp.int32)
        segment_ids = jnp.ones((batch, length), jnp.int32)
        positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        params = nn.unbox(lay.model.init(rng, tokens, segment_ids, positions)["params"])
        return {"step": jnp.zeros((), jnp.int32), "params": params,
                "opt_state": lay.tx.init(params),
                "schedule": {k: jnp.asarray(numbers[k], jnp.float32) for k in SCHEDULE_KEYS}}

    return jax.jit(init, out_shardings=lay.state_shardings)


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
