"""Figures of a test-time-compute study (matplotlib's object API; each returns the figure).

- `plot_pass_at_k`: measured pass@k per model with the fitted Beta law's curve and band
- `plot_neg_log_pass`: -log pass@k on log-log axes (a power law is a line), with the cross-model law
- `plot_params_vs_compute`: the fitted Beta parameters and pass@k at k = 1, n against training compute
- `plot_frontier`: pass rate against training + sampling compute, every (model, k), the frontier marked
"""

from __future__ import annotations

import warnings

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure


def _models(models):
    if not models:
        raise ValueError("nothing to plot: no sampled models")
    return sorted(models, key=lambda m: (m["flops"], m["n_params"]))


def _color(i, count):
    return colormaps["viridis"](0.9 * i / max(1, count - 1))


def plot_pass_at_k(models) -> Figure:
    models = _models(models)
    fig = Figure(figsize=(6.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, m in enumerate(models):
        color = _color(i, len(models))
        label = f"N={m['n_params']:.3g}, C={m['flops']:.2g}"
        ax.plot(m["ks"], m["pass_at_k"], "o", color=color, ms=4, label=label)
        fit = m["fits"].get("pass_at_k_beta")
        if fit:
            curve = fit["curve"]
            ax.plot(curve["k"], curve["pass_at_k"], "-", color=color, lw=1)
            if curve["interval"] is not None:
                ax.fill_between(curve["k"], curve["interval"][0], curve["interval"][1], color=color, alpha=0.15)
    ax.set(xscale="log", xlabel="samples per problem k", ylabel="pass@k", ylim=(0, 1),
           title="pass@k: measured (dots), Beta law with band (lines)")
    ax.legend(fontsize=7)
    return fig


def plot_neg_log_pass(models, law=None) -> Figure:
    models = _models(models)
    fig = Figure(figsize=(6.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    plotted = False
    for i, m in enumerate(models):
        ks, p = np.asarray(m["ks"]), np.asarray(m["pass_at_k"])
        keep = (p > 0) & (p < 1)
        if not keep.any():
            continue
        color = _color(i, len(models))
        ax.plot(ks[keep], -np.log(p[keep]), "o", color=color, ms=4, label=f"N={m['n_params']:.3g}, C={m['flops']:.2g}")
        plotted = True
        if law is not None:
            grid = np.geomspace(1, ks.max() * 4, 40)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                y = law.predict(N=np.full_like(grid, m["n_params"]), D=np.full_like(grid, m["tokens"]), k=grid)
            ax.plot(grid, -np.log(y), "-", color=color, lw=1)
    if not plotted:
        raise ValueError("nothing to plot: no pass@k strictly between 0 and 1")
    ax.set(xscale="log", yscale="log", xlabel="samples per problem k", ylabel="-log pass@k",
           title="-log pass@k (lines: the cross-model coverage law)" if law is not None else "-log pass@k")
    ax.legend(fontsize=7)
    return fig


def plot_params_vs_compute(models) -> Figure:
    models = _models(models)
    fits = [m for m in models if "pass_at_k_beta" in m["fits"]]
    fig = Figure(figsize=(9.6, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    sizes = sorted({m["n_params"] for m in models})
    markers = "os^Dv"
    for j, n in enumerate(sizes):
        part = [m for m in fits if m["n_params"] == n]
        if part:
            c = [m["flops"] for m in part]
            ax1.plot(c, [m["fits"]["pass_at_k_beta"]["law"].params["alpha"] for m in part], markers[j % 5] + "-",
                     color="C0", label=f"alpha, N={n:.3g}")
            ax1.plot(c, [m["fits"]["pass_at_k_beta"]["law"].params["beta"] for m in part], markers[j % 5] + "--",
                     color="C1", label=f"beta, N={n:.3g}")
        allm = [m for m in models if m["n_params"] == n]
        c = [m["flops"] for m in allm]
        ax2.plot(c, [m["pass_at_k"][0] for m in allm], markers[j % 5] + "-", color="C2", label=f"pass@1, N={n:.3g}")
        ax2.plot(c, [m["pass_at_k"][-1] for m in allm], markers[j % 5] + "--", color="C3", label=f"pass@n, N={n:.3g}")
    ax1.set(xscale="log", yscale="log", xlabel="training FLOPs (6N)", ylabel="fitted Beta parameter",
            title="Beta(alpha, beta) of per-problem success")
    ax2.set(xscale="log", xlabel="training FLOPs (6N)", ylabel="pass rate", title="pass@1 and pass@n")
    if fits:
        ax1.legend(fontsize=6)
    ax2.legend(fontsize=6)
    return fig


def plot_frontier(table, queries: float) -> Figure:
    if table is None or table.empty:
        raise ValueError("nothing to plot: no (model, k) points")
    fig = Figure(figsize=(6.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    runs = list(dict.fromkeys(table.sort_values(["train_flops", "n_params"])["run_id"]))
    for i, rid in enumerate(runs):
        part = table[table["run_id"] == rid].sort_values("k")
        ax.plot(part["total_flops"], part["pass_at_k"], ".-", color=_color(i, len(runs)), lw=0.8, ms=4,
                label=f"N={part['n_params'].iloc[0]:.3g}, C={part['train_flops'].iloc[0]:.2g}")
    front = table[table["on_frontier"]].sort_values("total_flops")
    ax.step(front["total_flops"], front["pass_at_k"], where="post", color="k", lw=1.5, label="frontier")
    ax.set(xscale="log", xlabel=f"training + sampling FLOPs for {queries:.3g} queries", ylabel="pass@k",
           title="Which model and how many samples, for a total budget")
    ax.legend(fontsize=7)
    return fig
