"""Figures of the isoFLOP analysis (`scaling.analysis.isoflop`), drawn with matplotlib's object API.

Every function returns a `matplotlib.figure.Figure` (no pyplot, nothing is displayed); save it
with ``fig.savefig(path)``. The layouts follow Hoffmann et al. 2022, Figs. 2-4:

- `plot_isoflop_curves`: final loss against N per budget, the fitted parabolas and their minima
  (filled star: inside the sampled sizes; hollow: outside or not convex). One line per budget.
- `plot_training_envelope`: the training curves (loss against FLOPs) and Approach 1's envelope.
- `plot_compute_optimal`: N_opt(C) and D_opt(C) of every approach, with bootstrap bands; one line
  per approach on each panel, told apart by colour, line style and label (with a, b).
- `plot_isoloss_frontier`: iso-loss contours of a fitted L(N, D) with the efficient frontier and
  the isoFLOP lines (Hoffmann et al. Fig. 4, left), drawn by `scaling.plots.plot_isoloss`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from scaling.analysis.results import ApproachResult, BudgetMinimum, predict_band
from scaling.fitting.fitted import FittedLaw
from scaling.plots.laws import plot_isoloss

STYLES = {1: ("tab:blue", "-", "o"), 2: ("tab:orange", "--", "s"), 3: ("tab:green", ":", "^")}


def _budget_colors(budgets):
    cmap = colormaps["viridis"]
    lb = np.log10(np.asarray(budgets, float))
    span = max(lb.max() - lb.min(), 1e-12)
    return [cmap(0.9 * (v - lb.min()) / span) for v in lb]


def plot_isoflop_curves(result: ApproachResult | Sequence[BudgetMinimum], *, figsize=(6.5, 4.5)) -> Figure:
    """IsoFLOP profiles: each budget's runs, its fitted parabola (one line per budget) and minimum."""
    budgets = result.budgets if isinstance(result, ApproachResult) else list(result)
    if not budgets:
        raise ValueError("plot_isoflop_curves: no budgets to draw (give an Approach 2 result)")
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    colors = _budget_colors([b.budget for b in budgets])
    for b, color in zip(budgets, colors):
        sizes = np.asarray(b.sizes, float)
        ax.scatter(sizes, b.losses, color=color, s=14, alpha=0.8)
        lo, hi = b.n_range
        grid = np.geomspace(lo / 1.3, hi * 1.3, 100)
        ax.plot(grid, b.predict_loss(grid), color=color, lw=1.4, ls="-" if b.convex else "--",
                label=f"C = {b.budget:.2g}")
        if b.convex and np.isfinite(b.n_opt):
            ax.scatter([b.n_opt], [b.loss_opt], marker="*", s=140, zorder=3,
                       facecolors=color if b.minimum_inside else "none", edgecolors="k", linewidths=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final loss")
    ax.set_title("IsoFLOP profiles (Approach 2); hollow star: minimum outside the sampled sizes", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_training_envelope(curves, result: ApproachResult, *, columns=None, max_runs: int = 400,
                           figsize=(6.5, 4.5)) -> Figure:
    """Approach 1: every training curve (loss against FLOPs, coloured by N) and the envelope points."""
    if result.approach != 1:
        raise ValueError(f"plot_training_envelope needs an Approach 1 result, got approach {result.approach}")
    cols = {c: (columns or {}).get(c, c) for c in ("run_id", "n_params", "flops", "loss")}
    missing = [v for v in cols.values() if v not in curves.columns]
    if missing:
        raise ValueError(f"plot_training_envelope: curves are missing columns {missing}")
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    sizes = curves[cols["n_params"]].to_numpy(float)
    norm = LogNorm(sizes.min(), max(sizes.max(), sizes.min() * 1.001))
    cmap = colormaps["viridis"]
    for i, (_, g) in enumerate(curves.groupby(cols["run_id"], sort=False)):
        if i >= max_runs:
            break
        g = g.sort_values(cols["flops"])
        ax.plot(g[cols["flops"]], g[cols["loss"]], color=cmap(norm(g[cols["n_params"]].iloc[0])), lw=0.6, alpha=0.6)
    pts = result.points
    ax.scatter(pts["C"], pts["loss_opt"], s=6, color="k", zorder=3, label="envelope (used in the fits)")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs C")
    ax.set_ylabel("loss")
    fig.colorbar(_mappable(norm, cmap), ax=ax, label="parameters N")
    ax.legend(fontsize=8)
    return fig


def _mappable(norm, cmap):
    from matplotlib.cm import ScalarMappable
    return ScalarMappable(norm=norm, cmap=cmap)


POINT_NAMES = {1: "envelope", 2: "parabola minima", 3: "L(N, D) optimum at each budget"}


def plot_compute_optimal(results: Sequence[ApproachResult], *, C_range=None, level: float = 0.95,
                         figsize=(11, 4.4)) -> Figure:
    """N_opt(C) (left) and D_opt(C) (right) for every approach, with central ``level`` bands.

    Per approach: its band (under everything), its power law (a line), and the points it was fitted
    to (markers, drawn above every line, white-edged, so no approach's points hide behind another's
    line). The legend has one entry per approach for its line and band and one for its points.
    """
    from matplotlib.patches import Patch

    results = [r for r in results if r is not None and r.n_opt_law is not None]
    if not results:
        raise ValueError("plot_compute_optimal: no result with fitted N_opt(C), D_opt(C)")
    if C_range is None:
        lo = min(r.n_opt_law.data["ranges"]["x"][0] for r in results)
        hi = max(r.n_opt_law.data["ranges"]["x"][1] for r in results)
        C_range = (lo / 3, hi * 10)
    C = np.geomspace(C_range[0], C_range[1], 200)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, law_attr, ylabel in ((axes[0], "N_opt", "n_opt_law", "optimal parameters N_opt"),
                                      (axes[1], "D_opt", "d_opt_law", "optimal tokens D_opt")):
        handles, labels = [], []
        for r in results:
            color, ls, marker = STYLES.get(r.approach, ("tab:gray", "-.", "x"))
            law: FittedLaw = getattr(r, law_attr)
            y, blo, bhi = predict_band(law, C, level)
            ex = r.exponents
            exp_name, exp_val, exp_iv = ("a", ex.a, ex.a_interval) if key == "N_opt" else ("b", ex.b, ex.b_interval)
            iv = "" if exp_iv is None else f" [{exp_iv[0]:.3f}, {exp_iv[1]:.3f}]"
            label = f"Approach {r.approach}: {exp_name} = {exp_val:.3f}{iv}"
            (line,) = ax.plot(C, y, color=color, ls=ls, lw=1.8, zorder=2, label=label)
            handle = line
            if blo is not None:
                ax.fill_between(C, blo, bhi, color=color, alpha=0.15, lw=0, zorder=1)
                handle = (Patch(color=color, alpha=0.15, lw=0), line)
            handles.append(handle)
            labels.append(label)
            px, py = np.asarray(r.points["C"], float), np.asarray(r.points[key], float)
            if px.size > 60:  # thin the envelope of Approach 1
                keep = np.unique(np.linspace(0, px.size - 1, 60).astype(int))
                px, py = px[keep], py[keep]
            many = px.size > 20
            points_label = f"Approach {r.approach} points: {POINT_NAMES.get(r.approach, 'fitted points')}"
            dots = ax.scatter(px, py, color=color, marker=marker, s=14 if many else 36, zorder=5 + r.approach,
                              edgecolors="white", linewidths=0.5, alpha=0.7 if many else 1.0, label=points_label)
            handles.append(dots)
            labels.append(points_label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"training FLOPs C ({results[0].flop_convention})")
        ax.set_ylabel(ylabel)
        ax.legend(handles, labels, fontsize=7, loc="upper left")
    fig.suptitle(f"Compute-optimal allocation (lines: power laws in C; shaded: {int(level * 100)}% bootstrap bands)",
                 fontsize=10)
    return fig


def plot_isoloss_frontier(fitted: FittedLaw | ApproachResult, *, budgets=None, N_range=None, D_range=None,
                          levels=None, figsize=(6.5, 4.8)) -> Figure:
    """Iso-loss contours of a fitted L(N, D), the efficient frontier and the isoFLOP lines.

    Draws with `scaling.plots.plot_isoloss` (contours in the (N, D) plane, the frontier from
    ``FittedLaw.compute_optimal`` and a dashed line D = C / (k N) with its optimum per budget).
    Given an Approach 3 result, its budgets are drawn unless ``budgets`` says otherwise.
    """
    if isinstance(fitted, ApproachResult):
        if fitted.parametric is None:
            raise ValueError("plot_isoloss_frontier needs an Approach 3 result (a parametric L(N, D))")
        if budgets is None:
            budgets = np.asarray(fitted.points["C"], float)
        fitted = fitted.parametric
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    plot_isoloss(fitted, ax=ax, N_range=N_range, D_range=D_range, budgets=budgets, levels=levels)
    return fig
