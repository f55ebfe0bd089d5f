"""Compute-optimal numerics of a fitted loss law under ``C = k N D`` (`FittedLaw.compute_optimal`).

- `optimum(law, k, params, C, fixed)`: minimize ``L(N, C / (k N))`` over N. For Chinchilla's
  form the optimum is closed-form (`scaling.laws.loss.chinchilla_frontier`, Hoffmann et al. 2022,
  Eq. 4); any other law is minimized numerically: a `GRID`-point grid in log N over
  ``1 <= N, D``, then golden-section search in the best grid cell, vectorized over budgets and
  parameter draws.
- `budget_for_loss(law, k, params, target, fixed)`: the budget whose optimum reaches a loss
  (closed-form for Chinchilla, else bisection in log C up to `C_MAX`).

Both are jit-compiled with the law (and the covariate names) as static arguments, so jax caches
one executable per law and shape.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from scaling.laws import law as law_lib
from scaling.laws.loss import chinchilla_frontier

GRID = 129
GOLDEN_ITERS = 64
BISECTION_ITERS = 100
C_MAX = 1e60   # the numeric search for a budget stops here (FLOPs)


def closed_form(law: law_lib.Law) -> bool:
    """Whether ``law`` is Chinchilla's L(N, D), whose frontier is closed-form."""
    return (law.name == "chinchilla" and set(law.param_names) == {"E", "A", "B", "alpha", "beta"}
            and tuple(law.covariates) == ("N", "D") and law.allocation == ("N", "D"))


def _loss_along(law, n_name, d_name, p, log_c, fixed):
    def loss(log_n):
        x = {n_name: jnp.exp(log_n), d_name: jnp.exp(log_c - log_n)}
        x.update({c: jnp.full(log_n.shape, v) for c, v in fixed.items()})
        out = law.fn(p, x)
        return jnp.where(jnp.isfinite(out), out, jnp.inf)
    return loss


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _numeric_optimum(law, n_name, d_name, p, log_c, fixed):
    """Minimize L(N, c/N) over log N in [0, log c] (N >= 1, D >= 1) for every element.

    ``p`` maps names to arrays broadcastable with ``log_c`` (c = C/k): a `GRID`-point grid in
    log N, then golden-section search in the best cell. Returns (log N_opt, L_opt).
    """
    shape = jnp.broadcast_shapes(log_c.shape, *[v.shape for v in p.values()])
    log_c = jnp.broadcast_to(log_c, shape)
    loss = _loss_along(law, n_name, d_name, p, log_c, fixed)
    grid = log_c[..., None] * jnp.linspace(0.0, 1.0, GRID)
    vals = jax.vmap(loss, in_axes=-1, out_axes=-1)(grid)
    i = jnp.clip(jnp.argmin(vals, axis=-1), 1, GRID - 2)
    lo = jnp.take_along_axis(grid, (i - 1)[..., None], -1)[..., 0]
    hi = jnp.take_along_axis(grid, (i + 1)[..., None], -1)[..., 0]
    ratio = (math.sqrt(5) - 1) / 2

    def golden(_, bracket):
        lo, hi = bracket
        x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        left = loss(x1) < loss(x2)
        return jnp.where(left, lo, x1), jnp.where(left, x2, hi)

    lo, hi = jax.lax.fori_loop(0, GOLDEN_ITERS, golden, (lo, hi))
    log_n = 0.5 * (lo + hi)
    return log_n, loss(log_n)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _numeric_budget(law, n_name, d_name, p, target, log_c_lo, log_c_hi, fixed):
    """Bisection in log c for L_opt(c) = target (L_opt decreases with c)."""
    def step(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        above = _numeric_optimum(law, n_name, d_name, p, mid, fixed)[1] > target
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    shape = jnp.broadcast_shapes(target.shape, *[v.shape for v in p.values()])
    lo, hi = jax.lax.fori_loop(0, BISECTION_ITERS, step, (jnp.full(shape, log_c_lo), jnp.full(shape, log_c_hi)))
    return 0.5 * (lo + hi)


def optimum(law: law_lib.Law, k: float, params: Mapping[str, np.ndarray], C: np.ndarray,
            fixed: Mapping[str, float]):
    """(N, D, loss) at the compute optimum; params arrays [S], C [M] -> arrays [S, M]."""
    n_name, d_name = law.allocation
    with jax.enable_x64(True):
        p = {n: jnp.asarray(v, jnp.float64)[:, None] for n, v in params.items()}
        c = jnp.asarray(C, jnp.float64)[None, :] / k
        if closed_form(law):
            front = chinchilla_frontier(p, c, 1.0)
            return np.asarray(front["N"]), np.asarray(front["D"]), np.asarray(front["loss"])
        logn, loss = _numeric_optimum(law, n_name, d_name, p, jnp.log(c),
                                      {k_: jnp.asarray(v, jnp.float64) for k_, v in sorted(fixed.items())})
        n = jnp.exp(logn)
        return np.asarray(n), np.asarray(c / n), np.asarray(loss)


def budget_for_loss(law: law_lib.Law, k: float, params, target: np.ndarray, fixed) -> np.ndarray:
    """Compute C [S, M] at which the optimal loss equals target [M]; inf where unreachable."""
    if closed_form(law):
        p = {n: np.asarray(v, np.float64)[:, None] for n, v in params.items()}
        front = chinchilla_frontier(p)
        excess = target[None, :] - p["E"]
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(excess > 0, (excess / front["loss_coefficient"]) ** (-1.0 / front["gamma"]), np.inf)
        return k * c
    n_name, d_name = law.allocation
    _, _, l_hi = optimum(law, k, params, np.array([C_MAX]), fixed)
    reachable = target[None, :] > l_hi
    with jax.enable_x64(True):
        p = {n: jnp.asarray(v, jnp.float64)[:, None] for n, v in params.items()}
        log_c = _numeric_budget(law, n_name, d_name, p, jnp.asarray(target, jnp.float64)[None, :], 0.0,
                                np.log(C_MAX / k), {k_: jnp.asarray(v, jnp.float64) for k_, v in sorted(fixed.items())})
        c = k * np.exp(np.asarray(log_c))
    return np.where(reachable, c, np.inf)
