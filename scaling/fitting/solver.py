"""The solver of `scaling.fit`: vectorized multistart trust-region Newton, in float64.

Trust-region Newton on the exact Hessian (params are few, so the Hessian costs one
forward-over-reverse pass per parameter). Each iteration eigendecomposes H and takes the exact
trust-region step (Moré & Sorensen 1983, "Computing a trust region step"; Nocedal & Wright,
"Numerical Optimization", 2nd ed., Alg. 4.3), which uses negative curvature where H is indefinite,
as it is far from an optimum; a step is accepted when the actual decrease is a positive fraction of
the decrease the quadratic model predicts, and the radius shrinks to a quarter of the step on poor
agreement (rho < 1/4) and doubles on good agreement at the boundary (rho > 3/4) (after Nocedal &
Wright Alg. 4.1).
The solver is one jit-compiled `jax.lax.while_loop`, in float64, that keeps a fixed number of starts
in flight (vmapped "slots") and loads the next start of a queue into a slot as soon as its start
finishes (`compiled_run`, `run_solver`), so no start waits on slower ones. A start whose
objective is not finite at its initial point is marked failed and never poisons the others; trial
points with non-finite values are rejected like any bad step.

A start converges when the quadratic model predicts less than ``ftol * |F|`` decrease within a
unit step (no relative improvement left), or when an accepted step is below
``xtol * (1 + max|z|)`` (needed for zero-residual data, where F itself goes to 0), or when a
step is rejected although the model promised less than ``16 eps |F|`` (a gain float64 cannot
resolve: at a kink of a Huber objective the model overpromises, and shrinking the radius further
can only show rounding noise). A start that creeps along a flat valley towards an optimum at
infinity (a parameter that the data do not identify) stops, unconverged, after `SLOW_STEPS` steps
in a row that each gain less than ``SLOW_RTOL * |F|``, or when the trust radius collapses.

Where it runs: on the CPU by default, even on a host with an accelerator (`engine_device`):
the fits are small, sequential while-loops in float64, which a GPU or TPU runs slower (and a TPU
emulates float64). Set ``SCALING_FIT_DEVICE=default`` (jax's default device) or a platform name
(``gpu``, ``tpu``) to choose otherwise.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np

from scaling.fitting.objectives import point_losses
from scaling.laws import law as law_lib

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


DEVICE_ENV = "SCALING_FIT_DEVICE"


def skip_absent_tpu() -> bool:
    """Keep jax off a TPU that is not there: when libtpu is installed (e.g. jax's ``tpu`` extra,
    for ahead-of-time compiles) but this host has no TPU (/dev/accel*, /dev/vfio) and no NVIDIA
    device, and nobody chose platforms (``JAX_PLATFORMS``), restrict jax to the CPU before its
    backends start; otherwise libtpu prints pages of start-up errors before jax falls back.
    Returns whether it did. Called by the commands (`experiments.harness.cli`, `benchmarks`), which
    decide the platform; importing the library changes no global jax setting (a fit runs on the CPU
    through a thread-local ``jax.default_device`` context, `engine_context`)."""
    import glob
    import importlib.util

    if jax.config.jax_platforms or importlib.util.find_spec("libtpu") is None:
        return False
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*") or glob.glob("/dev/nvidia[0-9]*"):
        return False
    jax.config.update("jax_platforms", "cpu")
    return True


def engine_device():
    """The device the engine's computations run on: the first CPU device unless ``SCALING_FIT_DEVICE``
    says otherwise (``default``: jax's default device, None here; else a platform name)."""
    choice = os.environ.get(DEVICE_ENV, "cpu").strip().lower()
    if choice == "default":
        return None
    try:
        return jax.devices(choice)[0]
    except RuntimeError as e:
        raise ValueError(f"{DEVICE_ENV}={choice!r}: no such jax platform here ({e})") from None


def engine_context():
    """``with engine_context():`` float64 on `engine_device` (both thread-local jax settings)."""
    stack = contextlib.ExitStack()
    stack.enter_context(jax.enable_x64(True))
    device = engine_device()
    if device is not None:
        stack.enter_context(jax.default_device(device))
    return stack


def describe_engine() -> str:
    """Where and in what precision the engine runs, for a fit's record (e.g. ``"cpu, float64"``)."""
    device = engine_device()
    where = "jax's default device" if device is None else device.platform
    return f"{where}, float64 ({DEVICE_ENV}={os.environ.get(DEVICE_ENV, 'cpu (default)')})"


_STATE_KEYS = ("z", "f", "g", "h", "radius", "it", "slow", "fresh", "done", "converged", "failed")
SLOW_RTOL, SLOW_STEPS = 1e-8, 10   # stop (not converged) after 10 steps in a row gaining < 1e-8 * |F|
_RESOLUTION = 16 * float(np.finfo(np.float64).eps)   # relative gains below this are rounding noise


def _solver(law: law_lib.Law, objective: str):
    """The compiled solver for (law, objective): `compiled_run` with both bound (see there)."""
    return functools.partial(compiled_run, law, objective)


@functools.partial(jax.jit, static_argnums=(0, 1))
def compiled_run(law: law_lib.Law, objective: str, slots, queue, queue_n, x, y, delta, max_iter, ftol, xtol,
                 drain):
    """The solver: starts in slots fed from a queue, one `jax.lax.while_loop`, jit-compiled.

    ``compiled_run(law, objective, slots, queue, queue_n, x, y, delta, max_iter, ftol, xtol, drain)``
    keeps ``B`` starts in
    flight (the slots, one vmapped row each) inside one `jax.lax.while_loop`. Each pass first loads
    the next starts of the queue (``Q`` rows, the first ``queue_n`` real) into the free slots, then
    takes one trust-region iteration in every slot, then writes the starts that finished (converged,
    stalled, failed or at ``max_iter``) to an output buffer of ``Q + B`` rows and frees their slots.
    The loop ends when the queue is used up (the slots still in flight go back to the caller, to be
    continued with the next queue) or, with ``drain``, when every slot is free. So a slow start
    never holds finished ones back, and no start waits on a regrouping round. The data ``x``, ``y``
    are shared by every start, or (when the queue has ``"y"`` and ``"x/<covariate>"`` rows and
    ``x``, ``y`` are None) each start brings its own into its slot. A fresh start's first
    pass evaluates the objective at its initial point (a zero step accepted when finite). Each
    start's path depends on that start alone, whichever slot and call it runs in. The law and the
    objective are static arguments (a `Law` hashes by identity), so jax.jit caches one executable
    per (law, objective, shapes), and `run_solver` pads points, slots and queues to a few shapes:
    repeated fits and the bootstrap reuse it.
    """
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

    def rows(mask, new, old):
        return jnp.where(mask.reshape(mask.shape + (1,) * (new.ndim - 1)), new, old)

    def run(slots, queue, queue_n, x, y, delta, max_iter, ftol, xtol, drain):
        n_slots, n_queue = slots["z"].shape[0], queue["z"].shape[0]
        # per-start data ("y" and "x/<covariate>" rows in the queue and the slots) or shared x, y
        own = [k for k in queue if k == "y" or k.startswith("x/")]
        axis = 0 if own else None
        iterate = jax.vmap(iterate_one, in_axes=(0, 0, axis, axis, None, None, None))
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
                         frozen=queue["frozen"][src], **{k: queue[k][src] for k in own})
            slots = {k: rows(load, start[k], v) if k in start else v for k, v in slots.items()}
            active = slots["active"] | load
            xs = {k[2:]: slots[k] for k in own if k != "y"} if own else x
            stepped = iterate({k: slots[k] for k in _STATE_KEYS + ("frozen",)}, slots["w"], xs,
                              slots["y"] if own else y, delta, ftol, xtol)
            slots = {**slots, **{k: rows(active, v, slots[k]) for k, v in stepped.items()}}
            finish = active & (slots["done"] | (slots["it"] >= max_iter))
            at = jnp.where(finish, n_out + jnp.cumsum(finish, dtype=jnp.int32) - 1, n_queue + n_slots)   # past the end: dropped
            out = {k: v.at[at].set(slots[k], mode="drop") for k, v in out.items()}
            slots["active"] = active & ~finish
            return slots, taken + jnp.sum(load, dtype=jnp.int32), out, n_out + jnp.sum(finish, dtype=jnp.int32)

        slots, _, out, n_out = jax.lax.while_loop(cond, body, (slots, jnp.int32(0), out, jnp.int32(0)))
        return slots, out, n_out

    return run(slots, queue, queue_n, x, y, delta, max_iter, ftol, xtol, drain)


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

    The data are shared by every start (``y`` [n], ``x`` maps covariates to arrays [n]), or each
    start has its own (``y`` [S, n], every ``x`` [S, n]: many small datasets in one call, e.g. a
    fit per bootstrap draw, `scaling.fitting.fit_many`); ``y`` is the target (its log for the log
    objectives). ``frozen`` [S, P] (bool, optional) holds parameters at their start values, per
    start (profiles). The starts are cut into queues of ``4 * chunk`` rows that ``threads``
    threads (default: every available core; an XLA CPU computation runs on the thread that calls
    it) feed to the compiled solver (`_solver`), each thread keeping ``chunk`` starts in flight
    (default `slot_count`). Points are padded with zero weight to `padded_size` (shared data) or
    to a power of two >= `MIN_OWN_PADDED` (per-start data). Returns the final state as numpy
    arrays: ``z`` [S, P], ``f`` [S] (inf where failed), ``g``, ``h``, ``it`` (iterations),
    ``converged``, ``failed``, ``done``, ``radius``.
    """
    run = _solver(law, objective)
    z0 = np.asarray(z0, dtype=np.float64)
    own = np.ndim(y) == 2                                  # per-start data
    weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(z0), np.shape(y)[-1]))
    x, y, weights = _pad_points(x, y, weights)
    n_starts, n_params = z0.shape
    frozen = np.zeros(z0.shape, bool) if frozen is None else np.broadcast_to(np.asarray(frozen, bool), z0.shape)
    n_slots = chunk or slot_count(y.shape[-1])
    n_queue = 4 * n_slots
    state = dict(z=z0.copy(), f=np.full(n_starts, np.inf), g=np.zeros((n_starts, n_params)),
                 h=np.zeros((n_starts, n_params, n_params)), radius=np.ones(n_starts),
                 it=np.zeros(n_starts, np.int32), slow=np.zeros(n_starts, np.int32),
                 fresh=np.ones(n_starts, bool), done=np.zeros(n_starts, bool),
                 converged=np.zeros(n_starts, bool), failed=np.zeros(n_starts, bool))
    rows = {"w": weights, "frozen": frozen}                # per-start inputs the queue carries
    with engine_context():
        if own:
            rows.update({"y": np.asarray(y, np.float64), **{f"x/{k}": np.asarray(v, np.float64) for k, v in x.items()}})
            xj = yj = None
        else:
            xj = {k: jnp.asarray(v, jnp.float64) for k, v in x.items()}
            yj = jnp.asarray(y, jnp.float64)
        dj = jnp.asarray(delta, jnp.float64)
        limits = (jnp.asarray(max_iter, jnp.int32), jnp.asarray(ftol, jnp.float64), jnp.asarray(xtol, jnp.float64))

    def queue_of(part):
        full = np.concatenate([part, np.zeros(n_queue - len(part), part.dtype)])
        return dict(z=z0[full], index=full.astype(np.int32), **{k: v[full] for k, v in rows.items()}), \
            np.int32(len(part))

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
        with engine_context():                           # (thread-local settings)
            slots = {k: np.repeat(v[:1], n_slots, axis=0) for k, v in state.items()}
            slots.update({k: np.repeat(v[:1], n_slots, axis=0) for k, v in rows.items()})
            slots.update(index=np.zeros(n_slots, np.int32), active=np.zeros(n_slots, bool),
                         frozen=np.zeros((n_slots, n_params), bool))
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


MIN_PADDED = 64   # every fit of at most 64 points shares one compiled shape


def padded_size(n: int) -> int:
    """The padded number of points: 64, or the next of 96, 128, 192, 256, ... (2^k and 1.5 x 2^k).

    Few shapes, so a new table mostly reuses a compiled solver (each compile costs seconds to tens
    of seconds, far more than the padding): one shape up to 64 points, where the per-start cost is
    flat anyway (dispatch and the while loop dominate), then two per octave, at most 50% (on
    average ~20%) padding work.
    """
    if n <= MIN_PADDED:
        return MIN_PADDED
    power = 2 ** int(np.floor(np.log2(n)))
    for size in (power, 3 * power // 2, 2 * power):
        if size >= n:
            return int(size)
    return int(2 * power)


MIN_OWN_PADDED = 8   # per-start data (one small dataset per start) is padded to 8, 16, 32, ... points


def own_padded_size(n: int) -> int:
    """The padded number of points of per-start data: the next power of two >= n, at least 8.

    Each start evaluates only its own points, so the per-iteration cost follows the padded size:
    a 4-point power law padded to 8 costs a few times less than the same fit padded to 64.
    """
    return max(MIN_OWN_PADDED, 1 << max(0, int(n) - 1).bit_length())


def _pad_points(x, y, weights):
    """Pad the points (the last axis) to `padded_size` (shared data, ``y`` [n]) or `own_padded_size`
    (per-start data, ``y`` [S, n]) with zero-weight copies of point 0 (so they stay finite)."""
    n = np.shape(y)[-1]
    pad = (own_padded_size(n) if np.ndim(y) == 2 else padded_size(n)) - n
    if not pad:
        return x, y, weights

    def extend(v):
        v = np.asarray(v, np.float64)
        return np.concatenate([v, np.repeat(v[..., :1], pad, axis=-1)], axis=-1)

    x = {k: extend(v) for k, v in x.items()}
    weights = np.concatenate([weights, np.zeros(weights.shape[:-1] + (pad,))], axis=-1)
    return x, extend(y), weights

