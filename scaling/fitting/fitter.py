"""`scaling.fit`: fit a `Law` to data with a vectorized multistart second-order solver and bootstrap.

The fitting protocol generalizes Epoch AI's refit of Chinchilla (Besiroglu et al. 2024,
"Chinchilla Scaling: A replication attempt", arXiv:2404.10102, Sec. 2 and their notebook
`data_analysis.ipynb`): minimize a robust objective of the log-residuals (`scaling.fitting.objectives`)
from every start of a grid with the engine's solver (`scaling.fitting.solver`; Huber objectives
through `scaling.fitting.continuation`), keep the best optimum, and refit on bootstrap resamples
of the points for intervals.

Bootstrap: resamples of the points are multinomial count weights (``w_i * c_i``, sum c_i = n),
refitted with the same compiled solver, vmapped over resamples, each from the ``bootstrap_starts``
best distinct optima of the full-data multistart; the best refit of each resample is its draw.
With the bootstrap, ``n`` leave-one-point-out refits (the jackknife, from the best optimum, in one
vectorized solve) give BCa's acceleration per parameter. Deterministic for a seed. Intervals are BCa
by default, or percentiles of the draws (`FittedLaw.interval`, `scaling.fitting.intervals`). A
maximum-likelihood fit (``objective="nll"``) also gets profile-likelihood curves, one vectorized
solve with each parameter held on a grid (`scaling.fitting.profile`), and their intervals by default.
"""

from __future__ import annotations

import datetime
import functools
import time
import warnings
from typing import Mapping

import jax
import numpy as np

from scaling import flops
from scaling.fitting import diagnostics, intervals, objectives, profile
from scaling.fitting.continuation import minimize
from scaling.fitting.data import data_sha256, point_weights, prepare_data, starts_to_internal
from scaling.fitting.fitted import FittedLaw
from scaling.fitting.objectives import LOG_OBJECTIVES, natural_values
from scaling.fitting.solver import describe_engine, run_solver
from scaling.laws import law as law_lib

EDGE = diagnostics.EDGE   # |internal value| of a one-sided parameter past which it counts as unbounded
REFINE_STARTS = 16        # starts of the direct refinement that checks a continuation's optimum
PATHS_RTOL = 1e-6         # paths that disagree by more than this (relative objective) are reported


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


def fit(law, data, target: str | None = None, *, objective: str | None = None, delta: float = 1e-3,
        weights=None, starts=None, bootstrap: int = 0, seed: int = 0, columns: Mapping[str, str] | None = None,
        bootstrap_starts: int = 3, max_iter: int = 500, ftol: float = 1e-12, xtol: float = 1e-10,
        at_best_rtol: float = 1e-6, continuation: bool = True, refine_starts: int = REFINE_STARTS,
        threads: int | None = None, strata=None,
        flop_convention: str | None = None, k: float | None = None, provenance: Mapping | None = None) -> FittedLaw:
    """Fit ``law`` to ``data`` from many starts, optionally with a bootstrap; returns a `FittedLaw`.

    Args:
      law: a `Law` or a registered law name.
      data: pandas DataFrame or dict of equal-length arrays: one column per covariate and the target.
      target: the target column (default: ``law.target``, through ``columns``).
      objective: one of `OBJECTIVES` (default: ``law.objective``, the objective the law's source
        used, ``law.objective_source``; ``"nll"`` for a law with an nll). The record says which, and
        whether it was the law's or the caller's choice (``fit["objective_chosen_by"]``).
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
        homotopy (see `minimize`); False solves at delta directly from every start. With
        continuation, a direct solve at delta from the ``refine_starts`` starts of lowest initial
        objective checks the result: the better of the two paths is kept, and when the direct
        path wins by more than `PATHS_RTOL` (relative) the fit warns and records it in
        ``fit["paths"]`` and ``fit["diagnostics"]``. ``n_starts_at_best`` counts the starts of the
        main path within ``at_best_rtol`` of the best over both paths. ``refine_starts=0`` turns
        the check off.
      threads: threads feeding the solver at once (default: every available core).
      strata: per-point group labels (array, or a column name): the bootstrap resamples within each
        group, keeping its size (a stratified bootstrap: two recipes' runs fitted jointly, one of
        them with few runs, are each resampled on their own, so no resample loses a recipe).
      at_best_rtol: a start counts in ``n_starts_at_best`` when its objective is within
        ``at_best_rtol * |best|`` of the best.
      flop_convention, k: how compute relates to N and D (``C = k N D``), see `scaling.flops.convention_k`.
      provenance: extra provenance entries (citation, notes, ...).
    """
    t_start = time.perf_counter()
    law = law_lib.get(law) if isinstance(law, law_lib.Law) else _registered(law)
    chosen_by = "caller" if objective is not None else "law"
    objective = objective or ("nll" if law.nll is not None else law.objective)
    objectives.check(law, objective)
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be a positive finite number, got {delta}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative int, got {bootstrap!r}")
    if bootstrap_starts < 1:
        raise ValueError(f"bootstrap_starts must be >= 1, got {bootstrap_starts}")
    flops.convention_k(flop_convention, k)  # validates
    x, y, target_col = prepare_data(law, data, target, columns, objective)
    n = len(y)
    w = point_weights(weights, data, n)
    degeneracy = []
    if law.degeneracy is not None:
        used = w > 0
        found = law.degeneracy({c: v[used] for c, v in x.items()}, y[used])
        if found is not None:
            kind, message = found
            if kind == "error":
                raise ValueError(f"law {law.name!r}: {message}")
            warnings.warn(f"law {law.name!r}: {message}", UserWarning, stacklevel=2)
            degeneracy.append(message)
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
    n_main = len(z0)
    f_main = float(np.min(np.where(ok, f, np.inf)))
    found = []   # what the fit is unsure about (scaling.fitting.diagnostics), saved in fit["diagnostics"]

    # the best over both paths: continuation checked against a direct solve from the best starts
    paths = None
    refine_starts = int(refine_starts)
    if refine_starts < 0:
        raise ValueError(f"refine_starts must be >= 0, got {refine_starts}")
    if continuation and objective.startswith("huber") and refine_starts:
        t0 = time.perf_counter()
        wide = np.broadcast_to(w, (len(z0), n))
        first = run_solver(law, objective, delta, z0, wide, x, y_fit, **{**solver_args, "max_iter": 0})
        order = np.argsort(np.where(first["failed"], np.inf, first["f"]), kind="stable")[:refine_starts]
        direct = run_solver(law, objective, delta, z0[order], wide[order], x, y_fit, **solver_args)
        ok_d = ~direct["failed"] & np.isfinite(direct["f"])
        f_direct = float(np.min(np.where(ok_d, direct["f"], np.inf)))
        gap = (f_main - f_direct) / max(abs(min(f_main, f_direct)), 1e-300)
        kept = "direct" if gap > PATHS_RTOL else "continuation"
        paths = {"continuation": f_main, "direct": f_direct if np.isfinite(f_direct) else None,
                 "direct_starts": int(len(order)), "relative_gap": float(gap) if np.isfinite(gap) else None,
                 "kept": kept, "rtol": PATHS_RTOL, "time_s": time.perf_counter() - t0}
        if kept == "direct":   # the continuation settled in a worse basin: keep the direct optimum
            message = (f"the continuation path ended {100 * gap:.3g}% above a direct solve from the "
                       f"{len(order)} best starts ({f_main:.6g} vs {f_direct:.6g}); the direct optimum is "
                       "kept: the objective has several basins, check the fit")
            found.append({"param": None, "kind": "paths", "message": message})
            warnings.warn(f"law {law.name!r}: {message}", UserWarning, stacklevel=2)
            state = {k_: np.concatenate([state[k_], direct[k_]]) for k_ in ("z", "f", "converged", "failed", "it", "h")}
            z, f, converged, failed, iters = (state[key] for key in ("z", "f", "converged", "failed", "it"))
            ok = ~failed & np.isfinite(f)
        paths_refined = (order, direct, ok_d)
    best = int(np.argmin(np.where(ok, f, np.inf)))
    f_best = float(f[best])
    at_best = ok & (f <= f_best + at_best_rtol * abs(f_best))
    if paths is not None:   # the direct starts within at_best_rtol of the best over both paths
        _, direct, ok_d = paths_refined
        paths["direct_at_best"] = int((ok_d & (direct["f"] <= f_best + at_best_rtol * abs(f_best))).sum())
    params = {k_: float(v) for k_, v in natural_values(law, z[best]).items()}
    for entry in diagnostics.at_edges(law, params):   # a parameter the data do not bound, or on a bound
        found.append(entry)
        warnings.warn(f"law {law.name!r}: {entry['message']}", UserWarning, stacklevel=2)
        if entry["kind"] == "edge":
            degeneracy.append(entry["message"])

    # profile likelihood (maximum-likelihood fits): every parameter held on a grid, the rest refitted
    curves = None
    t_profile = 0.0
    if objective == "nll":
        t0 = time.perf_counter()
        curves = profile.profile(law, objective, z[best], f_best, state["h"][best], w, x, y_fit, **solver_args)
        t_profile = time.perf_counter() - t0

    # bootstrap: multinomial count weights, refit from the best distinct optima, keep the best refit
    samples = standard_errors = boot_info = acceleration = None
    t_boot = 0.0
    if bootstrap:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        if strata is None:
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap).astype(np.float64)
        else:
            groups = np.asarray(data[strata] if isinstance(strata, str) else strata)
            if groups.shape != (n,):
                raise ValueError(f"strata: {groups.shape[0] if groups.ndim else 0} labels for {n} points")
            counts = np.zeros((bootstrap, n))
            for g in np.unique(groups):
                idx = np.flatnonzero(groups == g)
                counts[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=bootstrap)
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
            "interval": "bca" if acceleration else "percentile", "jackknife_refits": jackknife_refits,
            **({"stratified": True} if strata is not None else {})}
        if not good.any():
            samples = None

    residuals = objectives.residuals(law, objective, z[best], x, y_fit)
    fit_info = {
        "objective": objective, "objective_value": f_best, "normalisation": "weighted sum over points",
        "delta": float(delta) if objective.startswith("huber") else None,
        "weighted": weights is not None,
        "objective_chosen_by": chosen_by,
        "objective_source": law.objective_source if objective == law.objective else None,
        "n_starts": int(n_main), "n_failed": int((~ok[:n_main]).sum()), "n_converged": int(converged[:n_main].sum()),
        "n_starts_at_best": int(at_best[:n_main].sum()), "at_best_rtol": float(at_best_rtol),
        "paths": paths, "diagnostics": found,
        "iterations_max": int(iters.max()), "iterations_median": float(np.median(iters)),
        "best_start_converged": bool(converged[best]),
        "degeneracy": degeneracy,
        "solver": "exact-Hessian trust-region Newton, jax float64" + (
            "; continuation: coarse least squares, least squares, delta" if continuation
            and objective.startswith("huber") else ""),
        "device": describe_engine(),
        "max_iter": int(max_iter), "max_iter_applies_to": "each continuation stage (iterations_* sum the stages)",
        "ftol": float(ftol), "xtol": float(xtol),
        "bootstrap": boot_info, "seed": int(seed),
        "residual_space": "log" if objective in LOG_OBJECTIVES else "linear",
        "profile": None if curves is None else {"points_per_param": len(profile.OFFSETS) * 2 + 1},
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
    covariance = None
    if objective == "nll":   # the MLE's asymptotic covariance (internal scale): inverse Hessian of the NLL
        covariance = _inverse_hessian(state["h"][best])
    fitted = FittedLaw(law, params, samples=samples, standard_errors=standard_errors, acceleration=acceleration,
                       profile=curves, covariance=covariance, flop_convention=flop_convention, k=k, data=data_info, fit=fit_info,
                       provenance=prov, residuals=residuals)
    z_starts = z0 if len(z) == n_main else np.concatenate([z0, z0[paths_refined[0]]])
    fitted.multistart = {"starts": natural_values(law, z_starts), "optima": natural_values(law, z), "objective": f,
                         "converged": converged, "failed": failed, "iterations": iters, "at_best": at_best,
                         "path": np.array(["continuation" if continuation and objective.startswith("huber")
                                           else "direct"] * n_main + ["direct"] * (len(z) - n_main))}
    if fitted.samples is not None or fitted.profile is not None:   # intervals that span decades
        for entry in diagnostics.wide_intervals(_intervals(fitted)):
            found.append(entry)
            warnings.warn(f"law {law.name!r}: {entry['message']}", UserWarning, stacklevel=2)
        fitted.fit["diagnostics"] = found
    return fitted


def _intervals(fitted: FittedLaw) -> dict:
    out = {}
    for name in fitted.params:
        try:
            out[name] = fitted.interval(name, 0.95)
        except ValueError:
            out[name] = None
    return out


def _inverse_hessian(h) -> np.ndarray | None:
    """The (pseudo-)inverse of a positive semi-definite Hessian, or None when it has negative curvature.

    Directions of (numerically) zero curvature, e.g. alpha and beta of a Beta model going to
    infinity together at a fixed mean, get zero variance: the data say nothing there, and
    predictions along them do not change (that is why they are flat).
    """
    h = np.asarray(h, np.float64)
    if not np.isfinite(h).all():
        return None
    eig, vecs = np.linalg.eigh(0.5 * (h + h.T))
    top = max(abs(eig[-1]), 1e-300)
    if eig[0] < -1e-8 * top or eig[-1] <= 0:
        return None
    inv = np.where(eig > 1e-10 * top, 1.0 / np.where(eig > 0, eig, 1.0), 0.0)
    cov = (vecs * inv) @ vecs.T
    return 0.5 * (cov + cov.T)


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
    return law_lib.get(name)


@functools.cache
def _version() -> str:
    from scaling import __version__   # the package root (already imported: it is this module's parent)
    return __version__
