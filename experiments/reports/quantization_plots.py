"""Figures of a PTQ study (matplotlib's object API; each function returns the figure).

- `plot_delta_vs_tokens`: delta against training tokens per size and precision, with the fitted
  ptq_degradation law (Ouyang et al. 2024, Eq. 8) as lines
- `plot_delta_vs_bits`: delta against the format's bits, per run
- `plot_post_ptq_loss`: float and post-PTQ loss against tokens, with the predicted turning point D*
- `plot_wsd_trajectory`: the WSD control run's delta at each kept checkpoint
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure


def _check(frame: pd.DataFrame, what: str) -> None:
    if frame is None or len(frame) == 0:
        raise ValueError(f"nothing to plot: no {what}")


def plot_delta_vs_tokens(rows: pd.DataFrame, law=None) -> Figure:
    """Measured delta (with ±sem bars) against D, one colour per bit width, one marker per size."""
    _check(rows, "resolved weight-only rows")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    bits = sorted(rows["bits"].unique())
    sizes = sorted(rows["n_params"].unique())
    cmap = colormaps["viridis"]
    markers = "os^Dv<>"
    for i, b in enumerate(bits):
        color = cmap(i / max(1, len(bits) - 1) * 0.9)
        labelled = False
        for j, n in enumerate(sizes):
            part = rows[(rows["bits"] == b) & (rows["n_params"] == n)].sort_values("tokens")
            if part.empty:
                continue
            ax.errorbar(part["tokens"], part["delta"], yerr=part["delta_sem"], fmt=markers[j % len(markers)],
                        color=color, ms=5, capsize=2, label=None if labelled else f"{int(b)} bits")
            labelled = True
            if law is not None:
                d = np.geomspace(part["tokens"].min() / 1.5, part["tokens"].max() * 1.5, 50)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    y = law.predict(N=np.full_like(d, part["n_params_nonembedding"].iloc[0]), D=d,
                                    P=np.full_like(d, b))
                ax.plot(d, y, color=color, lw=1, alpha=0.7)
    ax.set(xscale="log", yscale="log", xlabel="training tokens D", ylabel="PTQ loss increase δ (nats)",
           title="Degradation vs training length" + (" (lines: fitted ptq_degradation)" if law else ""))
    handles, labels = ax.get_legend_handles_labels()
    for j, n in enumerate(sizes):
        handles.append(ax.plot([], [], markers[j % len(markers)], color="gray")[0])
        labels.append(f"N = {n:.3g}")
    ax.legend(handles, labels, fontsize=8, ncols=2)
    return fig


def plot_delta_vs_bits(measured: pd.DataFrame) -> Figure:
    """delta against bits of the weight-only round-to-nearest integer formats, one line per run."""
    rows = measured[measured["format"].astype(str).str.fullmatch(r"int[2-8]")]
    _check(rows, "weight-only integer formats")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    runs = list(dict.fromkeys(rows["run_id"]))
    cmap = colormaps["plasma"]
    for i, rid in enumerate(runs):
        part = rows[rows["run_id"] == rid].sort_values("bits")
        first = part.iloc[0]
        ax.errorbar(part["bits"], part["delta"].clip(lower=1e-6), yerr=part["delta_sem"], marker="o", ms=4,
                    capsize=2, color=cmap(i / max(1, len(runs) - 1) * 0.9),
                    label=f"N={first['n_params']:.3g}, D={first['tokens']:.3g}")
    ax.set(yscale="log", xlabel="bits per weight (format)", ylabel="PTQ loss increase δ (nats)",
           title="Degradation vs precision (weight-only, round to nearest)")
    ax.legend(fontsize=7, ncols=2)
    return fig


def plot_post_ptq_loss(ptq: pd.DataFrame, loss_law=None, ptq_law=None, turning=()) -> Figure:
    """Float and quantized loss of the grid runs against D, per size, at the lowest two integer
    precisions, with the fitted L + delta and the turning point D* marked."""
    done = ptq[(ptq["status"] == "completed") & (ptq["role"] == "grid")]
    _check(done, "completed grid measurements")
    ints = sorted(done.loc[done["format"].astype(str).str.fullmatch(r"int[2-8]"), "bits"].unique())[:2]
    fig = Figure(figsize=(6.8, 4.6), layout="constrained")
    ax = fig.add_subplot()
    sizes = sorted(done["n_params"].unique())
    cmap = colormaps["tab10"]
    for j, n in enumerate(sizes):
        color = cmap(j)
        part = done[done["n_params"] == n]
        flt = part[part["format"] == "float"].sort_values("tokens")
        ax.plot(flt["tokens"], flt["loss"], "o-", color=color, label=f"N = {n:.3g}: float")
        for k, b in enumerate(ints):
            q = part[(part["format"] == f"int{int(b)}")].sort_values("tokens")
            ax.plot(q["tokens"], q["loss_quantized"], ["s--", "^:"][k], color=color, alpha=0.8,
                    label=f"N = {n:.3g}: int{int(b)}")
            if loss_law is not None and ptq_law is not None and len(q):
                d = np.geomspace(q["tokens"].min() / 2, q["tokens"].max() * 4, 60)
                nn = float(q["n_params"].iloc[0])
                ne = float(q["n_params_nonembedding"].iloc[0])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    y = loss_law.predict(N=np.full_like(d, nn), D=d) + ptq_law.predict(
                        N=np.full_like(d, ne), D=d, P=np.full_like(d, b))
                ax.plot(d, y, "-", color=color, lw=0.8, alpha=0.5)
                for t in turning:
                    if t["n_params"] == int(nn) and t["bits"] == int(b) and np.isfinite(t["tokens_star"]):
                        ax.axvline(t["tokens_star"], color=color, lw=0.8, ls=["--", ":"][k], alpha=0.6)
    measured = np.concatenate([done["loss"].to_numpy(), done.loc[done["format"].isin(
        [f"int{int(b)}" for b in ints]), "loss_quantized"].to_numpy()])
    span = np.nanmax(measured) - np.nanmin(measured)
    ax.set_ylim(np.nanmin(measured) - 0.15 * span, np.nanmax(measured) + 0.3 * span)  # the data, not the fit's tail
    ax.set(xscale="log", xlabel="training tokens D", ylabel="held-out loss (nats/byte)",
           title="Post-PTQ loss vs training length (thin lines: fitted L + δ; vertical: D*)")
    ax.legend(fontsize=7, ncols=2)
    return fig


def plot_wsd_trajectory(wsd: pd.DataFrame) -> Figure:
    """delta at each checkpoint of the WSD control run, one line per format."""
    _check(wsd, "WSD control measurements")
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for fmt, group in wsd.groupby("format"):
        g = group.sort_values("tokens")
        g = g[g["delta"] >= 2 * g["delta_sem"]]  # resolved deltas only (a log axis has no room for noise)
        if g.empty:
            continue
        ax.errorbar(g["tokens"], g["delta"], yerr=g["delta_sem"], marker="o", ms=4, capsize=2, label=str(fmt))
    last = wsd["tokens"].max()
    ax.axvline(last, color="gray", lw=0.8, ls=":")
    ax.annotate("after the decay", (last, ax.get_ylim()[1]), ha="right", va="top", fontsize=8, color="gray")
    ax.set(xscale="log", yscale="log", xlabel="training tokens at the checkpoint",
           ylabel="PTQ loss increase δ (nats)",
           title="WSD control: stable-phase checkpoints, then the decay (δ ≥ 2 sem shown)")
    ax.legend(fontsize=8, ncols=2)
    return fig
