"""Approach 2 of Hoffmann et al. 2022 (Sec. 3.2, "IsoFLOP profiles"): a parabola per budget, then power laws.

Per budget, fit ``loss = c0 + c1 x + c2 x^2``, ``x = ln(N / N_ref)`` (`scaling.laws.parabola`) by
(weighted) least squares and take its vertex; fit N_opt(C), D_opt(C), L_opt(C) to the vertices
(`scaling.analysis.power_laws`). Every parabola, of the data and of every bootstrap draw, is one
row of one batched call of the engine (`scaling.fitting.fit_many`).
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping

import numpy as np

from scaling import flops
from scaling.analysis.power_laws import MIN_BUDGETS_OFFSET, exponents, fit_power_laws, tokens_per_param
from scaling.analysis.results import APPROACH_NAMES, ApproachResult, BudgetMinimum, percentile_interval
from scaling.analysis.runs import MIN_SIZES, Runs, check_common, prepare_runs
from scaling.fitting.batched import fit_many, natural_numpy
from scaling.fitting.fitted import FittedLaw
from scaling.laws.parabola import PARABOLA


FIT_WINDOW = 3.0        # default: sizes within a factor 3 of the best measured run's N ...
MIN_FIT_SIZES = 5       # ... and at least the 5 sizes nearest to it (in ln N)
WIDE_DECADES = 1.5      # a parabola over more than 1.5 decades of N is flagged as too wide
MIN_SIDE_SIZES = 2      # a vertex with fewer sizes than this on one side is flagged as lopsided


def select_points(N, L, window: float | None = FIT_WINDOW, min_sizes: int = MIN_FIT_SIZES):
    """Which runs of one budget its parabola uses: ``(mask, rule)``.

    The rule: the distinct sizes within a factor ``window`` of the size of the run with the lowest
    loss (``|ln N - ln N_best| <= ln window``); when fewer than ``min_sizes`` sizes are that close,
    the ``min_sizes`` sizes nearest to N_best in ln N; every run of a chosen size. ``window=None``
    uses every run (the whole profile). A parabola in ln N is the Taylor expansion of the isoFLOP
    profile at its minimum: far from it, the profile's skew (for L = E + A/N^alpha + B/D^beta, a
    third derivative proportional to beta - alpha) biases the vertex, by an amount that changes with
    where the minimum sits in the sampled range, and so biases the exponents (up to 0.07 on published
    three-decade profiles; tests/test_isoflop.py measures it on synthetic ones).
    """
    N = np.asarray(N, np.float64)
    if window is None:
        return np.ones(len(N), bool), "all runs of the budget"
    if not window > 1:
        raise ValueError(f"fit_window must be a factor > 1 (or None for every run), got {window!r}")
    sizes = np.unique(N)
    centre = np.log(N[int(np.argmin(L))])
    distance = np.abs(np.log(sizes) - centre)
    chosen = distance <= np.log(window) + 1e-12
    if chosen.sum() < min_sizes:
        chosen = np.zeros(len(sizes), bool)
        chosen[np.argsort(distance, kind="stable")[:min_sizes]] = True
    rule = (f"sizes within a factor {window:g} of the best run's N ({sizes[int(np.argmin(distance))]:.4g}), "
            f"at least the {min_sizes} nearest")
    return np.isin(N, sizes[chosen]), rule


def minima(prep: Runs, k: float, bootstrap: int, seed: int, level: float, *,
           fit_window: float | None = FIT_WINDOW, min_fit_sizes: int = MIN_FIT_SIZES):
    """Per-budget parabolas on the data and on ``bootstrap`` within-budget resamples.

    Each budget's parabola uses the runs `select_points` picks (``fit_window``, ``min_fit_sizes``);
    the bootstrap resamples those runs. Returns (budgets, per-budget dicts, log N_opt [J, 1+B],
    L_opt [J, 1+B], valid [J, 1+B]).
    """
    df = prep.df
    budgets = np.sort(df["budget"].unique())
    J, B = len(budgets), int(bootstrap)
    everything = [df[df["budget"] == b] for b in budgets]
    selections = [select_points(g["n_params"].to_numpy(), g["eval_loss"].to_numpy(), fit_window, min_fit_sizes)
                  for g in everything]
    groups = [g[mask] for g, (mask, _) in zip(everything, selections)]
    n_max = max(len(g) for g in groups)
    rng = np.random.default_rng(seed)
    X = np.zeros((J, n_max))
    Y = np.ones((J, n_max))
    W = np.zeros((J, 1 + B, n_max))
    info = []
    for j, g in enumerate(groups):
        N = g["n_params"].to_numpy()
        n_ref = float(np.exp(np.mean(np.log(np.unique(N)))))
        m = len(g)
        X[j, :m] = np.log(N / n_ref)
        Y[j, :m] = g["eval_loss"].to_numpy()
        base = np.ones(m)
        weighted = False
        if prep.has_sem:
            sem = g["eval_loss_sem"].to_numpy()
            if np.isfinite(sem).all():
                base = 1.0 / sem ** 2
                base = base / base.mean()
                weighted = True
        counts = np.ones((1 + B, m))
        if B:
            counts[1:] = rng.multinomial(m, np.full(m, 1.0 / m), size=B)
        W[j, :, :m] = counts * base
        info.append({"n_ref": n_ref, "m": m, "weighted": weighted, "N": N, "sizes": np.unique(N)})
    Xr = np.repeat(X[:, None, :], 1 + B, axis=1).reshape(-1, n_max)
    Yr = np.repeat(Y[:, None, :], 1 + B, axis=1).reshape(-1, n_max)
    z0 = np.zeros((J * (1 + B), 3))
    z0[:, 0] = np.repeat([np.mean(Y[j, :info[j]["m"]]) for j in range(J)], 1 + B)
    z, _, ok, _ = fit_many(PARABOLA, "mse", {"x": Xr}, Yr, W.reshape(-1, n_max), z0)
    c = natural_numpy(PARABOLA, z)
    c0, c1, c2 = (c[n].reshape(J, 1 + B) for n in ("c0", "c1", "c2"))
    ok = ok.reshape(J, 1 + B)
    # distinct sizes with positive weight in each resample (a parabola needs three)
    distinct = np.zeros((J, 1 + B), int)
    for j, inf in enumerate(info):
        m = inf["m"]
        size_of = np.searchsorted(inf["sizes"], inf["N"])
        per_size = np.zeros((1 + B, len(inf["sizes"])))
        np.add.at(per_size.T, size_of, W[j, :, :m].T)
        distinct[j] = (per_size > 0).sum(axis=1)
    convex = ok & (c2 > 0) & (distinct >= MIN_SIZES)
    with np.errstate(divide="ignore", invalid="ignore"):
        xv = np.where(convex, -c1 / (2 * c2), np.nan)
        lv = np.where(convex, c0 - c1 * c1 / (4 * c2), np.nan)
    lo = np.array([X[j, :inf["m"]].min() for j, inf in enumerate(info)])[:, None]
    hi = np.array([X[j, :inf["m"]].max() for j, inf in enumerate(info)])[:, None]
    inside = convex & (xv >= lo - 1e-9) & (xv <= hi + 1e-9)
    log_n = xv + np.log([inf["n_ref"] for inf in info])[:, None]
    results = []
    for j, (b, g, inf) in enumerate(zip(budgets, groups, info)):
        N, D, L = g["n_params"].to_numpy(), g["tokens"].to_numpy(), g["eval_loss"].to_numpy()
        all_runs, (used, rule) = everything[j], selections[j]
        N_all, L_all = all_runs["n_params"].to_numpy(), all_runs["eval_loss"].to_numpy()
        k_eff = float(np.median(b / (N * D)))
        best = int(np.argmin(L))
        params = {"c0": float(c0[j, 0]), "c1": float(c1[j, 0]), "c2": float(c2[j, 0])}
        samples = None
        if B and ok[j, 1:].any():
            samples = {n: arr[j, 1:][ok[j, 1:]] for n, arr in (("c0", c0), ("c1", c1), ("c2", c2))}
        x_j = X[j, :inf["m"]]
        resid = L - (params["c0"] + params["c1"] * x_j + params["c2"] * x_j ** 2)
        parabola = FittedLaw(
            PARABOLA, params, samples=samples, k=k,
            data={"n_points": int(inf["m"]), "target": "eval_loss", "ranges": {"x": [float(x_j.min()), float(x_j.max())]}},
            fit={"objective": "mse", "weighted": inf["weighted"],
                 "bootstrap": {"draws": B, "method": "runs resampled within the budget", "seed": int(seed)} if B else None},
            provenance={"citation": PARABOLA.citation, "equation": PARABOLA.formula,
                        "notes": f"budget C = {b:.6g} FLOPs; x = ln(N / {inf['n_ref']:.6g})"},
            residuals=resid)
        n_opt = float(np.exp(log_n[j, 0])) if convex[j, 0] else float("nan")
        loss_opt = float(lv[j, 0]) if convex[j, 0] else float("nan")
        d_opt = b / (k_eff * n_opt) if convex[j, 0] else float("nan")
        valid_b = inside[j, 1:]
        span = float(np.log(N.max() / N.min()))
        flags = []
        if span > WIDE_DECADES * np.log(10):
            flags.append(f"budget {b:.4g}: the parabola spans {span / np.log(10):.2f} decades of N (> {WIDE_DECADES:g}): "
                         "too wide for a parabola in ln N, the vertex is biased (use fit_window=)")
        if convex[j, 0]:
            sides = (np.unique(N[N < n_opt]).size, np.unique(N[N > n_opt]).size)
            if min(sides) < MIN_SIDE_SIZES:
                flags.append(f"budget {b:.4g}: lopsided profile: {sides[0]} size(s) below and {sides[1]} above the "
                             f"vertex N = {n_opt:.4g}; the minimum is poorly bracketed")
        if inside[j, 0]:
            suggestion = {"direction": None, "n_center": n_opt}
        else:
            toward_small = (convex[j, 0] and n_opt < N.min()) or (not convex[j, 0] and N[best] == N.min())
            edge = N.min() if toward_small else N.max()
            guess = n_opt if convex[j, 0] else float("nan")
            limit = edge * math.exp((-1 if toward_small else 1) * span / 2)
            if not np.isfinite(guess) or (toward_small and guess < limit) or (not toward_small and guess > limit):
                guess = limit
            suggestion = {"direction": "smaller" if toward_small else "larger", "n_center": float(guess)}
        results.append(dict(
            budget=float(b), n_runs=int(len(all_runs)), n_sizes=int(np.unique(N_all).size),
            n_range=(float(N.min()), float(N.max())), n_ref=inf["n_ref"], coefficients=params,
            convex=bool(convex[j, 0]), minimum_inside=bool(inside[j, 0]), n_opt=n_opt,
            n_opt_interval=percentile_interval(np.exp(log_n[j, 1:][valid_b]), level) if B else None,
            d_opt=float(d_opt), loss_opt=loss_opt,
            loss_opt_interval=percentile_interval(lv[j, 1:][valid_b], level) if B else None,
            tokens_per_param=float(d_opt / n_opt) if convex[j, 0] else float("nan"), k_effective=k_eff,
            best_run={"n_params": float(N[best]), "tokens": float(D[best]), "eval_loss": float(L[best])},
            weighted=inf["weighted"], used_in_fit=False, suggestion=suggestion,
            bootstrap_valid_fraction=float(valid_b.mean()) if B else None,
            residual_rms=float(np.sqrt(np.mean(resid ** 2))), sizes=N_all.tolist(), losses=L_all.tolist(),
            parabola=parabola, used=used.tolist(), fit_rule=rule, flags=flags))
    return budgets, results, log_n, lv, inside


def isoflop_minima(runs, *, columns: Mapping[str, str] | None = None, flop_convention: str | None = None,
                   k: float | None = None, bootstrap: int = 0, seed: int = 0, level: float = 0.95,
                   drop_small_budgets: bool = False, fit_window: float | None = FIT_WINDOW,
                   min_fit_sizes: int = MIN_FIT_SIZES) -> list[BudgetMinimum]:
    """The per-budget parabola minima only (cheap): what a grid harness needs to re-centre budgets.

    Each `BudgetMinimum` says whether its minimum lies inside the sampled sizes
    (``minimum_inside``) and, when not, which way to move the grid (``suggestion``).
    """
    k_val, _ = flops.convention_k(flop_convention, k)
    prep = prepare_runs(runs, columns, drop_small_budgets=drop_small_budgets)
    _, results, _, _, _ = minima(prep, k_val, bootstrap, seed, level, fit_window=fit_window,
                                 min_fit_sizes=min_fit_sizes)
    return [BudgetMinimum(**r) for r in results]




def approach2(runs, *, columns: Mapping[str, str] | None = None, flop_convention: str | None = None,
              k: float | None = None, bootstrap: int = 1000, seed: int = 0, level: float = 0.95,
              use_outside: bool = False, drop_small_budgets: bool = False,
              min_budgets_offset: int = MIN_BUDGETS_OFFSET, fit_window: float | None = FIT_WINDOW,
              min_fit_sizes: int = MIN_FIT_SIZES) -> ApproachResult:
    """Approach 2 (isoFLOP profiles): a parabola per budget, then power laws in C of its minima.

    Args:
      runs: one row per run: ``budget`` (nominal C of the isoFLOP), ``n_params``, ``tokens``,
        ``eval_loss``; optional ``eval_loss_sem`` (weights), ``flops``, ``status`` (only
        "completed" rows are used), ``run_id``. ``columns`` maps these names to yours.
      flop_convention, k: how C relates to N and D (``C = k N D``), stored on the fitted laws.
      bootstrap: draws that resample runs within every budget (0: no intervals).
      use_outside: also fit budgets whose (convex) minimum lies outside the sampled sizes.
      drop_small_budgets: leave out budgets with fewer than 3 sizes instead of raising.
      min_budgets_offset: L_opt(C) gets an offset E (`power_law`) from this many budgets on,
        else it is a `pure_power_law`.
      fit_window, min_fit_sizes: each budget's parabola is fitted near its minimum: to the sizes
        within a factor ``fit_window`` of the best run's N, at least the ``min_fit_sizes`` nearest
        (`select_points`; ``fit_window=None``: every run). Each `BudgetMinimum` records the runs it
        used (``used``, ``fit_rule``); a profile too wide (> 1.5 decades) or lopsided (fewer than
        2 sizes on one side of the vertex) is flagged in its ``flags``, in the notes, and warned.
    """
    check_common(bootstrap, level)
    k_val, conv = flops.convention_k(flop_convention, k)
    prep = prepare_runs(runs, columns, drop_small_budgets=drop_small_budgets)
    budgets, res, log_n, lv, inside = minima(prep, k_val, bootstrap, seed, level, fit_window=fit_window,
                                             min_fit_sizes=min_fit_sizes)
    notes = []
    for r in res:
        for flag in r["flags"]:
            warnings.warn(f"Approach 2: {flag}", UserWarning, stacklevel=2)
            notes.append(flag)
    usable = np.array([r["minimum_inside"] or (use_outside and r["convex"]) for r in res])
    for r, u in zip(res, usable):
        r["used_in_fit"] = bool(u)
        if not r["minimum_inside"]:
            notes.append(f"budget {r['budget']:.4g}: minimum {'outside the sampled sizes' if r['convex'] else 'not found (parabola not convex)'}"
                         f" -> {'used' if u else 'left out of the power laws'}; suggestion: {r['suggestion']}")
    budget_minima = [BudgetMinimum(**r) for r in res]
    C = budgets[usable]
    points = {"C": C, "N_opt": np.array([r["n_opt"] for r in res])[usable],
              "D_opt": np.array([r["d_opt"] for r in res])[usable],
              "loss_opt": np.array([r["loss_opt"] for r in res])[usable]}
    if usable.sum() < 2:
        notes.append(f"only {int(usable.sum())} budget(s) with a usable minimum: no power laws fitted; "
                     "widen or re-centre the grids (see each budget's suggestion)")
        return ApproachResult(2, APPROACH_NAMES[2], conv, None, None, None, None, points, [],
                              budgets=budget_minima, notes=notes)
    if usable.sum() == 2:
        notes.append("only 2 budgets: the power laws pass exactly through both minima")
    offset = usable.sum() >= min_budgets_offset
    if not offset:
        notes.append(f"L_opt(C) is a pure power law (A C^b): {int(usable.sum())} budgets are too few to "
                     f"determine an offset (needs {min_budgets_offset})")
    k_eff = np.array([r["k_effective"] for r in res])[usable]
    draws = {}
    boot_info = None
    if bootstrap:
        valid = inside[usable][:, 1:].T if not use_outside else np.isfinite(log_n[usable][:, 1:]).T
        valid = valid & (valid.sum(axis=1, keepdims=True) >= 2)
        Nd = np.exp(np.where(valid, log_n[usable][:, 1:].T, 0.0))
        draws = {"w": valid.astype(float), "N": Nd, "D": C / (k_eff * Nd),
                 "L": np.where(valid, lv[usable][:, 1:].T, 1.0)}
        boot_info = {"method": "runs resampled within each budget; parabolas and power laws refitted",
                     "seed": int(seed), "draws_with_2plus_budgets": int(valid.any(axis=1).sum())}
    (n_law, d_law, l_law), (n_ok, d_ok, _) = fit_power_laws(
        C, points["N_opt"], points["D_opt"], points["loss_opt"], None, draws.get("w"), draws.get("N"),
        draws.get("D"), draws.get("L"), conv=conv, k=k, approach=2, boot_info=boot_info, offset=offset,
        notes_extra="points: parabola minima of the isoFLOP curves")
    return ApproachResult(
        2, APPROACH_NAMES[2], conv, n_law, d_law, l_law, exponents(n_law, d_law, l_law, level),
        points, tokens_per_param(n_law, d_law, budgets, level, n_ok, d_ok), budgets=budget_minima, notes=notes,
        bootstrap=boot_info)


