"""Many small fits in one call of the engine's solver: `fit_many`, `fit_with_draws`, `evaluate`.

The isoFLOP analysis fits hundreds of tiny problems (a parabola per budget and bootstrap draw, a
power law per draw); one `run_solver` call each would compile and dispatch far too often. `fit_many`
makes every (dataset, start) pair one start of a single `run_solver` call with per-start data:
each start carries its own dataset's points, padded to a power of two >= 8, so a law compiles a
few shapes in all (8, 16, 32, ... points) and a new table reuses them, and the solver refills its
slots as starts finish.

Why per-start data (issue 14): the earlier version pooled the points of 64 datasets per call, so
every start paid for all 64 datasets' points (64-256 for a power law over 4-5 budgets), and each
call of 64 starts ran until its slowest start finished. A few bootstrap refits of the 3-parameter
L_opt(C) power law on 4-5 budgets have their optimum at E -> 0 and creep to ``max_iter`` (1000):
each of them held a whole 64-start call over 64-256 points for 1000 iterations (0.3-0.9 s per
call, 1.5-2.5 s per table, against 0.4 s for the rest of the analysis). Now such a start runs
1000 iterations over its own 8 points while the slots around it take other starts.
"""


from __future__ import annotations

from typing import Mapping

import numpy as np

from scaling.fitting.data import data_sha256
from scaling.fitting.evaluate import bucket, evaluate  # noqa: F401  (re-exported: their old home)
from scaling.fitting.fitted import FittedLaw
from scaling.fitting.objectives import LOG_OBJECTIVES
from scaling.fitting.solver import describe_engine, run_solver
from scaling.laws.law import Law

SLOTS = 64   # starts in flight per thread in `fit_many`'s solver call


def fit_many(law: Law, objective: str, x: Mapping[str, np.ndarray], y: np.ndarray, w: np.ndarray,
             z0: np.ndarray, *, max_iter: int = 1000, chunk: int = SLOTS):
    """Fit ``law`` to R weighted datasets, each from its own starts, with the engine's solver.

    ``x`` maps covariates to [n] (shared) or [R, n]; ``y`` [R, n] natural targets; ``w`` [R, n]
    weights (0 = point absent, its values are ignored); ``z0`` internal starts, [R, P] (one per
    dataset) or [R, S, P]. Every (dataset, start) pair is one start of a single `run_solver` call
    with per-start data: each start carries only its dataset's present points (moved to the front,
    padded to a power of two >= 8, `scaling.fitting.solver.own_padded_size`), so a start costs what
    its own dataset costs, and ``chunk`` slots are refilled from the queue as starts finish, so a
    start that needs many iterations holds up no other. Datasets without any positive weight are
    not fitted. Returns ``(z [R, P], objective [R], ok [R], objective per start [R, S])``.
    """
    y = np.atleast_2d(np.asarray(y, np.float64))
    w = np.atleast_2d(np.asarray(w, np.float64))
    R, n = y.shape
    P = len(law.params)
    z0 = np.asarray(z0, np.float64).reshape(R, -1, P)
    S = z0.shape[1]
    present = w > 0
    f_all = np.full((R, S), np.inf)
    z_all = np.zeros((R, S, P))
    fitted = np.flatnonzero(present.any(axis=1))
    if len(fitted):
        cols = [np.broadcast_to(np.asarray(x[c], np.float64), (R, n))[fitted] for c in law.covariates] + [y[fitted]]
        keep = present[fitted]
        order = np.argsort(~keep, axis=1, kind="stable")     # present points first, in their order
        m = int(keep.sum(axis=1).max())
        order, keep = order[:, :m], np.take_along_axis(keep, order[:, :m], axis=1)
        first = order[:, :1]                                 # absent slots repeat a present point
        order = np.where(keep, order, first)
        cols = [np.take_along_axis(v, order, axis=1) for v in cols]
        W = np.where(keep, np.take_along_axis(w[fitted], order, axis=1), 0.0)
        target = np.log(cols[-1]) if objective in LOG_OBJECTIVES else cols[-1]
        rep = lambda a: np.repeat(a, S, axis=0)   # noqa: E731  (dataset-major pairs: d0 s0, d0 s1, ...)
        out = run_solver(law, objective, 1e-3, z0[fitted].reshape(-1, P), rep(W),
                         {cv: rep(cols[j]) for j, cv in enumerate(law.covariates)}, rep(target),
                         max_iter=max_iter, chunk=chunk)
        f = np.where(out["failed"] | ~np.isfinite(out["f"]) | ~np.isfinite(out["z"]).all(axis=1), np.inf, out["f"])
        f_all[fitted] = f.reshape(-1, S)
        z_all[fitted] = out["z"].reshape(-1, S, P)
    best = np.argmin(f_all, axis=1)
    f_best = f_all[np.arange(R), best]
    ok = np.isfinite(f_best) & present.any(axis=1)
    return z_all[np.arange(R), best], f_best, ok, f_all


def natural_numpy(law: Law, z: np.ndarray) -> dict:
    """Internal -> natural parameters in numpy (the transforms of `scaling.laws.Param`)."""
    z = np.asarray(z, np.float64)
    return {p.name: p.to_natural_numpy(z[..., i]) for i, p in enumerate(law.params)}


def fit_with_draws(law: Law, objective: str, x: Mapping[str, np.ndarray], y: np.ndarray, *,
             weights: np.ndarray | None = None, y_draws: np.ndarray | None = None,
             w_draws: np.ndarray | None = None, flop_convention: str | None = None, k: float | None = None,
             bootstrap_info: Mapping | None = None, provenance: Mapping | None = None,
             target: str | None = None):
    """Multistart fit (the law's default grid) plus refits on given draws; returns a FittedLaw.

    ``y_draws``/``w_draws`` [B, n] are bootstrap datasets on the same covariates (weights 0 leave
    points out); each is refitted from the full-data optimum and gives one sample of the params.
    ``target`` names what y is in the file's ``data.target`` (default: the law's target).
    Returns ``(FittedLaw, ok)``: ``ok`` [B] marks the draws whose refit succeeded, in the order of
    the samples (None without samples), so that draws of several laws can be paired.
    """
    y = np.asarray(y, np.float64)
    n = len(y)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    grid = law.default_grid()
    S = len(grid)
    z, f, ok, f_all = fit_many(law, objective, x, y[None], w[None], grid[None])
    if not ok[0]:
        raise ValueError(f"law {law.name!r}: the fit failed from every start (x = {dict(x)}, y = {y})")
    z_best, f_best = z[0], float(f[0])
    at_best = f_all[0] <= f_best + 1e-6 * abs(f_best)
    params = {kk: float(v) for kk, v in natural_numpy(law, z_best).items()}
    samples = None
    boot = None
    if y_draws is not None and len(y_draws):
        B = len(y_draws)
        zb, _, okb, _ = fit_many(law, objective, x, y_draws, w_draws, np.broadcast_to(z_best, (B, len(z_best))))
        if okb.any():
            samples = {kk: v for kk, v in natural_numpy(law, zb[okb]).items()}
        boot = dict(bootstrap_info or {})
        boot.update(draws=int(B), failed=int((~okb).sum()))
    pred = evaluate(law, params, x)
    residuals = (np.log(y) - np.log(pred)) if objective in LOG_OBJECTIVES else (y - pred)
    fit_info = {
        "objective": objective, "objective_value": f_best, "normalisation": "weighted sum over points",
        "weighted": weights is not None, "n_starts": int(S), "n_failed": int((~np.isfinite(f_all[0])).sum()),
        "n_starts_at_best": int(at_best.sum()), "bootstrap": boot,
        "solver": "scaling.fitting.run_solver, batched (scaling.fitting.fit_many)", "device": describe_engine(),
        "residual_space": "log" if objective in LOG_OBJECTIVES else "linear",
    }
    data_info = {"n_points": int(n), "sha256": data_sha256(dict(x), y, law.target), "target": target or law.target,
                 "ranges": {c: [float(np.min(v)), float(np.max(v))] for c, v in x.items()}}
    prov = {"citation": law.citation, "equation": law.formula}
    prov.update(provenance or {})
    fitted = FittedLaw(law, params, samples=samples, flop_convention=flop_convention, k=k, data=data_info,
                       fit=fit_info, provenance=prov, residuals=residuals)
    return fitted, (okb if samples is not None else None)


