"""`scaling.fit`: fit a `Law` to data with a vectorized multistart second-order solver and bootstrap.

The fitting protocol generalizes Epoch AI's refit of Chinchilla (Besiroglu et al. 2024,
"Chinchilla Scaling: A replication attempt", arXiv:2404.10102, Sec. 2 and their notebook
`data_analysis.ipynb`): minimize a robust objective of the log-residuals from every start of a grid,
keep the best optimum, and refit on bootstrap resamples of the points for intervals.

Objective (a weighted SUM over points, not a mean; weights default to 1, so with unit weights it is
exactly Epoch's ``np.sum(huber(...))``)::

    F(z) = sum_i w_i * l_i(z)

    huber_log  l_i = huber_delta(log f(x_i) - log y_i)     (default; Epoch's protocol, delta = 1e-3)
    huber      l_i = huber_delta(f(x_i) - y_i)
    mse        l_i = (f(x_i) - y_i)^2
    mse_log    l_i = (log f(x_i) - log y_i)^2
    nll        l_i = law.nll(p, x_i, y_i)                  (default when the law has an nll)

    huber_delta(r) = r^2 / 2 if |r| <= delta else delta * (|r| - delta / 2)   (Huber 1964)

``log f`` uses ``law.log_fn`` when the law has one (e.g. Chinchilla's log-sum-exp form).

Solver: trust-region Newton on the exact Hessian (params are few, so the Hessian costs one
forward-over-reverse pass per parameter). Each iteration eigendecomposes H and takes the exact
trust-region step (Moré & Sorensen 1983, "Computing a trust region step"; Nocedal & Wright,
"Numerical Optimization", 2nd ed., Alg. 4.3), which uses negative curvature where H is indefinite,
as it is far from an optimum; a step is accepted when the actual decrease is a positive fraction of
the decrease the quadratic model predicts, and the radius shrinks to a quarter of the step on poor
agreement (rho < 1/4) and doubles on good agreement at the boundary (rho > 3/4) (after Nocedal &
Wright Alg. 4.1).
The solver is one jit-compiled `jax.lax.while_loop`, in float64, that keeps a fixed number of starts
in flight (vmapped "slots") and loads the next start of a queue into a slot as soon as its start
finishes (`_solver`, `run_solver`), so no start waits on slower ones. A start whose
objective is not finite at its initial point is marked failed and never poisons the others; trial
points with non-finite values are rejected like any bad step.

A start converges when the quadratic model predicts less than ``ftol * |F|`` decrease within a
unit step (no relative improvement left), or when an accepted step is below
``xtol * (1 + max|z|)`` (needed for zero-residual data, where F itself goes to 0), or when a
step is rejected although the model promised less than ``16 eps |F|`` (a gain float64 cannot
resolve: at a kink of a Huber objective the model overpromises, and shrinking the radius further
can only show rounding noise). A start that
creeps along a flat valley towards an optimum at infinity (a parameter that the data do not
identify) stops, unconverged, after `SLOW_STEPS` steps in a row that each gain less than
``SLOW_RTOL * |F|``, or when the trust radius collapses. A Huber objective is reached by
continuation (see `minimize`): least squares on a subset of the points, least squares on all
points, then delta down to its target; starts that meet at the same point share the later stages.

Bootstrap: resamples of the points are multinomial count weights (``w_i * c_i``, sum c_i = n),
refitted with the same compiled solver, vmapped over resamples, each from the ``bootstrap_starts``
best distinct optima of the full-data multistart; the best refit of each resample is its draw.
With the bootstrap, ``n`` leave-one-point-out refits (the jackknife, from the best optimum, in one
vectorized solve) give BCa's acceleration per parameter. Deterministic for a seed. Intervals are BCa
by default, or percentiles of the draws (`FittedLaw.interval`, `scaling.intervals`). A
maximum-likelihood fit (``objective="nll"``) also gets profile-likelihood curves, one vectorized
solve with each parameter held on a grid (`scaling.profile`), and their intervals by default.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import functools
import hashlib
import os
import threading
import time
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from scaling import intervals
from scaling import law as law_lib
from scaling import profile as profile_lib
from scaling.fitted import FittedLaw, flop_k

OBJECTIVES = ("huber_log", "huber", "mse", "mse_log", "nll")
LOG_OBJECTIVES = ("huber_log", "mse_log")


# ----------------------------------------------------------------------------- objectives

def huber(r, delta):
    """Huber's loss: r^2/2 inside [-delta, delta], delta (|r| - delta/2) outside (C^1 at the kink)."""
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _log_prediction(law: law_lib.Law, p, x):
    if law.log_fn is not None:
        return law.log_fn(p, x)
    return jnp.log(law.fn(p, x))


def point_losses(law: law_lib.Law, objective: str):
    """``loss(z, x, y, delta) -> [n]``: the per-point objective terms at internal parameters ``z``.

    For the log objectives ``y`` must already be ``log(target)``; ``delta`` is ignored by the
    non-Huber objectives.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if objective == "nll" and law.nll is None:
        raise ValueError(f"objective 'nll' needs a law with an nll; law {law.name!r} has none")

    def loss(z, x, y, delta):
        p = law.natural(z)
        if objective == "huber_log":
            return huber(_log_prediction(law, p, x) - y, delta)
        if objective == "mse_log":
            return (_log_prediction(law, p, x) - y) ** 2
        if objective == "huber":
            return huber(law.fn(p, x) - y, delta)
        if objective == "mse":
            return (law.fn(p, x) - y) ** 2
        return law.nll(p, x, y)

    return loss


_HELPERS: dict = {}


def _helpers(law: law_lib.Law, objective: str):
    """Jit-compiled ``natural(z)`` and ``residual(z, x, y)`` (in the objective's space), cached.

    ``residual`` is ``y - log f`` for the log objectives (``y`` already logged), else ``y - f``.
    """
    key = (id(law), objective in LOG_OBJECTIVES)
    hit = _HELPERS.get(key)
    if hit is not None and hit[0] is law:
        return hit[1]

    def residual(z, x, y):
        p = law.natural(z)
        return y - (_log_prediction(law, p, x) if objective in LOG_OBJECTIVES else law.fn(p, x))

    fns = (jax.jit(law.natural), jax.jit(residual))
    _HELPERS[key] = (law, fns)
    return fns


def natural_values(law, z) -> dict:
    """Natural parameter values (numpy) of internal vectors ``z`` [..., P]."""
    with jax.enable_x64(True):
        return {k: np.asarray(v) for k, v in _helpers(law, "mse")[0](jnp.asarray(z, jnp.float64)).items()}


# ----------------------------------------------------------------------------- the solver

def trust_region_step(eig, gt, radius, iters: int = 10):
    """Exact trust-region step in the eigenbasis of the Hessian (Moré & Sorensen 1983).

    Minimizes ``m(s) = gt.s + 1/2 sum(eig s^2)`` over ``|s| <= radius`` (``eig`` ascending, may be
    negative). Interior Newton step when H is positive definite and the step fits; otherwise
    ``s = -gt / (eig + mu)`` with ``mu > max(0, -eig_min)`` solving ``|s(mu)| = radius`` by Newton's
    method on ``1/|s(mu)| - 1/radius`` (monotone from below; 10 iterations give the predicted
    decrease of 60 to the last bit on 20,000 random models with eigenvalues over 12 decades); in the
    "hard case" the step is completed along the lowest eigenvector. Returns ``(s in eigen
    coordinates, predicted decrease)``.
    """
    e_min = eig[0]
    scale = jnp.max(jnp.abs(eig)) + 1e-300
    mu_low = jnp.maximum(0.0, -e_min) + 1e-12 * scale
    norm = lambda mu: jnp.sqrt(jnp.sum((gt / (eig + mu)) ** 2))  # noqa: E731
    newton_inside = (e_min > 0) & (norm(0.0) <= radius)
    hard = ~newton_inside & (norm(mu_low) <= radius)

    def newton(_, mu):
        q2 = jnp.sum((gt / (eig + mu)) ** 2)
        d = jnp.sum(gt * gt / (eig + mu) ** 3)
        return jnp.maximum(mu + (jnp.sqrt(q2) / radius - 1.0) * q2 / d, mu)

    mu = jax.lax.fori_loop(0, iters, newton, mu_low)
    mu = jnp.where(newton_inside, 0.0, jnp.where(hard, mu_low, mu))
    s = -gt / (eig + mu)
    # hard case: the lowest-eigenvector component goes downhill (against gt[0]) to reach |s| = radius
    s0 = jnp.sqrt(jnp.maximum(radius ** 2 - jnp.sum(s[1:] * s[1:]), 0.0))
    s = s.at[0].set(jnp.where(hard & (e_min <= 0), jnp.where(gt[0] > 0, -s0, s0), s[0]))
    return s, -(gt @ s + 0.5 * jnp.sum(eig * s * s))


_SOLVERS: dict = {}
_STATE_KEYS = ("z", "f", "g", "h", "radius", "it", "slow", "fresh", "done", "converged", "failed")
SLOW_RTOL, SLOW_STEPS = 1e-8, 10   # stop (not converged) after 10 steps in a row gaining < 1e-8 * |F|
_RESOLUTION = 16 * float(np.finfo(np.float64).eps)   # relative gains below this are rounding noise


def _solver(law: law_lib.Law, objective: str):
    """The jit-compiled solver for (law, objective), cached across calls: slots fed from a queue.

    ``run(slots, queue, queue_n, x, y, delta, max_iter, ftol, xtol, drain)`` keeps ``B`` starts in
    flight (the slots, one vmapped row each) inside one `jax.lax.while_loop`. Each pass first loads
    the next starts of the queue (``Q`` rows, the first ``queue_n`` real) into the free slots, then
    takes one trust-region iteration in every slot, then writes the starts that finished (converged,
    stalled, failed or at ``max_iter``) to an output buffer of ``Q + B`` rows and frees their slots.
    The loop ends when the queue is used up (the slots still in flight go back to the caller, to be
    continued with the next queue) or, with ``drain``, when every slot is free. So a slow start
    never holds finished ones back, and no start waits on a regrouping round. A fresh start's first
    pass evaluates the objective at its initial point (a zero step accepted when finite). Each
    start's path depends on that start alone, whichever slot and call it runs in. jax.jit caches one
    executable per shape, and `run_solver` pads points, slots and queues to a few shapes, so
    repeated fits and the bootstrap reuse it.
    """
    key = (id(law), objective)
    hit = _SOLVERS.get(key)
    if hit is not None and hit[0] is law:
        return hit[1]
    loss = point_losses(law, objective)
    eye = np.eye(len(law.params))

    def fgh(z, w, x, y, delta):
        """Objective, gradient and exact Hessian: one forward-over-reverse pass per parameter."""
        value_and_grad = jax.value_and_grad(lambda zz: jnp.sum(w * loss(zz, x, y, delta)))
        (f, g), (_, h) = jax.vmap(lambda t: jax.jvp(value_and_grad, (z,), (t,)),
                                  out_axes=((None, None), (0, 0)))(jnp.asarray(eye, z.dtype))
        ok = jnp.isfinite(f) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(h))
        return jnp.where(ok, f, jnp.inf), jnp.where(ok, g, 0.0), jnp.where(ok, 0.5 * (h + h.T), 0.0), ok

    def iterate_one(s, w, x, y, delta, ftol, xtol):
        """One trust-region iteration of one start (state dict ``s``, point weights ``w``).

        Parameters flagged in ``s["frozen"]`` stay where they started: the model sees no gradient
        and unit curvature along them, so the step has no component there (`scaling.profile`).
        """
        z, f, g, h, radius, fresh = s["z"], s["f"], s["g"], s["h"], s["radius"], s["fresh"]
        free = ~s["frozen"]
        g_free = jnp.where(free, g, 0.0)
        h_free = jnp.where(free[:, None] & free[None, :], h, jnp.eye(h.shape[0], dtype=h.dtype))
        eig, vecs = jnp.linalg.eigh(h_free)
        gt = vecs.T @ g_free
        steps, predicted = jax.vmap(trust_region_step, in_axes=(None, None, 0))(
            eig, gt, jnp.stack([radius, jnp.ones_like(radius)]))
        model_converged = ~fresh & (predicted[1] <= ftol * jnp.abs(f))   # no gain within a unit step
        step = jnp.where(free, vecs @ steps[0], 0.0)
        sane = jnp.all(jnp.isfinite(step))       # a degenerate model (H = 0, g != 0) gives no step
        step = jnp.where(fresh | ~sane, 0.0, step)
        step_norm = jnp.where(sane, jnp.sqrt(jnp.sum(step * step)), radius)
        fn, gn, hn, ok = fgh(z + step, w, x, y, delta)
        actual = f - fn
        rho = actual / predicted[0]
        accept = jnp.where(fresh, ok, ok & sane & (actual > 0) & (rho > 1e-4))
        radius_new = jnp.where(
            ~accept | (rho < 0.25), 0.25 * step_norm,
            jnp.where((rho > 0.75) & (step_norm >= 0.99 * radius), jnp.minimum(2.0 * radius, 1e3), radius))
        radius_new = jnp.where(fresh, radius, radius_new)
        small = jnp.max(jnp.abs(step)) <= xtol * (1.0 + jnp.max(jnp.abs(z)))
        # a rejected step whose predicted gain is below float64's resolution of F: no decrease is
        # measurable here (e.g. at a kink of a Huber objective, where the model overpromises)
        unresolvable = ~fresh & ~accept & (predicted[0] <= _RESOLUTION * jnp.abs(f))
        converged = model_converged | (~fresh & accept & small) | unresolvable
        take = accept & ~model_converged
        slow = jnp.where(take & (actual <= SLOW_RTOL * jnp.abs(f)), s["slow"] + 1, jnp.where(take, 0, s["slow"]))
        stalled = (radius_new <= 1e-15 * (1.0 + jnp.max(jnp.abs(z)))) | (slow >= SLOW_STEPS)
        failed = s["failed"] | (fresh & ~ok)
        pick = lambda new, old: jnp.where(take, new, old)  # noqa: E731
        return dict(z=pick(z + step, z), f=pick(fn, f), g=pick(gn, g), h=pick(hn, h), radius=radius_new,
                    it=s["it"] + jnp.where(fresh, 0, 1), slow=slow, fresh=jnp.asarray(False),
                    done=converged | stalled | failed, converged=converged, failed=failed)

    iterate = jax.vmap(iterate_one, in_axes=(0, 0, None, None, None, None, None))

    def rows(mask, new, old):
        return jnp.where(mask.reshape(mask.shape + (1,) * (new.ndim - 1)), new, old)

    def run(slots, queue, queue_n, x, y, delta, max_iter, ftol, xtol, drain):
        n_slots, n_queue = slots["z"].shape[0], queue["z"].shape[0]
        out = {k: jnp.zeros((n_queue + n_slots,) + v.shape[1:], v.dtype) for k, v in slots.items()
               if k in _STATE_KEYS + ("index",)}

        def cond(c):
            slots, taken, _, _ = c
            return (taken < queue_n) | (drain & jnp.any(slots["active"]))

        def body(c):
            slots, taken, out, n_out = c
            free = ~slots["active"]
            src = taken + jnp.cumsum(free, dtype=jnp.int32) - 1
            load = free & (src < queue_n)
            src = jnp.clip(src, 0, n_queue - 1)
            z0 = queue["z"][src]
            start = dict(z=z0, f=jnp.full(n_slots, jnp.inf), g=jnp.zeros_like(z0), h=jnp.zeros_like(slots["h"]),
                         radius=jnp.ones(n_slots), it=jnp.zeros(n_slots, jnp.int32),
                         slow=jnp.zeros(n_slots, jnp.int32), fresh=jnp.ones(n_slots, bool),
                         done=jnp.zeros(n_slots, bool), converged=jnp.zeros(n_slots, bool),
                         failed=jnp.zeros(n_slots, bool), w=queue["w"][src], index=queue["index"][src],
                         frozen=queue["frozen"][src])
            slots = {k: rows(load, start[k], v) if k in start else v for k, v in slots.items()}
            active = slots["active"] | load
            stepped = iterate({k: slots[k] for k in _STATE_KEYS + ("frozen",)}, slots["w"], x, y, delta, ftol, xtol)
            slots = {**slots, **{k: rows(active, v, slots[k]) for k, v in stepped.items()}}
            finish = active & (slots["done"] | (slots["it"] >= max_iter))
            at = jnp.where(finish, n_out + jnp.cumsum(finish, dtype=jnp.int32) - 1, n_queue + n_slots)   # past the end: dropped
            out = {k: v.at[at].set(slots[k], mode="drop") for k, v in out.items()}
            slots["active"] = active & ~finish
            return slots, taken + jnp.sum(load, dtype=jnp.int32), out, n_out + jnp.sum(finish, dtype=jnp.int32)

        slots, _, out, n_out = jax.lax.while_loop(cond, body, (slots, jnp.int32(0), out, jnp.int32(0)))
        return slots, out, n_out

    run = jax.jit(run)
    _SOLVERS[key] = (law, run)
    return run


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def slot_count(n_padded: int) -> int:
    """Starts in flight per solver call: 64 on small data, 16 past 64 points (per-start cost is flat
    from 16 to 256 rows there, and fewer slots idle less when few starts are left)."""
    return 64 if n_padded <= 64 else 16


def run_solver(law, objective, delta, z0, weights, x, y, *, max_iter: int = 500, ftol: float = 1e-12,
               xtol: float = 1e-10, chunk: int | None = None, threads: int | None = None, frozen=None) -> dict:
    """Minimize from every row of ``z0`` [S, P] (internal units) with per-start weights [S, n].

    ``frozen`` [S, P] (bool, optional) holds parameters at their start values, per start (profiles).
    The starts are cut into queues of ``4 * chunk`` rows that ``threads`` threads (default: every
    available core; an XLA CPU computation runs on the thread that calls it) feed to the compiled
    solver (`_solver`), each thread keeping ``chunk`` starts in flight (default `slot_count`).
    Points are padded to `padded_size` with zero weight. ``x`` maps covariates to arrays [n]; ``y``
    is the target (its log for the log objectives). Returns the final state as numpy arrays: ``z``
    [S, P], ``f`` [S] (inf where failed), ``g``, ``h``, ``it`` (iterations), ``converged``,
    ``failed``, ``done``, ``radius``.
    """
    run = _solver(law, objective)
    z0 = np.asarray(z0, dtype=np.float64)
    weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(z0), np.shape(y)[-1]))
    x, y, weights = _pad_points(x, y, weights)
    n_starts, n_params = z0.shape
    frozen = np.zeros(z0.shape, bool) if frozen is None else np.broadcast_to(np.asarray(frozen, bool), z0.shape)
    n_slots = chunk or slot_count(len(y))
    n_queue = 4 * n_slots
    state = dict(z=z0.copy(), f=np.full(n_starts, np.inf), g=np.zeros((n_starts, n_params)),
                 h=np.zeros((n_starts, n_params, n_params)), radius=np.ones(n_starts),
                 it=np.zeros(n_starts, np.int32), slow=np.zeros(n_starts, np.int32),
                 fresh=np.ones(n_starts, bool), done=np.zeros(n_starts, bool),
                 converged=np.zeros(n_starts, bool), failed=np.zeros(n_starts, bool))
    with jax.enable_x64(True):
        xj = {k: jnp.asarray(v, jnp.float64) for k, v in x.items()}
        yj, dj = jnp.asarray(y, jnp.float64), jnp.asarray(delta, jnp.float64)
        limits = (jnp.asarray(max_iter, jnp.int32), jnp.asarray(ftol, jnp.float64), jnp.asarray(xtol, jnp.float64))

    def queue_of(part):
        full = np.concatenate([part, np.zeros(n_queue - len(part), part.dtype)])
        return dict(z=z0[full], w=weights[full], index=full.astype(np.int32), frozen=frozen[full]), np.int32(len(part))

    def store(out, n_out):
        out = jax.device_get(out)
        index = np.asarray(out["index"][:int(n_out)])
        for k in _STATE_KEYS:
            state[k][index] = np.asarray(out[k])[:int(n_out)]

    if not n_starts:
        return state
    parts = [np.arange(lo, min(lo + n_queue, n_starts)) for lo in range(0, n_starts, n_queue)]
    pending = iter(parts)
    lock = threading.Lock()

    def worker():
        with jax.enable_x64(True):                       # (a thread-local setting)
            slots = {k: np.repeat(v[:1], n_slots, axis=0) for k, v in state.items()}
            slots.update(w=np.repeat(weights[:1], n_slots, axis=0), index=np.zeros(n_slots, np.int32),
                         active=np.zeros(n_slots, bool), frozen=np.zeros((n_slots, n_params), bool))
            while True:
                with lock:
                    part = next(pending, None)
                if part is None:
                    break
                queue, queue_n = queue_of(part)
                slots, out, n_out = run(slots, queue, queue_n, xj, yj, dj, *limits, False)
                store(out, n_out)
            queue, _ = queue_of(np.zeros(1, np.int64))
            slots, out, n_out = run(slots, queue, np.int32(0), xj, yj, dj, *limits, True)
            store(out, n_out)

    workers = min(max(1, threads or available_cores()), len(parts))
    if workers == 1:
        worker()
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for done in [pool.submit(worker) for _ in range(workers)]:
                done.result()
    state["f"] = np.where(np.isfinite(state["f"]), state["f"], np.inf)
    return state


def padded_size(n: int) -> int:
    """Round n up to a multiple of max(8, 2^(floor(log2 n) - 3)), at least 16: few compiled shapes,
    at most 12.5% padding beyond 64 points."""
    if n <= 16:
        return 16
    step = max(8, 2 ** (int(np.floor(np.log2(n))) - 3))
    return int(-(-n // step) * step)


def _pad_points(x, y, weights):
    """Pad the points to `padded_size` with zero-weight copies of point 0 (so they stay finite)."""
    n = len(y)
    pad = padded_size(n) - n
    if not pad:
        return x, y, weights
    x = {k: np.concatenate([v, np.full(pad, v[0])]) for k, v in x.items()}
    y = np.concatenate([y, np.full(pad, y[0])])
    weights = np.concatenate([weights, np.zeros(weights.shape[:-1] + (pad,))], axis=-1)
    return x, y, weights


_LEAST_SQUARES_DELTA = 1e30   # Huber with this delta is least squares for any sane residual
MERGE_DECIMALS = 5            # starts whose stage optima agree to 1e-5 (internal units) share later stages


def coarse_points(n: int, n_params: int) -> np.ndarray | None:
    """Indices of the fixed random subset the coarse least-squares stage uses, or None (too few points).

    ``m = max(32, 8 * n_params)`` points, drawn once with seed 0 and sorted, when ``n >= 2 m``.
    """
    m = max(32, 8 * n_params)
    if n < 2 * m:
        return None
    return np.sort(np.random.default_rng(0).choice(n, m, replace=False))


def minimize(law, objective, delta, z0, weights, x, y, *, continuation: bool = True, **solver_args) -> dict:
    """`run_solver` with continuation for the Huber objectives: coarse data, least squares, delta.

    Huber with a tiny delta is nearly an L1 objective, whose kinks keep every second-order step
    short. With ``continuation`` each start is carried through a homotopy, each stage warm-started
    at the previous stage's optimum:

    1. least squares (Huber with delta -> infinity: smooth) on a fixed random subset of the
       points (`coarse_points`): walking in from a far start is what costs most iterations, and
       on a few dozen points each costs a fraction;
    2. least squares on all points;
    3. Huber with delta going down by factors of 100 to the target, from the largest
       ``delta * 100^j`` at or below the median absolute residual of the best least-squares fit
       (a larger delta leaves nearly every point in Huber's quadratic zone: least squares again).

    Starts that reach the same point share the later stages, which are deterministic functions of
    that point: they are solved once per group. "The same point" is agreement to `MERGE_DECIMALS`
    decimals in internal units; a stage solved to ``ftol = 1e-12`` places its optimum only to about
    ``sqrt(ftol) = 1e-6``, so a finer key would split one optimum into many groups. ``state["it"]`` counts
    the iterations of all stages; convergence is that of the final stage.
    """
    if not continuation or not objective.startswith("huber"):
        return run_solver(law, objective, delta, z0, weights, x, y, **solver_args)
    weights = np.broadcast_to(weights, (len(z0), len(y)))
    same_weights = bool(np.all(weights == weights[:1]))
    iterations = np.zeros(len(z0), np.int32)
    z = np.asarray(z0, dtype=np.float64)
    subset = coarse_points(len(y), z.shape[1])
    if subset is not None:
        coarse = run_solver(law, objective, _LEAST_SQUARES_DELTA, z, weights[:, subset],
                            {k: v[subset] for k, v in x.items()}, y[subset], **solver_args)
        z, iterations = coarse["z"], iterations + coarse["it"]

    def stage(d, z):
        key = np.round(z, MERGE_DECIMALS) if same_weights else np.arange(len(z))[:, None]
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        result = run_solver(law, objective, d, z[first], weights[first], x, y, **solver_args)
        return {k: v[inverse.reshape(-1)] for k, v in result.items()}

    state = stage(_LEAST_SQUARES_DELTA, z)
    iterations = iterations + state["it"]
    best = int(np.argmin(state["f"]))
    with jax.enable_x64(True):
        xj = {k: jnp.asarray(v, jnp.float64) for k, v in x.items()}
        r = np.abs(np.asarray(_helpers(law, objective)[1](jnp.asarray(state["z"][best]), xj, jnp.asarray(y))))
    scale = float(np.median(r)) if np.isfinite(r).all() else delta
    top = int(np.floor(np.log(max(scale / delta, 1.0)) / np.log(100.0)))
    for j in range(top, -1, -1):
        state = stage(delta * 100.0 ** j, state["z"])
        iterations = iterations + state["it"]
    state["it"] = iterations
    return state


# ----------------------------------------------------------------------------- input checking

def _column(data, name: str, where: str) -> np.ndarray:
    try:
        values = np.asarray(data[name], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: column {name!r} is not numeric ({e})") from None
    if values.ndim != 1:
        raise ValueError(f"{where}: column {name!r} must be 1-D, got shape {values.shape}")
    return values


def _rows(mask) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:10])
    return f"rows [{shown}{', ...' if len(rows) > 10 else ''}]"


def prepare_data(law: law_lib.Law, data, target: str | None, columns: Mapping[str, str] | None,
                 objective: str):
    """Validate ``data`` and return ``(x {covariate: array}, y, target column name)`` in float64."""
    if not hasattr(data, "__getitem__") or isinstance(data, (str, bytes, np.ndarray)):
        raise ValueError(f"data must be a pandas DataFrame or a dict of arrays, got {type(data).__name__}")
    columns = dict(columns or {})
    unknown = set(columns) - set(law.covariates) - {law.target}
    if unknown:
        raise ValueError(f"columns maps unknown names {sorted(unknown)}; law {law.name!r} has covariates "
                         f"{list(law.covariates)} and target {law.target!r}")
    target_col = target or columns.get(law.target, law.target)
    wanted = {c: columns.get(c, c) for c in law.covariates}
    available = list(data.keys()) if hasattr(data, "keys") else list(data.columns)
    missing = [col for col in [*wanted.values(), target_col] if col not in available]
    if missing:
        raise ValueError(f"data is missing columns {missing} needed by law {law.name!r} "
                         f"(available: {available}); map names with columns={{...}} or target=...")
    x = {c: _column(data, col, "data") for c, col in wanted.items()}
    y = _column(data, target_col, "data")
    lengths = {col: len(v) for col, v in zip([*wanted.values(), target_col], [*x.values(), y])}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"data columns have different lengths: {lengths}")
    positive = set(law.positive_columns) | ({law.target} if objective in LOG_OBJECTIVES else set())
    for name, values in [*x.items(), (law.target, y)]:
        col = wanted.get(name, target_col)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"data column {col!r} has {bad.sum()} non-finite values (NaN/inf) at {_rows(bad)}")
        if name in positive and (values <= 0).any():
            raise ValueError(f"data column {col!r} must be > 0 (logs of it are taken) but has "
                             f"{(values <= 0).sum()} non-positive values at {_rows(values <= 0)}")
    if len(y) < len(law.params):
        raise ValueError(f"law {law.name!r} has {len(law.params)} parameters but data has only {len(y)} points")
    return x, y, target_col


def _weights(weights, data, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    if isinstance(weights, str):
        if weights not in data:
            raise ValueError(f"weights column {weights!r} is not in data")
        weights = data[weights]
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"weights must be numeric ({e})") from None
    if w.shape != (n,):
        raise ValueError(f"weights must have one value per point, shape ({n},), got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"weights have non-finite values at {_rows(~np.isfinite(w))}")
    if (w < 0).any():
        raise ValueError(f"weights must be >= 0, negative at {_rows(w < 0)}")
    if not (w > 0).any():
        raise ValueError("weights are all zero")
    return w


def starts_to_internal(law: law_lib.Law, starts) -> np.ndarray:
    """User starts (DataFrame, dict of arrays, or array [S, P] in law order; natural units) -> [S, P]."""
    names = law.param_names
    if hasattr(starts, "keys") or hasattr(starts, "columns"):
        keys = list(starts.columns) if hasattr(starts, "columns") else list(starts.keys())
        if set(keys) != set(names):
            raise ValueError(f"starts must give exactly the parameters {list(names)}, got {keys}")
        cols = [np.atleast_1d(np.asarray(starts[k], dtype=np.float64)) for k in names]
        try:
            arr = np.stack(np.broadcast_arrays(*cols), axis=-1)
        except ValueError:
            raise ValueError(f"starts columns have incompatible lengths {[len(c) for c in cols]}") from None
    else:
        arr = np.atleast_2d(np.asarray(starts, dtype=np.float64))
        if arr.ndim != 2 or arr.shape[1] != len(names):
            raise ValueError(f"starts array must have shape [starts, {len(names)}] (order {list(names)}), "
                             f"got {np.shape(starts)}")
    if arr.shape[0] == 0:
        raise ValueError("starts is empty")
    for j, p in enumerate(law.params):
        bad = [v for v in arr[:, j] if not p.contains(v)]
        if bad:
            raise ValueError(f"starts for {p.name!r} ({p.transform}) are outside its domain: {bad[:5]}")
    return np.stack([p.to_internal(arr[:, j]) for j, p in enumerate(law.params)], axis=-1)


def data_sha256(x: Mapping[str, np.ndarray], y: np.ndarray, target: str) -> str:
    """SHA-256 over the column names and float64 little-endian bytes, in sorted covariate order."""
    h = hashlib.sha256()
    for name in sorted(x):
        h.update(name.encode())
        h.update(np.ascontiguousarray(x[name], dtype="<f8").tobytes())
    h.update(target.encode())
    h.update(np.ascontiguousarray(y, dtype="<f8").tobytes())
    return h.hexdigest()


def distinct_optima(z: np.ndarray, f: np.ndarray, ok: np.ndarray, k: int, rtol: float = 0.1,
                   tol: float = 1e-4) -> np.ndarray:
    """Indices of up to k best converged optima that differ (max-abs in internal space > tol).

    Only optima within ``rtol`` of the best objective count: a much worse basin will not win on a
    resample, and refitting from it only costs iterations.
    """
    f_best = np.min(np.where(ok, f, np.inf))
    good = ok & (f <= f_best + rtol * abs(f_best))
    chosen: list[int] = []
    for i in np.argsort(np.where(good, f, np.inf)):
        if not good[i] or len(chosen) == k:
            break
        if all(np.max(np.abs(z[i] - z[j])) > tol for j in chosen):
            chosen.append(int(i))
    return np.asarray(chosen, dtype=int)


# ----------------------------------------------------------------------------- fit

def fit(law, data, target: str | None = None, *, objective: str | None = None, delta: float = 1e-3,
        weights=None, starts=None, bootstrap: int = 0, seed: int = 0, columns: Mapping[str, str] | None = None,
        bootstrap_starts: int = 3, max_iter: int = 500, ftol: float = 1e-12, xtol: float = 1e-10,
        at_best_rtol: float = 1e-6, continuation: bool = True, threads: int | None = None,
        flop_convention: str = "6ND", k: float | None = None, provenance: Mapping | None = None) -> FittedLaw:
    """Fit ``law`` to ``data`` from many starts, optionally with a bootstrap; returns a `FittedLaw`.

    Args:
      law: a `Law` or a registered law name.
      data: pandas DataFrame or dict of equal-length arrays: one column per covariate and the target.
      target: the target column (default: ``law.target``, through ``columns``).
      objective: one of `OBJECTIVES` (default: ``"nll"`` when the law has an nll, else ``law.objective``).
      delta: Huber's delta for the huber objectives (Epoch AI: 1e-3 on log loss).
      weights: per-point weights (array, or a column name); the objective is ``sum_i w_i l_i``.
      starts: starting points in natural units (DataFrame, dict of arrays, or array [S, P] in
        ``law.param_names`` order); default ``law.default_grid()``.
      bootstrap: number of bootstrap resamples (0: none).
      seed: seed of the resampling (results are deterministic for a seed).
      columns: maps law covariate (or target) names to data column names.
      bootstrap_starts: each resample is refitted from this many best distinct full-data optima.
      max_iter, ftol, xtol: solver limits per stage (see the module docstring).
      continuation: for the Huber objectives, reach delta through least squares and a delta
        homotopy (see `minimize`); False solves at delta directly from every start.
      threads: threads feeding the solver at once (default: every available core).
      at_best_rtol: a start counts in ``n_starts_at_best`` when its objective is within
        ``at_best_rtol * |best|`` of the best.
      flop_convention, k: how compute relates to N and D (``C = k N D``), see `scaling.fitted`.
      provenance: extra provenance entries (citation, notes, ...).
    """
    t_start = time.perf_counter()
    law = law_lib.get(law) if isinstance(law, law_lib.Law) else _registered(law)
    objective = objective or ("nll" if law.nll is not None else law.objective)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if objective == "nll" and law.nll is None:
        raise ValueError(f"objective 'nll' needs a law with an nll; law {law.name!r} has none")
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be a positive finite number, got {delta}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative int, got {bootstrap!r}")
    if bootstrap_starts < 1:
        raise ValueError(f"bootstrap_starts must be >= 1, got {bootstrap_starts}")
    flop_k(flop_convention, k)  # validates
    x, y, target_col = prepare_data(law, data, target, columns, objective)
    n = len(y)
    w = _weights(weights, data, n)
    y_fit = np.log(y) if objective in LOG_OBJECTIVES else y
    z0 = law.default_grid() if starts is None else starts_to_internal(law, starts)

    solver_args = dict(max_iter=max_iter, ftol=ftol, xtol=xtol, threads=threads)

    # multistart
    t0 = time.perf_counter()
    state = minimize(law, objective, delta, z0, np.broadcast_to(w, (len(z0), n)), x, y_fit,
                     continuation=continuation, **solver_args)
    z, f, converged, failed, iters = (state[key] for key in ("z", "f", "converged", "failed", "it"))
    t_multistart = time.perf_counter() - t0
    ok = ~failed & np.isfinite(f)
    if not ok.any():
        raise ValueError(f"law {law.name!r}: the objective is not finite at any of the {len(z0)} starts; "
                         "give starts= where the law's prediction is finite (and positive for log objectives)")
    best = int(np.argmin(np.where(ok, f, np.inf)))
    f_best = float(f[best])
    at_best = ok & (f <= f_best + at_best_rtol * abs(f_best))
    params = {k_: float(v) for k_, v in natural_values(law, z[best]).items()}

    # profile likelihood (maximum-likelihood fits): every parameter held on a grid, the rest refitted
    curves = None
    t_profile = 0.0
    if objective == "nll":
        t0 = time.perf_counter()
        curves = profile_lib.profile(law, objective, z[best], f_best, state["h"][best], w, x, y_fit, **solver_args)
        t_profile = time.perf_counter() - t0

    # bootstrap: multinomial count weights, refit from the best distinct optima, keep the best refit
    samples = standard_errors = boot_info = acceleration = None
    t_boot = 0.0
    if bootstrap:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap).astype(np.float64)
        seeds = distinct_optima(z, f, ok & converged, bootstrap_starts)
        if not len(seeds):                   # no start converged: refit from the best point reached
            seeds = np.array([best])
        nb = len(seeds)
        zb0 = np.tile(z[seeds], (bootstrap, 1))                    # resample-major: [r0 s0, r0 s1, ...]
        wb = np.repeat(counts * w, nb, axis=0)
        sb = run_solver(law, objective, delta, zb0, wb, x, y_fit, **solver_args)
        fb = np.where(sb["failed"], np.inf, sb["f"]).reshape(bootstrap, nb)
        pick = np.argmin(fb, axis=1)
        rows = np.arange(bootstrap) * nb + pick
        good = np.isfinite(fb[np.arange(bootstrap), pick])
        draws = natural_values(law, sb["z"][rows])
        good &= np.all([np.isfinite(v) for v in draws.values()], axis=0)   # e.g. exp overflow far out
        samples = {k_: v[good] for k_, v in draws.items()}
        if good.sum() > 1:
            with np.errstate(over="ignore", invalid="ignore"):
                spread = {k_: float(np.std(v, ddof=1)) for k_, v in samples.items()}
            # a parameter the data barely identify (e.g. A when alpha is loose) can have draws so
            # large that their variance overflows: no standard error then; percentiles still hold
            standard_errors = {k_: v for k_, v in spread.items() if np.isfinite(v)}
        jackknife_refits = 0
        if good.any():   # BCa's acceleration, from leave-one-point-out refits (scaling.intervals)
            jack = intervals.jackknife(law, objective, delta, z[best], w, x, y_fit, **solver_args)
            acceleration = intervals.accelerations(jack)
            jackknife_refits = len(next(iter(jack.values())))
        t_boot = time.perf_counter() - t0
        boot_info = {
            "resamples": int(bootstrap), "failed": int((~good).sum()), "starts_per_resample": int(nb),
            "converged": int(sb["converged"][rows][good].sum()), "iterations_max": int(sb["it"].max()),
            "iterations_median": float(np.median(sb["it"])), "seed": int(seed),
            "interval": "bca" if acceleration else "percentile", "jackknife_refits": jackknife_refits}
        if not good.any():
            samples = None

    with jax.enable_x64(True):
        xj = {k_: jnp.asarray(v) for k_, v in x.items()}
        residuals = np.asarray(_helpers(law, objective)[1](jnp.asarray(z[best]), xj, jnp.asarray(y_fit)))
    fit_info = {
        "objective": objective, "objective_value": f_best, "normalisation": "weighted sum over points",
        "delta": float(delta) if objective.startswith("huber") else None,
        "weighted": weights is not None,
        "n_starts": int(len(z0)), "n_failed": int((~ok).sum()), "n_converged": int(converged.sum()),
        "n_starts_at_best": int(at_best.sum()), "at_best_rtol": float(at_best_rtol),
        "iterations_max": int(iters.max()), "iterations_median": float(np.median(iters)),
        "best_start_converged": bool(converged[best]),
        "solver": "exact-Hessian trust-region Newton, jax float64" + (
            "; continuation: coarse least squares, least squares, delta" if continuation
            and objective.startswith("huber") else ""),
        "max_iter": int(max_iter), "max_iter_applies_to": "each continuation stage (iterations_* sum the stages)",
        "ftol": float(ftol), "xtol": float(xtol),
        "bootstrap": boot_info, "seed": int(seed),
        "residual_space": "log" if objective in LOG_OBJECTIVES else "linear",
        "profile": None if curves is None else {"points_per_param": len(profile_lib.OFFSETS) * 2 + 1},
        "time_s": {"multistart": t_multistart, "bootstrap": t_boot, "profile": t_profile,
                   "total": time.perf_counter() - t_start},
    }
    data_info = {
        "n_points": int(n), "sha256": data_sha256(x, y, target_col), "target": target_col,
        "ranges": {c: [float(v.min()), float(v.max())] for c, v in x.items()},
    }
    prov = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "scaling_version": _version(), "citation": law.citation, "equation": law.formula}
    prov.update(dict(provenance or {}))
    fitted = FittedLaw(law, params, samples=samples, standard_errors=standard_errors, acceleration=acceleration,
                       profile=curves, flop_convention=flop_convention, k=k, data=data_info, fit=fit_info,
                       provenance=prov, residuals=residuals)
    fitted.multistart = {"starts": natural_values(law, z0), "optima": natural_values(law, z), "objective": f,
                         "converged": converged, "failed": failed, "iterations": iters, "at_best": at_best}
    return fitted


def simulate(law, n: int, *, params: Mapping[str, float] | None = None, noise: float = 0.01,
             seed: int | np.random.Generator = 0) -> dict:
    """Draw a synthetic dataset of ``n`` points from a law: ``{covariate: array, target: array}``.

    Covariates come from ``law.design(rng, n)``; targets from ``law.simulate(rng, params, x)`` when
    the law has one, else the prediction times lognormal noise ``exp(noise * N(0, 1))``
    (``noise = 0`` gives exact data). ``params`` default to ``law.reference``.
    """
    law = law if isinstance(law, law_lib.Law) else _registered(law)
    if law.design is None:
        raise ValueError(f"law {law.name!r} has no design(rng, n) to draw covariates from")
    params = dict(params if params is not None else (law.reference or {}))
    if set(params) != set(law.param_names):
        raise ValueError(f"simulate needs params for exactly {list(law.param_names)}, got {sorted(params)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    x = {k: np.asarray(v, dtype=np.float64) for k, v in law.design(rng, n).items()}
    if law.simulate is not None:
        y = np.asarray(law.simulate(rng, params, x), dtype=np.float64)
    else:
        with jax.enable_x64(True):
            mean = np.asarray(law(params, **x), dtype=np.float64)
        y = mean * np.exp(noise * rng.standard_normal(mean.shape))
    return {**x, law.target: y}


def _registered(name) -> law_lib.Law:
    import scaling.laws  # noqa: F401  (registers the shipped laws)
    return law_lib.get(name)


@functools.cache
def _version() -> str:
    import scaling
    return scaling.__version__
