"""Approach 1 of Hoffmann et al. 2022 (Sec. 3.1, "minimum over training curves"): the envelope, then power laws.

Smooth and interpolate each run's loss curve against cumulative FLOPs; on `n_grid` log-spaced
FLOP values take the run with the lowest loss; fit N_opt(C), D_opt(C), L_opt(C) to that envelope
(`scaling.analysis.power_laws`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from scaling import flops
from scaling.analysis.power_laws import exponents, fit_power_laws, tokens_per_param
from scaling.analysis.results import APPROACH_NAMES, ApproachResult
from scaling.analysis.runs import CURVE_COLUMNS, check_common, column_map, frame, numeric


def _smooth(logf: np.ndarray, y: np.ndarray, width: float) -> np.ndarray:
    """Centred moving average over a window of ``width`` in log10 FLOPs (0: no smoothing)."""
    if width <= 0 or len(y) < 3:
        return y
    lo = np.searchsorted(logf, logf - width / 2, "left")
    hi = np.searchsorted(logf, logf + width / 2, "right")
    cs = np.concatenate([[0.0], np.cumsum(y)])
    return (cs[hi] - cs[lo]) / (hi - lo)


def prepare_curves(curves, columns, max_flops):
    df = frame(curves, "curves")
    cmap = column_map(columns, CURVE_COLUMNS, "curves")
    required = ["run_id", "n_params", "flops", "loss"]
    missing = [cmap[c] for c in required if cmap[c] not in df.columns]
    if missing:
        raise ValueError(f"curves: missing columns {missing} (available: {list(df.columns)}); "
                         "map names with columns={'loss': 'train_loss', ...}")
    N = numeric(df, cmap["n_params"], "curves")
    f = numeric(df, cmap["flops"], "curves")
    L = numeric(df, cmap["loss"], "curves")
    T = numeric(df, cmap["tokens"], "curves") if cmap["tokens"] in df.columns else None
    ids = df[cmap["run_id"]].astype(str).to_numpy()
    runs = []
    for rid in pd.unique(ids):
        m = ids == rid
        if np.unique(N[m]).size != 1:
            raise ValueError(f"curves: run {rid!r} has several n_params values {np.unique(N[m]).tolist()}")
        order = np.argsort(f[m], kind="stable")
        lf = np.log10(f[m][order])
        uniq, inv = np.unique(lf, return_inverse=True)
        loss = np.bincount(inv, L[m][order]) / np.bincount(inv)
        tok = None if T is None else np.bincount(inv, T[m][order]) / np.bincount(inv)
        if uniq.size < 2:
            raise ValueError(f"curves: run {rid!r} has {uniq.size} distinct FLOP value(s); a curve needs 2 or more")
        runs.append({"run_id": rid, "N": float(N[m][0]), "logf": uniq, "loss": loss, "tokens": tok})
    if max_flops is not None:
        runs = [r for r in runs if 10 ** r["logf"][-1] <= max_flops]
    if len({r["N"] for r in runs}) < 3:
        raise ValueError(f"curves: runs of {len({r['N'] for r in runs})} model size(s); the envelope needs at least 3")
    return runs


def approach1(curves, *, columns: Mapping[str, str] | None = None, flop_convention: str | None = None,
              k: float | None = None, n_grid: int = 1500, smooth_dex: float = 0.05,
              exclude_boundary: bool = True, bootstrap: int = 200, seed: int = 0, level: float = 0.95,
              max_flops: float | None = None) -> ApproachResult:
    """Approach 1: the lower envelope of the loss-vs-FLOPs training curves, then power laws in C.

    Args:
      curves: one row per logged point: ``run_id``, ``n_params``, ``flops`` (cumulative training
        FLOPs), ``loss``; optional ``tokens`` (cumulative tokens; else D = C / (k N)).
      n_grid: log-spaced FLOP values of the envelope (Hoffmann et al.: 1500).
      smooth_dex: width of the centred moving average applied to each curve, in log10 FLOPs.
      exclude_boundary: leave out envelope points won by the smallest or the largest model size
        among the runs that reach that FLOP count (the optimum may lie beyond them).
      bootstrap: draws resampling whole runs with replacement (the envelope is recomputed).
      max_flops: use only runs whose last point is at most this many FLOPs (for held-out checks).
    """
    check_common(bootstrap, level)
    if int(n_grid) < 10:
        raise ValueError(f"n_grid must be >= 10, got {n_grid}")
    k_val, conv = flops.convention_k(flop_convention, k)
    runs = prepare_curves(curves, columns, max_flops)
    R = len(runs)
    lo = min(r["logf"][0] for r in runs)
    hi = max(r["logf"][-1] for r in runs)
    grid = np.linspace(lo, hi, int(n_grid))
    Lmat = np.full((R, grid.size), np.inf)
    Tmat = np.full((R, grid.size), np.nan)
    sizes = np.array([r["N"] for r in runs])
    for i, r in enumerate(runs):
        inside = (grid >= r["logf"][0]) & (grid <= r["logf"][-1])
        Lmat[i, inside] = np.interp(grid[inside], r["logf"], _smooth(r["logf"], r["loss"], smooth_dex))
        if r["tokens"] is not None:
            Tmat[i, inside] = 10 ** np.interp(grid[inside], r["logf"], np.log10(r["tokens"]))
        else:
            Tmat[i, inside] = 10 ** grid[inside] / (k_val * r["N"])
    rng = np.random.default_rng(seed)
    B = int(bootstrap)
    include = np.ones((1 + B, R), bool)
    if B:
        include[1:] = rng.multinomial(R, np.full(R, 1.0 / R), size=B) > 0
    Nw = np.full((1 + B, grid.size), np.nan)
    Dw = np.full_like(Nw, np.nan)
    Lw = np.full_like(Nw, np.nan)
    valid = np.zeros_like(Nw, bool)
    for s in range(0, 1 + B, 16):
        inc = include[s:s + 16]
        Ls = np.where(inc[:, :, None], Lmat[None], np.inf)
        win = np.argmin(Ls, axis=1)
        lmin = np.take_along_axis(Ls, win[:, None, :], 1)[:, 0]
        ok = np.isfinite(lmin)
        n_win = sizes[win]
        if exclude_boundary:  # the winner must have a smaller and a larger competitor at that C
            cand = np.isfinite(Ls)
            smin = np.where(cand, sizes[None, :, None], np.inf).min(axis=1)
            smax = np.where(cand, sizes[None, :, None], -np.inf).max(axis=1)
            ok &= (n_win > smin) & (n_win < smax)
        Nw[s:s + 16] = n_win
        Dw[s:s + 16] = Tmat[win, np.arange(grid.size)[None, :]]
        Lw[s:s + 16] = lmin
        valid[s:s + 16] = ok
    distinct = np.array([np.unique(Nw[i][valid[i]]).size for i in range(1 + B)])
    if distinct[0] < 2:
        raise ValueError(f"curves: the envelope (away from the smallest and largest sizes) is won by "
                         f"{distinct[0]} model size(s); it needs at least 2 (add sizes or runs)")
    valid &= (distinct >= 2)[:, None]
    C = 10 ** grid
    v0 = valid[0]
    points = {"C": C[v0], "N_opt": Nw[0, v0], "D_opt": Dw[0, v0], "loss_opt": Lw[0, v0]}
    boot_info = None
    dw = dN = dD = dL = None
    # fit on grid points valid in the full data or in any draw (zero weight elsewhere)
    cols = v0 | valid[1:].any(axis=0) if B else v0
    w0 = v0[cols].astype(float)
    fill = lambda a, v: np.where(v, a, 1.0)  # noqa: E731
    if B:
        dw = valid[1:, cols].astype(float)
        dN, dD, dL = (fill(a[1:, cols], valid[1:, cols]) for a in (Nw, Dw, Lw))
        boot_info = {"method": "runs resampled with replacement; envelope and power laws recomputed",
                     "seed": int(seed)}
    (n_law, d_law, l_law), (n_ok, d_ok, _) = fit_power_laws(
        C[cols], fill(Nw[0, cols], v0[cols]), fill(Dw[0, cols], v0[cols]), fill(Lw[0, cols], v0[cols]), w0,
        dw, dN, dD, dL, conv=conv, k=k, approach=1, boot_info=boot_info, offset=True,
        notes_extra=f"points: lower envelope of {R} training curves on {int(n_grid)} log-spaced FLOP values"
                    f"{', boundary sizes excluded' if exclude_boundary else ''}")
    for f in (n_law, d_law, l_law):  # the ranges the laws were fitted on: the envelope's valid points
        f.data["ranges"] = {"x": [float(points["C"].min()), float(points["C"].max())]}
        f.data["n_points"] = int(v0.sum())
    notes = [f"{int(v0.sum())} of {int(n_grid)} envelope points used; winning sizes: "
             f"{sorted({float(n) for n in points['N_opt']})}"]
    ref = np.unique(np.geomspace(points["C"].min(), points["C"].max(), 5))
    return ApproachResult(1, APPROACH_NAMES[1], conv, n_law, d_law, l_law, exponents(n_law, d_law, l_law, level),
                          points, tokens_per_param(n_law, d_law, ref, level, n_ok, d_ok), notes=notes,
                          bootstrap=boot_info)


