"""Compute-optimal questions to a fitted loss law: `compute_optimal`, `compute_for_loss` (the numerics
are `scaling.fitting.optimum`); `FittedLaw.compute_optimal` and `FittedLaw.compute_for_loss` call these.

For a law with ``allocation = ("N", "D")`` and ``C = k N D`` (the fitted law's FLOP convention):
the loss-minimizing N and D at budgets C, with bands over the fit's parameter draws
(`FittedLaw.draws`), and the budget that reaches a loss. Chinchilla's frontier is closed-form
(Hoffmann et al. 2022, Eq. 4); any other law is minimized numerically. A frontier law (a law of C
fitted to an isoFLOP approach's N_opt, D_opt or loss_opt; ``data.target`` says which) answers with
its prediction at C. Every answer carries ``"diagnostics"``: the fit's `FittedLaw.diagnostics`
(empty when the fit is sound); where it is not empty, the answer is derived from an unreliable fit.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from scaling.fitting import optimum as optimum_lib
from scaling.fitting.fitted_file import _finite_float

FRONTIER_TARGETS = ("N_opt", "D_opt", "loss_opt")   # data.target of a law fitted to an approach's frontier


def _shaped(arr, shape):
    arr = np.asarray(arr, dtype=np.float64).reshape(shape)
    return float(arr) if arr.ndim == 0 else arr


def _allocation(fitted) -> tuple[str, str]:
    law = fitted.law
    if law.allocation is None:
        raise ValueError(
            f"law {law.name!r} has no allocation (N, D): compute_optimal and compute_for_loss minimize a loss "
            f"law L(N, D) along C = k N D. Law {law.name!r} maps {list(law.covariates)} -> {law.target!r}: use "
            f"fitted.predict({', '.join(f'{c}=...' for c in law.covariates)}) (with level=0.95 for a band) for its "
            "values; a law of C fitted to an isoFLOP approach's N_opt, D_opt or loss_opt answers compute_optimal "
            "when its data.target says which (FittedLaw(..., data={'target': 'N_opt'}))")
    return law.allocation


def _closed_form(fitted) -> bool:
    return optimum_lib.closed_form(fitted.law)


def _optimum(fitted, params: Mapping[str, np.ndarray], C: np.ndarray, fixed: Mapping[str, float]):
    """(N, D, loss) at the compute optimum; params arrays [S], C [M] -> arrays [S, M]."""
    _allocation(fitted)
    return optimum_lib.optimum(fitted.law, fitted.k, params, C, fixed)


def _fixed(fitted, fixed: Mapping[str, float]) -> dict:
    n_name, d_name = _allocation(fitted)
    others = [c for c in fitted.law.covariates if c not in (n_name, d_name)]
    missing = [c for c in others if c not in fixed]
    if missing:
        raise ValueError(f"law {fitted.law.name!r} also needs covariates {missing} held fixed, e.g. "
                         f"compute_optimal(C, {missing[0]}=...)")
    unknown = set(fixed) - set(others)
    if unknown:
        raise ValueError(f"unknown fixed covariates {sorted(unknown)}; law takes {others}")
    return {c: _finite_float(fixed[c], c) for c in others}


def compute_optimal(fitted, C, level: float = 0.95, **fixed) -> dict:
    """Loss-minimizing N and D for compute budgets ``C = k N D`` (vectorized over C).

    Returns ``{"C", "N", "D", "loss", "tokens_per_param"}`` (arrays shaped like C, floats for a
    scalar C), each with an ``*_interval`` ``(lo, hi)`` when draws exist (else None), plus
    ``"k"``, ``"flop_convention"``, ``"method"`` ("closed_form"/"numeric") and
    ``"interval_method"``. Other covariates of the law (if any) are held fixed via keywords.
    Warns (UserWarning) when the optimal N or D lies outside the range the law was fitted on.

    A frontier law (a 1-covariate law of C whose file says ``data.target`` is ``"N_opt"``,
    ``"D_opt"`` or ``"loss_opt"``, e.g. ``fits/approach2_n_opt.json`` of an isoFLOP study)
    answers directly: ``N_opt(C)`` is its prediction at C, with ``D = C / (k N)`` (method
    ``"frontier_law"``; the quantities the file does not describe are None).
    """
    C_arr = np.asarray(C, dtype=np.float64)
    if not np.isfinite(C_arr).all() or (C_arr <= 0).any():
        raise ValueError(f"compute budgets C must be finite and > 0, got {C!r}")
    if _frontier_target(fitted) is not None and not fixed:
        return _frontier_optimal(fitted, C_arr, level)
    fixed = _fixed(fitted, fixed)
    flat = C_arr.reshape(-1)
    point = {n: np.asarray([v]) for n, v in fitted.params.items()}
    n, d, loss = (a[0] for a in _optimum(fitted, point, flat, fixed))
    fitted._warn_range({**dict(zip(_allocation(fitted), (n, d))), **fixed})
    shape = C_arr.shape
    out = {"C": C_arr, "N": n, "D": d, "loss": loss, "tokens_per_param": d / n}
    draws, how = fitted.draws()
    for key in ("N", "D", "loss", "tokens_per_param"):
        out[f"{key}_interval"] = None
    if draws is not None and len(next(iter(draws.values()))):
        nd, dd, ld = _optimum(fitted, draws, flat, fixed)
        for key, arr in (("N", nd), ("D", dd), ("loss", ld), ("tokens_per_param", dd / nd)):
            lo, hi = np.nanpercentile(arr, [50 * (1 - level), 50 * (1 + level)], axis=0)
            out[f"{key}_interval"] = (_shaped(lo, shape), _shaped(hi, shape))
    for key in ("N", "D", "loss", "tokens_per_param"):
        out[key] = _shaped(out[key], shape)
    out["C"] = _shaped(flat, shape)
    out.update(k=fitted.k, flop_convention=fitted.flop_convention,
               method="closed_form" if _closed_form(fitted) else "numeric", interval_method=how,
               diagnostics=fitted.diagnostics())
    return out


def _frontier_target(fitted) -> str | None:
    target = (fitted.data or {}).get("target")
    if fitted.law.allocation is None and len(fitted.law.covariates) == 1 and target in FRONTIER_TARGETS:
        return target
    return None


def _frontier_optimal(fitted, C: np.ndarray, level: float) -> dict:
    """`compute_optimal` of a frontier law (N_opt(C), D_opt(C) or L_opt(C) fitted on C)."""
    target, cov = _frontier_target(fitted), fitted.law.covariates[0]
    flat = C.reshape(-1)
    fitted._warn_range({cov: flat})
    with jax.enable_x64(True):
        y = np.asarray(fitted.law.fn({n: jnp.asarray(v) for n, v in fitted.params.items()}, {cov: jnp.asarray(flat)}))
        draws, how = fitted.draws()
        band = None
        if draws is not None and len(next(iter(draws.values()))):
            ys = np.asarray(fitted.law.fn({n: jnp.asarray(v)[:, None] for n, v in draws.items()},
                                        {cov: jnp.asarray(flat)[None, :]}))
            band = np.nanpercentile(ys, [50 * (1 - level), 50 * (1 + level)], axis=0)
    other = {"N_opt": "D", "D_opt": "N"}.get(target)
    key = {"N_opt": "N", "D_opt": "D", "loss_opt": "loss"}[target]
    out = {k_: None for k_ in ("N", "D", "loss", "tokens_per_param", "N_interval", "D_interval", "loss_interval",
                               "tokens_per_param_interval")}
    out[key] = _shaped(y, C.shape)
    if band is not None:
        out[f"{key}_interval"] = (_shaped(band[0], C.shape), _shaped(band[1], C.shape))
    if other is not None:
        out[other] = _shaped(flat / (fitted.k * y), C.shape)
        if band is not None:   # D = C / (k N): the band maps with its ends swapped
            out[f"{other}_interval"] = (_shaped(flat / (fitted.k * band[1]), C.shape),
                                        _shaped(flat / (fitted.k * band[0]), C.shape))
        n, d = (y, flat / (fitted.k * y)) if key == "N" else (flat / (fitted.k * y), y)
        out["tokens_per_param"] = _shaped(d / n, C.shape)
    out.update(C=_shaped(flat, C.shape), k=fitted.k, flop_convention=fitted.flop_convention, method="frontier_law",
               interval_method=how if band is not None else None, diagnostics=fitted.diagnostics())
    return out


def _budget_for_loss(fitted, params, target: np.ndarray, fixed) -> np.ndarray:
    """Compute C [S, M] at which the optimal loss equals target [M]; inf where unreachable."""
    return optimum_lib.budget_for_loss(fitted.law, fitted.k, params, target, fixed)


def compute_for_loss(fitted, loss, level: float = 0.95, **fixed) -> dict:
    """The compute budget C whose optimal allocation reaches ``loss`` (vectorized), with interval.

    Returns ``{"loss", "C", "C_interval", "N", "D", "tokens_per_param", "k", "flop_convention",
    "interval_method"}``; N, D are the optimal allocation at that C. Raises ValueError when the
    loss is at or below what the law can reach (the irreducible term E for Chinchilla).
    """
    fixed = _fixed(fitted, fixed)
    target = np.asarray(loss, dtype=np.float64)
    if not np.isfinite(target).all():
        raise ValueError(f"loss must be finite, got {loss!r}")
    flat = target.reshape(-1)
    point = {n: np.asarray([v]) for n, v in fitted.params.items()}
    c = _budget_for_loss(fitted, point, flat, fixed)[0]
    if not np.isfinite(c).all():
        if _closed_form(fitted):
            what, floor = "the irreducible loss E", fitted.params["E"]
        else:
            what = f"the optimal loss at C = {optimum_lib.C_MAX:g} FLOPs"
            floor = float(_optimum(fitted, point, np.array([optimum_lib.C_MAX]), fixed)[2][0, 0])
        raise ValueError(f"loss {flat[~np.isfinite(c)].tolist()} is not reachable: it must exceed "
                         f"{what} = {floor:.6g}")
    n, d, _ = (a[0] for a in _optimum(fitted, point, c, fixed))
    fitted._warn_range({**dict(zip(_allocation(fitted), (n, d))), **fixed})
    out = {"loss": _shaped(flat, target.shape), "C": _shaped(c, target.shape), "C_interval": None,
           "N": _shaped(n, target.shape), "D": _shaped(d, target.shape),
           "tokens_per_param": _shaped(d / n, target.shape)}
    draws, how = fitted.draws()
    if draws is not None and len(next(iter(draws.values()))):
        cd = _budget_for_loss(fitted, draws, flat, fixed)
        lo, hi = np.percentile(cd, [50 * (1 - level), 50 * (1 + level)], axis=0)
        out["C_interval"] = (_shaped(lo, target.shape), _shaped(hi, target.shape))
        out["fraction_reachable"] = _shaped(np.isfinite(cd).mean(axis=0), target.shape)
    out.update(k=fitted.k, flop_convention=fitted.flop_convention, interval_method=how,
               diagnostics=fitted.diagnostics())
    return out
