"""Figures of recipe comparisons, law selections and two-step task predictions (matplotlib's
object API; each function returns the Axes it drew on, or the Figure for several panels).

    fig = scaling.plots.plot_comparison(scaling.compare(table_a, table_b))
    fig.savefig("compare.png")
"""

from __future__ import annotations

import textwrap

import numpy as np


def _figure(ncols: int, width: float = 5.0):
    from matplotlib.figure import Figure
    return Figure(figsize=(width * ncols, 4.0), layout="constrained")


def plot_comparison(comparison, tables=None, C=None, level: float = 0.95):
    """Two panels: each recipe's compute-optimal loss L*(C) with its band (and the runs of
    ``tables``, ``(table_a, table_b)`` with N, D and loss columns, if given), and the compute
    multiplier of recipe b over recipe a against C with its band, 1 and the crossover marked."""
    lo, hi = comparison.compute_range
    C = np.geomspace(lo / 2, hi * 100, 60) if C is None else np.asarray(C, np.float64)
    fig = _figure(2)
    ax_loss, ax_mult = fig.subplots(1, 2)
    colors = ("tab:blue", "tab:orange")
    for (name, band), color in zip(comparison.frontier_loss(C, level).items(), colors):
        ax_loss.plot(C, band.value, color=color, label=f"{name}: L*(C)")
        if band.lower is not None:
            ax_loss.fill_between(C, band.lower, band.upper, color=color, alpha=0.2)
    for t, color in zip(tables or (), colors):
        ax_loss.scatter(comparison.k * np.asarray(t["N"]) * np.asarray(t["D"]), t["loss"], s=8, color=color,
                        alpha=0.6)
    ax_loss.set(xscale="log", xlabel=f"compute C = {comparison.k:g} N D (FLOPs)", ylabel="loss",
                title="compute-optimal loss, joint fit (shared E)")
    ax_loss.legend()
    band = comparison.compute_multiplier(C, level)
    ax_mult.plot(C, band.value, color="k", label=f"{comparison.names[1]} over {comparison.names[0]}")
    if band.lower is not None:
        ax_mult.fill_between(C, band.lower, band.upper, color="k", alpha=0.15, label=f"{level:.0%} bootstrap band")
    ax_mult.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax_mult.axvspan(hi, C.max(), color="gray", alpha=0.07, label="beyond the runs")
    cross = comparison.crossover()
    if cross["C"] is not None:
        ax_mult.axvline(cross["C"], color="tab:red", lw=1, label=f"crossover {cross['C']:.2g}")
    ax_mult.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="effective compute multiplier",
                title="compute multiplier m(C)")
    ax_mult.legend(fontsize="small")
    return fig


def plot_selection(selection, ax=None):
    """Each candidate's extrapolation error per held-out level (dots) and its median (bar), best first."""
    if ax is None:
        ax = _figure(1).add_subplot()
    table = selection.table
    levels = [c for c in table.columns if c.startswith("error@")]
    x = np.arange(len(table))
    ax.bar(x, table["score"], color="lightgray", label="median over splits")
    for j, col in enumerate(levels):
        ax.scatter(x + (j - (len(levels) - 1) / 2) * 0.12, table[col], s=18, zorder=3,
                   label=f"held out {col.removeprefix('error@')}")
    ax.set_xticks(x, [textwrap.fill(str(label), 16) for label in table["law"]], fontsize="small")
    held = selection.holdout.split(":")[0].split(" (")[0]
    ax.set(yscale="log", ylabel=selection.metric.replace("_", " "), title=f"extrapolation error, held out: {held}")
    ax.legend(fontsize="small")
    return ax


def plot_two_step(two_step, data, columns=None, targets=None, level: float = 0.95):
    """Two panels: step 2 (accuracy against task loss, the checkpoints and the fitted law with its
    band) and the chained prediction at ``targets`` (a list of (N, D[, measured]) tuples) with
    bands, drawn on the same task-loss axis at their predicted loss."""
    columns = dict(columns or {})
    target = two_step.target
    L = np.asarray(data[columns.get("task_loss", "task_loss")], np.float64)
    y = np.asarray(data[columns.get(target, target)], np.float64)
    fig = _figure(1, 6.0)
    ax = fig.add_subplot()
    ax.scatter(L, y, s=10, color="tab:blue", label="ladder checkpoints")
    grid = np.linspace(min(L.min(), 0.9 * L.min()), L.max() * 1.02, 120)
    points = [tuple(t) for t in (targets or ())]
    if points:
        pred_losses = [float(two_step.predict_loss(t[0], t[1])) for t in points]
        grid = np.linspace(min(grid.min(), 0.95 * min(pred_losses)), grid.max(), 120)
    band = two_step.predict_from_loss(grid, level=level)
    ax.plot(grid, band.value, color="tab:blue", label=f"step 2: {two_step.accuracy_fit.law.name}")
    if band.lower is not None:
        ax.fill_between(grid, band.lower, band.upper, color="tab:blue", alpha=0.15)
    for t in points:
        b = two_step.predict(t[0], t[1], level=level)
        loss = float(two_step.predict_loss(t[0], t[1]))
        ax.errorbar([loss], [b.value], yerr=[[b.value - b.lower], [b.upper - b.value]], fmt="o", color="tab:red",
                    capsize=3, label=f"predicted, N={t[0]:.2g} D={t[1]:.2g} ({level:.0%}, both steps)")
        if len(t) > 2:
            ax.scatter([loss], [t[2]], marker="*", s=90, color="k", zorder=4, label="true value")
    ax.set(xlabel="task loss (answer NLL)", ylabel=target, title="two-step task prediction")
    ax.legend(fontsize="small")
    return ax


__all__ = ["plot_comparison", "plot_selection", "plot_two_step"]
