"""Continuation for the Huber objectives: coarse least squares, least squares, then delta down (`minimize`).

Huber with a tiny delta (Epoch AI's 1e-3 on log loss) is nearly an L1 objective, whose kinks keep
every second-order step short; `minimize` reaches it through smooth problems, each stage
warm-started at the previous one's optimum, and starts that meet at the same point share the
later stages.
"""

from __future__ import annotations

import numpy as np

from scaling.fitting.objectives import residuals
from scaling.fitting.solver import run_solver

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
    r = np.abs(residuals(law, objective, state["z"][best], x, y))
    scale = float(np.median(r)) if np.isfinite(r).all() else delta
    top = int(np.floor(np.log(max(scale / delta, 1.0)) / np.log(100.0)))
    for j in range(top, -1, -1):
        state = stage(delta * 100.0 ** j, state["z"])
        iterations = iterations + state["it"]
    state["it"] = iterations
    return state


