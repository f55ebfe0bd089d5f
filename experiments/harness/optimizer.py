"""The optimizer of a training run: AdamW (optax) with a schedule whose numbers are data.

    tx = make_optimizer(cfg, abstract_params)
    opt_state = tx.init(params)
    lr = learning_rate(step, schedule, "cosine")            # a traced scalar inside the step
    updates, opt_state = tx.update(grads, set_learning_rate(opt_state, lr), params)

The chain: ``optax.clip_by_global_norm`` -> ``optax.inject_hyperparams(optax.adamw)`` (AdamW:
scale_by_adam, decoupled weight decay on kernels and embeddings, scale by -lr; the decay is
multiplied by the rate, as in optax.adamw) -> muP per-parameter multipliers
(:func:`scale_by_tree`, an ``optax.partition`` of ``optax.scale``).

The learning rate is an *injected hyperparameter* (optax's own mechanism): it lives in the
optimizer state, and the train step writes this step's rate there (:func:`set_learning_rate`)
from the schedule's numbers, which are arguments of the step (the train state carries them),
not constants compiled into it. So runs that differ only in length, rate or schedule numbers
share one compiled step. Adam's b1, b2, eps and the weight decay stay static (compiled in):
as traced float32 values, ``1 - b1`` would round differently from the constant-folded Python
value and change the training numbers in their last bits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from models.transformer import mup_lr_scales

SCHEDULE_KEYS = ("peak", "floor", "warmup", "total", "decay")


def schedule_args(cfg, plan) -> dict[str, float]:
    """The run's schedule numbers, fed to the compiled step as float32 scalars:
    peak = lr, floor = min_lr_ratio x lr, warmup = W, total = T (steps), decay = D (wsd)."""
    return {"peak": float(plan.peak_lr), "floor": float(plan.peak_lr * cfg.train.min_lr_ratio),
            "warmup": float(plan.warmup_steps), "total": float(plan.steps),
            "decay": float(plan.decay_steps)}


def schedule_kind(tc) -> str:
    """The schedule's formula as one string, compiled into the step (its numbers are data):
    "cosine", "constant", "wsd" (linear cooldown), "wsd:1-sqrt", or "step:M1,M2,...:F" (the
    milestones as fractions of the steps, the factor). ``tc``: a ``TrainConfig``."""
    if tc.schedule == "wsd" and tc.cooldown != "linear":
        return f"wsd:{tc.cooldown}"
    if tc.schedule == "step":
        return f"step:{','.join(repr(float(m)) for m in tc.step_milestones)}:{float(tc.step_factor)!r}"
    return tc.schedule


def _parse_kind(kind: str) -> tuple[str, str, tuple[float, ...], float]:
    name, _, rest = kind.partition(":")
    if name == "wsd":
        shape = rest or "linear"
        if shape not in ("linear", "1-sqrt"):
            raise ValueError(f"unknown wsd cooldown {shape!r}; expected linear or 1-sqrt")
        return name, shape, (), 1.0
    if name == "step":
        marks, _, factor = rest.partition(":")
        return name, "", tuple(float(m) for m in marks.split(",") if m), float(factor or 0.1)
    if name in ("cosine", "constant") and not rest:
        return name, "", (), 1.0
    raise ValueError(f"unknown schedule {kind!r}; expected cosine, wsd, wsd:1-sqrt, constant or "
                     "step:M1,M2:F")


def learning_rate(step, args: Mapping[str, Any], kind: str, xp=jnp):
    """Learning rate of the update at 0-based step s (the (s+1)-th update), in float32.

    Warmup: lr (s+1)/W for s < W (the first update is not wasted at 0). Then
      cosine:     lr_min + (lr - lr_min) (1 + cos(pi p)) / 2,  p = (s + 1 - W) / (T - W)
      wsd:        lr until the last D steps, then linearly to lr_min:  lr + (lr_min - lr) p,
                  p = (s + 1 - (T - D)) / D
      wsd:1-sqrt: the same cooldown with sqrt(p) for p: lr + (lr_min - lr) sqrt(p)
                  (Hägele et al. 2024, arXiv:2405.18392, Sec. 3, "1-sqrt")
      constant:   lr
      step:M:F    lr F^k, k = the number of milestones m in M with s + 1 > m T
    with lr_min = floor, T = total, and p clipped to [0, 1], so the last update uses exactly
    lr_min. Before its cooldown a wsd rate is lr + (lr_min - lr) 0 = lr exactly, the constant
    schedule's number, so a branch of a constant run repeats its parent's steps bit for bit.
    ``args`` holds :data:`SCHEDULE_KEYS` (numbers, or traced scalars in the step); ``kind``
    (:func:`schedule_kind`) picks the formula. ``xp``: jnp or np.
    """
    def f32(v):
        return xp.asarray(v, xp.float32)

    name, shape, milestones, factor = _parse_kind(kind)
    s = f32(step)
    peak, floor, warmup, total, decay = (f32(args[k]) for k in SCHEDULE_KEYS)
    one = f32(1.0)
    warm = peak * xp.minimum(one, (s + one) / xp.maximum(warmup, one))
    if name == "constant":
        after = peak + xp.zeros_like(s)
    elif name == "cosine":
        p = xp.clip((s + one - warmup) / xp.maximum(total - warmup, one), 0.0, 1.0)
        after = floor + (peak - floor) * 0.5 * (1.0 + xp.cos(xp.pi * p))
    elif name == "wsd":
        p = xp.clip((s + one - (total - decay)) / xp.maximum(decay, one), 0.0, 1.0)
        after = peak + (floor - peak) * (xp.sqrt(p) if shape == "1-sqrt" else p)
    else:  # step
        after = peak + xp.zeros_like(s)
        for m in milestones:
            after = xp.where(s + one > f32(m) * total, after * f32(factor), after)
    return xp.where(s < warmup, warm, after).astype(xp.float32)


def lr_schedule(cfg, plan, xp=jnp) -> Callable:
    """step -> learning rate of ``cfg``'s schedule (:func:`learning_rate` with its numbers).
    ``xp``: jnp, or np for logging without dispatching to a device."""
    args, kind = schedule_args(cfg, plan), schedule_kind(cfg.train)
    return lambda step: learning_rate(step, args, kind, xp)


def scale_by_tree(scales) -> optax.GradientTransformation:
    """Multiply each update by the matching leaf of ``scales`` (numbers, a tree shaped like the
    params): ``optax.partition`` of one ``optax.scale(s)`` per distinct multiplier s."""
    values = sorted({float(s) for s in jax.tree.leaves(scales)})
    labels = jax.tree.map(lambda s: f"x{float(s)!r}", scales)
    return optax.partition({f"x{s!r}": optax.scale(s) for s in values}, labels)


def _decays(path, _) -> bool:
    name = str(getattr(path[-1], "key", path[-1]))
    return name in ("kernel", "embedding")


def make_optimizer(cfg, params) -> optax.GradientTransformationExtraArgs:
    """clip_by_global_norm -> injected-rate AdamW (decay on kernels and embeddings) -> muP.

    ``cfg``: a run ``Config`` (train.b1, b2, eps, weight_decay, grad_clip; model.mup);
    ``params``: the (abstract) params, for the decay mask and the muP multipliers
    (``models.transformer.mup_lr_scales``). The rate is 0 until the step sets it
    (:func:`set_learning_rate`).
    """
    tc = cfg.train
    mask = jax.tree_util.tree_map_with_path(_decays, params)
    parts = []
    if tc.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(tc.grad_clip))
    adamw = optax.inject_hyperparams(
        optax.adamw, static_args=("b1", "b2", "eps", "eps_root", "weight_decay"),
        hyperparam_dtype=jnp.float32)
    parts.append(adamw(learning_rate=0.0, b1=tc.b1, b2=tc.b2, eps=tc.eps,
                       weight_decay=tc.weight_decay, mask=mask))
    if cfg.model.mup:
        parts.append(scale_by_tree(mup_lr_scales(cfg.model, params)))
    return optax.chain(*parts)


def set_learning_rate(opt_state, lr):
    """``opt_state`` with the injected AdamW rate set to ``lr`` (``optax.tree_utils.tree_set``)."""
    return optax.tree_utils.tree_set(opt_state, learning_rate=jnp.asarray(lr, jnp.float32))
