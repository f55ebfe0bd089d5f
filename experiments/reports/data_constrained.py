"""The data-constrained study's analyze stage (`experiments.studies.data_constrained`), on the kit.

The fitting, held-out checks and derived quantities are `scaling.analysis.data_constrained`'s, the
same code that analyzes Muennighoff et al. 2023's published runs (``published_analysis``); this
module turns the study's results.csv into its table and writes the report:

- the run table (`runs_table`): N = all parameters (the study's "6N" convention), U = the
  unique-token cap, D = the tokens read from the capped data, ``tokens x (seq_len + 1) / seq_len``
  (a step reads rows of seq_len + 1 tokens; the last of each row is a target only), so a one-epoch
  run has D = U and epochs = D / U exactly as ``experiments.harness.subsets`` counts them;
- report.md: the fitted R*_D and R*_N with intervals beside the published ones (and, with
  ``with_published``, this analysis repeated on the published runs), the held-out checks, the
  compute-optimal (N, D, epochs) at the largest U, where repeating stops paying;
- plots/loss_vs_epochs.png (loss against epochs per U and size, with the fitted law) and
  plots/effective_data.png (D' against D per U);
- fits/data_constrained.json (`scaling.load`), analysis.json, data_constrained_runs.csv.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from experiments.reports.kit import Plot, Report, Section, Select, fmt, interval
from scaling.analysis import data_constrained as dc

TABLE = "data_constrained_runs.csv"


def runs_table(context) -> pd.DataFrame:
    """Completed runs as the analysis's table: N, D (tokens read), U, epochs, loss."""
    r = context.results
    done = r[r["status"] == "completed"]
    seq_len = context.declaration.base.data.seq_len
    return pd.DataFrame({
        "run_id": done["run_id"].to_numpy(), "N": done["n_params"].to_numpy(np.float64),
        "D": done["tokens"].to_numpy(np.float64) * (seq_len + 1) / seq_len,
        "U": done["unique_tokens"].to_numpy(np.float64), "loss": done["eval_loss"].to_numpy(np.float64),
    }).assign(epochs=lambda t: t["D"] / t["U"]).reset_index(drop=True)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def compute(context) -> dict:
    study = context.declaration
    t = runs_table(context)
    notes = []
    try:
        out = _quiet(dc.analyze, t, procedure=study.procedure, bootstrap=study.bootstrap,
                     budgets=study.optimal_budgets, budget_u=max(study.unique_budgets))
    except ValueError as err:
        return {"laws": {}, "notes": [f"data_constrained not fitted: {err}"], "table": t, "own": None}
    fitted = out.pop("fitted")
    if fitted.data and "ranges" in fitted.data:
        hi = fitted.data["ranges"]["D"][1]
        far = [r["C"] for r in out.get("compute_optimal", []) if r["D"] > hi]
        if far:
            notes.append(f"compute-optimal D at C = {', '.join(f'{c:.3g}' for c in far)} lies beyond the "
                         f"largest D trained ({hi:.3g}): an extrapolation")
    published = None
    if study.with_published:
        from scaling import published as pub

        # the authors' own procedure on the runs they fitted, with their base (E, A, B, alpha = beta
        # from Hoffmann et al.'s C4 points, not bundled), and the optimum of the basin their starts reach
        base = pub.get("muennighoff2023").params
        runs = pub.dataset(dc.PUBLISHED_DATASET)
        published = _quiet(dc.analyze, runs, columns=dc.PUBLISHED_COLUMNS, target="val_loss",
                           procedure="muennighoff2023", base=base, bootstrap=study.bootstrap)
        published.pop("fitted")
        published["local_optimum"] = _quiet(dc.local_optimum, runs, base, dc.PUBLISHED,
                                            columns=dc.PUBLISHED_COLUMNS, target="val_loss")
    return {"laws": {"data_constrained": fitted}, "notes": notes, "table": t, "own": out,
            "published": published, "fitted": fitted}


# ----------------------------------------------------------------------------- sections


def params_lines(a) -> list[str]:
    own, pub = a.out.get("own"), a.out.get("published")
    if own is None:
        return ["Not fitted (see Notes)."]
    head = "| parameter | this study | 95% interval |"
    sep = "|---|---|---|"
    if pub is not None:
        head += " Muennighoff et al.'s runs, their procedure | 95% interval |"
        sep += "---|---|"
    head += " published |"
    sep += "---|"
    lines = [head, sep]
    for k, v in own["params"].items():
        row = f"| {k} | {fmt(v['value'])} | {interval(v['interval'])} |"
        if pub is not None:
            p = pub["params"][k]
            band = p["interval"]
            fixed = band is not None and band[0] == band[1] == p["value"]
            row += f" {fmt(p['value'])} | {'fixed (their base)' if fixed else interval(band)} |"
        row += f" {fmt(dc.PUBLISHED[k]) if k in dc.PUBLISHED else '-'} |"
        lines.append(row)
    if pub is not None:
        loc = pub["local_optimum"]
        lines += ["", f"Muennighoff et al.'s runs: their procedure (`muennighoff2023`: their {pub['n_runs']} runs, their "
                  "E, A, B, alpha = beta held fixed, Huber 1e-3 on log loss from their start grid); best optimum "
                  f"R*_D {fmt(pub['params']['R_D_star']['value'])}, R*_N {fmt(pub['params']['R_N_star']['value'])} "
                  f"(objective {pub['objective']:.7g}). A local solve from the published point stays at R*_D "
                  f"{fmt(loc['R_D_star'])}, R*_N {fmt(loc['R_N_star'])} (objective {loc['objective']:.7g}): the "
                  "published values are a local minimum of the authors' own objective, which is nearly flat in R*_D."]
    lines += ["", f"Procedure: {own['procedure']} (see `scaling.analysis.data_constrained`). Published: Muennighoff et al. 2023, App. A (the "
              "datablations README's constants), fitted on 10M-9B-parameter models and 100M-178B unique "
              "tokens of C4, dropout 0.1; these runs are byte-level models of thousands of parameters on "
              "the embedded corpus, so agreement is not expected to transfer across that gap in scale."]
    return lines


def held_out_lines(a) -> list[str]:
    lines = []
    for label, res in (("this study", a.out.get("own")), ("Muennighoff et al.'s runs", a.out.get("published"))):
        if res is None:
            continue
        lines += [f"**{label}**", "", "| check | fitted on | held out | mean abs. error | max abs. error | "
                  "band coverage | R*_D refit | R*_N refit |", "|---|---|---|---|---|---|---|---|"]
        for c in res["held_out"]:
            if "error" in c:
                lines.append(f"| {c['name']} | {c['n_fit']} | {c['n_held_out']} | not refitted: {c['error']} "
                             "| | | | |")
                continue
            cov = "-" if c["coverage"] is None else f"{c['coverage']:.0%} (nominal {c['level']:.0%})"
            lines.append(f"| {c['name']} | {c['n_fit']} | {c['n_held_out']} | {c['mean_abs_rel_error']:.2%} | "
                         f"{c['max_abs_rel_error']:.2%} | {cov} | {fmt(c['params']['R_D_star'])} | "
                         f"{fmt(c['params']['R_N_star'])} |")
        lines.append("")
    lines.append("Errors are relative, of the predicted final loss. The band is the refit's parameter "
                 "uncertainty only (no run-to-run noise), so it undercovers noisy runs.")
    return lines


def optimum_lines(a) -> list[str]:
    own = a.out.get("own")
    if own is None:
        return ["Not fitted."]
    rep = own["repetition"]
    lines = ["A repeated token is worth exp(-R_D / R*_D) of a fresh one (the slope of D' in D):", "",
             "| | value | 95% interval |", "|---|---|---|"]
    for key, what in (("epochs_half_value", "epochs after which a repeat is worth 1/2 a fresh token"),
                      ("epochs_tenth_value", "epochs after which a repeat is worth 1/10"),
                      ("max_effective_data_over_u", "most effective data, D'/U (never more)")):
        lines.append(f"| {what} | {fmt(rep[key]['value'])} | {interval(rep[key]['interval'])} |")
    rows = own.get("compute_optimal") or []
    if rows:
        lines += ["", f"Compute-optimal allocation at U = {fmt(rows[0]['U'])} unique tokens (C = 6 N D; "
                  "95% bands from the fit's draws):", "",
                  "| C | N | D | epochs | loss |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {fmt(r['C'])} | {fmt(r['N'])} {interval(r['N_interval'])} | {fmt(r['D'])} "
                         f"{interval(r['D_interval'])} | {fmt(r['epochs'])} {interval(r['epochs_interval'])} | "
                         f"{fmt(r['loss'], 4)} {interval(r['loss_interval'], 4)} |")
    return lines


def grid_lines(a) -> list[str]:
    t = a.out.get("table")
    if t is None or t.empty:
        return ["No completed runs."]
    lines = ["Final held-out loss (nats/byte) per size (rows) and unique tokens x epochs (columns):", ""]
    t = t.assign(e=t["epochs"].round(2))
    cols = sorted({(u, e) for u, e in zip(t["U"], t["e"])})
    lines.append("| N | " + " | ".join(f"U {fmt(u)} x{e:g}" for u, e in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for n, g in t.groupby("N"):
        cell = {(u, e): loss for u, e, loss in zip(g["U"], g["e"], g["loss"])}
        lines.append(f"| {fmt(n)} | " + " | ".join(fmt(cell[c], 4) if c in cell else "-" for c in cols) + " |")
    return lines


# ----------------------------------------------------------------------------- plots


def plot_loss_vs_epochs(a):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    t, fitted = a.out.get("table"), a.out.get("fitted")
    if t is None or t.empty:
        raise ValueError("no completed runs")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.85, t["U"].nunique()))
    markers, styles = "osD^v<>", ("-", "--", ":", "-.")
    sizes = sorted(t["N"].unique())
    for (u, color) in zip(sorted(t["U"].unique()), colors):
        for j, n in enumerate(sizes):
            g = t[(t["U"] == u) & (t["N"] == n)].sort_values("epochs")
            if g.empty:
                continue
            ax.plot(g["epochs"], g["loss"], markers[j % len(markers)], color=color, ms=5)
            if fitted is not None:
                e = np.geomspace(1.0, g["epochs"].max() * 1.5, 60)
                pred, _, _ = dc.predict(fitted, pd.DataFrame({"N": n, "D": e * u, "U": u}))
                ax.plot(e, pred, styles[j % len(styles)], color=color, lw=1, alpha=0.8)
    handles = [Line2D([], [], color=c, lw=3, label=f"U {u:.3g}") for u, c in zip(sorted(t["U"].unique()), colors)]
    handles += [Line2D([], [], color="0.3", marker=markers[j % len(markers)], ls=styles[j % len(styles)], lw=1,
                       label=f"N {n:.3g}") for j, n in enumerate(sizes)]
    ax.set_xscale("log")
    ax.set_xlabel("epochs (D / U)")
    ax.set_ylabel("final held-out loss (nats/byte)")
    ax.set_title("Loss against epochs: markers the runs, lines the fitted law (color: U; marker and line: N)",
                 fontsize=9)
    ax.legend(handles=handles, fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_effective_data(a):
    import matplotlib.pyplot as plt

    t, fitted = a.out.get("table"), a.out.get("fitted")
    if fitted is None:
        raise ValueError("no fitted law")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.85, t["U"].nunique()))
    r_star = fitted.params["R_D_star"]
    for u, color in zip(sorted(t["U"].unique()), colors):
        d = np.geomspace(u, max(t["D"].max(), u) * 3, 80)
        ax.plot(d, dc.effective_data(fitted, d, u), color=color, label=f"U {u:.3g}")
        ax.axhline(u * (1 + r_star), color=color, ls=":", lw=0.8)
        runs = t[t["U"] == u]
        ax.plot(runs["D"], dc.effective_data(fitted, runs["D"].to_numpy(), u), "o", color=color, ms=4)
    lo, hi = ax.get_xlim()
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="D' = D (all fresh)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("D: tokens trained")
    ax.set_ylabel("D': effective tokens")
    ax.set_title(f"Effective data (R*_D = {r_star:.3g}; dotted: the limit U (1 + R*_D))", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _json(a) -> dict:
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if k != "fitted"}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return {"own": clean(a.out.get("own")), "published": clean(a.out.get("published"))}


# Does modelling repetition extrapolate to more epochs? The data-constrained law against
# Chinchilla's law with every token read counted as fresh, and with only the unique tokens counted;
# held out: the most repeated runs, by planned epochs (D/U rounded: a run reads 0.99 or 3.02
# epochs of its cap, and each value must not count as its own level).
SELECT_REPETITION = Select(
    "repetition",
    {"data_constrained": {"law": "data_constrained"},
     "chinchilla (D = tokens read)": {"law": "chinchilla", "starts": "coarse"},
     "chinchilla (D = unique tokens)": {"law": "chinchilla", "starts": "coarse", "columns": {"D": "U"}}},
    used="data_constrained", used_for="the half-lives, held-out checks and the compute-optimal allocation",
    table=lambda context: runs_table(context).assign(epochs_planned=lambda t: t["epochs"].round()),
    holdout="epochs_planned", splits=2, min_train_levels=2,
    what="does a law of repeated data extrapolate to more epochs? (held out: the most repeated runs)")

REPORT = Report(
    title="Data-constrained scaling",
    compute=compute,
    selects=[SELECT_REPETITION],
    sections=[
        Section("The grid", grid_lines),
        Section("Half-lives of repeated data and excess parameters", params_lines),
        Section("Held-out checks", held_out_lines),
        Section("Where repeating stops paying, and the compute-optimal allocation at a fixed U", optimum_lines),
    ],
    plots=[Plot("loss_vs_epochs", plot_loss_vs_epochs), Plot("effective_data", plot_effective_data)],
    tables={TABLE: lambda a: a.out.get("table", pd.DataFrame())},
    json=_json,
)
