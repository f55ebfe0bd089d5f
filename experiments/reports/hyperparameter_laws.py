"""The hyperparameter-law study's analyze stage (`experiments.studies.hyperparameter_laws`), on the kit.

The per-cell optima and the laws are `scaling.analysis.hyperparameters`'s; this module turns the
study's results.csv (and the seed runs of rung/results.csv) into its table and writes:

- fits/lr_optimum.json (eta_opt(N, D)), fits/lr_optimum_C.json (eta_opt(C)), fits/batch_optimum.json
  (B_opt(D), tokens per step), fits/batch_optimum_C.json (B_opt(C)); each file's provenance says
  what it predicts (``quantity``) and from what (``x``), so ``--set lr=`` / ``--set rows_per_step=``
  refuse the wrong kind; with the muP check, fits/lr_vs_N_sp.json and fits/lr_vs_N_mup.json;
- fits/loss_vs_lr_<parameterization>_N.._D.._B...json: each (cell, batch)'s parabola in
  u = ln(lr / lr_ref) (`isoflop_parabola`'s form, x = u; lr_ref in the file's provenance);
- cell_optima.csv (one row per cell), batch_optima.csv (per cell and batch), report.md, plots/.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import numpy as np
import pandas as pd

from experiments.harness import io
from experiments.reports.kit import Plot, Report, Section, fmt, interval
from experiments.runner.runs import read_results, run_dir
from scaling.analysis import hyperparameters as hp

PUBLISHED = {  # law name -> {parameter: (published value, where)}
    "lr_optimum": {"b_N": (-0.713, "Step Law (Li et al. 2025)"), "b_D": (0.307, "Step Law (Li et al. 2025)")},
    "lr_optimum_C": {"b": (-0.1250, "DeepSeek LLM Eq. 1 (DeepSeek-AI 2024)")},
    "batch_optimum": {"b": (0.571, "Step Law (Li et al. 2025)")},
    "batch_optimum_C": {"b": (0.3271, "DeepSeek LLM Eq. 1 (DeepSeek-AI 2024)")},
}
WHAT = {"lr_optimum": "eta_opt(N, D) = A N^b_N D^b_D", "lr_optimum_C": "eta_opt(C) = A C^b",
        "batch_optimum": "B_opt(D) = A D^b (tokens/step)", "batch_optimum_C": "B_opt(C) = A C^b (tokens/step)"}
CELL = ("parameterization", "N", "D")


# ----------------------------------------------------------------------------- the table


def sweep_table(results: pd.DataFrame, study) -> pd.DataFrame:
    """Completed runs as the analysis's table: N (non-embedding), D, C (the study's convention),
    lr, B (tokens per step), loss, sem, parameterization, role, run_id; diverged runs with a NaN
    loss (their rate counts as worse than any finished one, so a grid bracketed by divergence is
    not flagged as an edge)."""
    done = results[results["status"].isin(["completed", "diverged"])].copy()
    done.loc[done["status"] == "diverged", ["eval_loss", "eval_loss_sem"]] = math.nan
    seq_len = study.base.data.seq_len
    return pd.DataFrame({
        "run_id": done["run_id"].to_numpy(), "parameterization": done["parameterization"].to_numpy(),
        "role": done["role"].to_numpy(),
        "N": done["n_params_nonembedding"].to_numpy(np.float64), "D": done["cell_tokens"].to_numpy(np.float64),
        "tokens": done["tokens"].to_numpy(np.float64),
        "C": done[f"flops_{study.flop_convention}"].to_numpy(np.float64),
        "lr": done["lr"].to_numpy(np.float64), "B": done["rows_per_step"].to_numpy(np.float64) * seq_len,
        "loss": done["eval_loss"].to_numpy(np.float64), "sem": done["eval_loss_sem"].to_numpy(np.float64),
    }).reset_index(drop=True)


def _all_results(context) -> pd.DataFrame:
    rung = context.workdir / "rung" / "results.csv"
    frames = [context.results]
    if rung.exists() and not (context.results["role"] == "seed").any():
        frames.append(read_results(rung))
    return pd.concat(frames, ignore_index=True)


def _cell_name(row) -> str:
    return f"{row['parameterization']}_N{row['N']:.3g}_D{row['D']:.3g}"


def _parabola_laws(per_batch: pd.DataFrame) -> dict:
    from scaling import FittedLaw
    from scaling.laws.parabola import PARABOLA

    laws = {}
    for row in per_batch.to_dict("records"):
        if not all(math.isfinite(row[k]) for k in ("c0", "c1", "c2")):
            continue
        name = re.sub(r"[^A-Za-z0-9_.+-]", "", f"loss_vs_lr_{_cell_name(row)}_B{row['B']:.0f}")
        laws[name] = FittedLaw(PARABOLA, {k: row[k] for k in ("c0", "c1", "c2")},
                               data={"n_points": int(row["n_fit"]), "target": "eval_loss"},
                               provenance={"notes": f"loss against u = ln(lr / lr_ref), lr_ref = {row['lr_ref']:.6g}, "
                                                    f"of the cell N = {row['N']:.4g} (non-embedding), D = {row['D']:.4g} "
                                                    f"tokens, B = {row['B']:.0f} tokens per step ({row['parameterization']})",
                                           "lr_ref": row["lr_ref"]})
    return laws


# ----------------------------------------------------------------------------- compute


def compute(context) -> dict:
    study = context.declaration
    results = _all_results(context)
    t = sweep_table(results, study)
    notes = []
    if t.empty:
        return {"laws": {}, "notes": ["no completed runs"], "table": t}
    per_batch, cells, _ = hp.cell_optima(t, cell=CELL, fit_steps=study.fit_steps, bootstrap=study.bootstrap)
    laws = _parabola_laws(per_batch)
    primary = "sp" if "sp" in study.parameterizations else study.parameterizations[0]
    main_cells = cells[cells["parameterization"] == primary].reset_index(drop=True)
    fitted, law_notes = hp.fit_laws(main_cells, bootstrap=study.bootstrap, flop_convention=study.flop_convention,
                                    min_cells=study.min_cells)
    laws.update(fitted)
    notes += law_notes
    for name in set(hp.LAW_SPECS) - set(fitted):  # a file left by an earlier analysis is no rule of this one
        stale = context.workdir / "fits" / f"{name}.json"
        if stale.exists():
            stale.unlink()
            notes.append(f"fits/{name}.json of an earlier analysis removed: not fitted now")
    held = held_out(main_cells, t[t["parameterization"] == primary], study)
    mup = mup_check(cells, study) if len(study.parameterizations) > 1 or study.widths else None
    if mup:
        laws.update(mup.pop("laws"))
        notes += mup["notes"]
    flagged = cells[cells["flags"] != ""]
    for row in flagged.to_dict("records"):
        notes.append(f"cell {_cell_name(row)} flagged ({row['flags']}): {hp.move_grid_hint(row)}")
    return {"laws": laws, "notes": notes, "table": t, "per_batch": per_batch, "cells": cells,
            "fitted": fitted, "held_out": held, "seeds": seed_noise(t, per_batch), "mup": mup,
            "compile": compile_share(context, results), "primary": primary}


def held_out(cells: pd.DataFrame, t: pd.DataFrame, study) -> dict:
    """Refit without the largest usable cell (largest C) and predict its optimal lr and batch:
    the error in ln, and the loss of the predicted setting on the cell's measured curve against
    the cell's best loss."""
    use = cells[cells["usable_lr"]]
    if len(use) < study.min_cells + 1:
        return {"skipped": f"{len(use)} usable cells: too few to refit without one"}
    target = use.loc[use["C"].idxmax()]
    rest = cells.drop(index=target.name)
    refit, notes = hp.fit_laws(rest, bootstrap=min(study.bootstrap, 100), flop_convention=study.flop_convention,
                               min_cells=study.min_cells)
    out = {"cell": {k: float(target[k]) for k in ("N", "D", "C")}, "rows": [], "notes": notes}
    cell_runs = t[(t["N"] == target["N"]) & (t["D"] == target["D"])]
    best_batch = cell_runs[cell_runs["B"] == target["B_opt"]] if target["B_opt"] in set(cell_runs["B"]) else \
        cell_runs[cell_runs["B"] == cell_runs.loc[cell_runs["loss"].idxmin(), "B"]]
    for name, law in refit.items():
        quantity = law.provenance["quantity"]
        covariates = {c: float(target[c if c != "x" else law.provenance["x"]]) for c in law.law.covariates}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            band = law.predict(level=0.95, extrapolate=True, **covariates)
        pred = float(np.asarray(band.value).reshape(-1)[0])
        lo = None if band.lower is None else float(np.asarray(band.lower).reshape(-1)[0])
        hi = None if band.upper is None else float(np.asarray(band.upper).reshape(-1)[0])
        measured = float(target["lr_opt" if quantity == "learning_rate" else "B_opt"])
        if quantity == "learning_rate":
            loss = hp.interpolated_loss(best_batch, pred)
        else:  # the best measured loss per batch, linear in ln B
            per_b = t[(t["N"] == target["N"]) & (t["D"] == target["D"])].groupby("B")["loss"].min().sort_index()
            xb = np.log(per_b.index.to_numpy(np.float64))
            loss = float(np.interp(math.log(pred), xb, per_b.to_numpy())) if xb[0] <= math.log(pred) <= xb[-1] \
                else math.nan
        out["rows"].append({"law": name, "quantity": quantity, "measured": measured, "predicted": pred,
                            "lower": lo, "upper": hi, "log_error": math.log(pred / measured),
                            "loss_at_prediction": loss, "best_loss": float(target["L_best"]),
                            "cost": loss / float(target["L_best"]) - 1 if math.isfinite(loss) else math.nan,
                            "usable": bool(target["usable_batch"]) or quantity == "learning_rate"})
    return out


def seed_noise(t: pd.DataFrame, per_batch: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the losses of the seeds at its best grid point (grid run + extra seeds): their
    standard deviation against the runs' eval-loss SEM and the gap to the next-best grid point."""
    seeds = t[t["role"] == "seed"]
    rows = []
    for (param, n, d), s in seeds.groupby(["parameterization", "N", "D"]):
        lr, b = float(s["lr"].iloc[0]), float(s["B"].iloc[0])
        cell = t[(t["parameterization"] == param) & (t["N"] == n) & (t["D"] == d) & (t["B"] == b)]
        at = cell[np.isclose(cell["lr"], lr)]
        others = cell[~np.isclose(cell["lr"], lr)].groupby("lr")["loss"].mean()
        gap = float(others.min() - at[at["role"] == "grid"]["loss"].mean()) if len(others) else math.nan
        rows.append({"parameterization": param, "N": n, "D": d, "lr": lr, "B": b, "n_seeds": len(at),
                     "mean_loss": float(at["loss"].mean()), "seed_sd": float(at["loss"].std(ddof=1)),
                     "median_sem": float(at["sem"].median()), "gap_to_next": gap})
    return pd.DataFrame(rows)


def mup_check(cells: pd.DataFrame, study) -> dict:
    """eta_opt against N per parameterization (at fixed D: `pure_power_law` with x = N; with
    several D, `power_law_2d`), the exponent of N with its interval."""
    laws, notes, rows = {}, [], []
    for param, g in cells.groupby("parameterization"):
        use = g[g["usable_lr"]]
        two_d = use["D"].nunique() > 1
        law = "power_law_2d" if two_d else "pure_power_law"
        x = {"N": use["N"], "D": use["D"]} if two_d else {"x": use["N"]}
        name = f"lr_vs_N_{param}"
        if len(use) < (4 if two_d else 3) or use["N"].nunique() < 2:
            notes.append(f"{name} not fitted: {len(use)} usable cells")
            rows.append({"parameterization": param, "exponent": None, "interval": None, "cells": len(use)})
            continue
        try:
            fitted = hp.fit_law(law, x, use["lr_opt"].to_numpy(), use["sd_log_lr"].to_numpy(),
                                bootstrap=study.bootstrap, seed=0, quantity="learning_rate",
                                x_is=None if two_d else "N", notes=f"{param}: exponent of N in eta_opt")
        except ValueError as err:
            notes.append(f"{name} not fitted: {err}")
            continue
        laws[name] = fitted
        b = "b_N" if two_d else "b"
        iv = fitted.interval(b) if fitted.samples is not None else None
        rows.append({"parameterization": param, "exponent": fitted.params[b], "interval": iv, "cells": len(use)})
    return {"laws": laws, "notes": notes, "rows": rows}


def compile_share(context, results: pd.DataFrame) -> dict:
    """Compile time over wall time, summed over the runs (result.json's compile_s, this
    invocation's; runs that found their steps in the cache count 0)."""
    compile_s = wall = 0.0
    fresh = n = 0
    for row in results[results["status"] == "completed"].itertuples():
        base = context.workdir / ("rung" if row.role == "seed" else "")
        path = run_dir(base, row.run_id) / "result.json"
        if not path.exists():
            continue
        r = io.read_json(path)
        if r.get("compile_s") is None:
            continue
        compile_s += r["compile_s"]
        wall += r.get("wall_time_s") or 0.0
        fresh += int(r.get("compiled_fresh") or 0)
        n += 1
    return {"runs": n, "compile_s": compile_s, "wall_s": wall, "compiled_fresh": fresh}


# ----------------------------------------------------------------------------- sections


def what_lines(a) -> list[str]:
    study, t = a.declaration, a.out.get("table")
    if t is None or t.empty:
        return ["No completed runs."]
    cells = a.out["cells"]
    finished = np.isfinite(t["loss"])
    lines = [f"- {int(finished.sum())} completed runs ({int((finished & (t['role'] == 'seed')).sum())} extra-seed runs) "
             f"and {int((~finished).sum())} diverged in {len(cells)} cells "
             f"(parameterizations: {', '.join(study.parameterizations)}); learning-rate grid: "
             f"{len(study.lr_multipliers)} points, x{study.lr_multipliers[1] / study.lr_multipliers[0]:g} apart, "
             f"around {study.lr_scale:g} x the `{study.lr if isinstance(study.lr, str) else 'given'}` rule; "
             f"batches {', '.join(str(b) for b in study.batches)} sequences of {study.base.data.seq_len} tokens",
             f"- N is non-embedding parameters; D the cell's tokens; C training FLOPs under `{study.flop_convention}`; "
             "B tokens per step; loss the final held-out loss (nats/byte)",
             f"- each parabola uses the grid points within {study.fit_steps} grid steps of the best measured rate, "
             f"weighted by 1/SEM^2; intervals: {study.bootstrap} bootstrap draws resampling those runs"]
    comp = a.out.get("compile") or {}
    if comp.get("runs") and comp.get("wall_s"):
        lines.append(f"- compile share: {comp['compile_s']:.0f} s of {comp['wall_s']:.0f} s run wall time "
                     f"({100 * comp['compile_s'] / comp['wall_s']:.0f}%), {comp['compiled_fresh']} steps compiled over "
                     f"{comp['runs']} runs trained by this invocation (runs that differ only in lr share a compiled step)")
    return lines


def cells_lines(a) -> list[str]:
    cells = a.out.get("cells")
    if cells is None or cells.empty:
        return ["No cells."]
    lines = ["| param. | N | D | C | lr_opt | 95% | B_opt (tokens) | 95% | best loss | basin (lr within 1% of best) | "
             "grid | flags |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in cells.to_dict("records"):
        lines.append(f"| {r['parameterization']} | {fmt(r['N'])} | {fmt(r['D'])} | {fmt(r['C'])} | {fmt(r['lr_opt'])} | "
                     f"{interval((r['lr_lo'], r['lr_hi']))} | {fmt(r['B_opt'])} | {interval((r['B_lo'], r['B_hi']))} | "
                     f"{fmt(r['L_best'], 4)} | {fmt(r['basin_lo'])}-{fmt(r['basin_hi'])} "
                     f"(x{r['basin_hi'] / r['basin_lo']:.3g}) | {fmt(r['grid_lo'])}-{fmt(r['grid_hi'])} | "
                     f"{r['flags'] or 'inside'} |")
    flagged = cells[cells["flags"] != ""]
    lines += ["", f"{int(cells['usable_lr'].sum())} of {len(cells)} cells have their learning-rate optimum inside the "
              f"grid; {int(cells['usable_batch'].sum())} their batch optimum inside the batches (a batch optimum "
              "needs three batches around it)."]
    for r in flagged.to_dict("records"):
        lines.append(f"- {_cell_name(r)}: {hp.move_grid_hint(r)}; " +
                     ("left out of every law fit" if not r["usable_lr"] else "left out of the batch laws"))
    lines += ["", "Per batch (batch_optima.csv): lr_opt and the parabola's minimum L_opt at each batch size.", "",
              "| param. | N | D | B | lr_opt | 95% | L_opt | flags |", "|---|---|---|---|---|---|---|---|"]
    for r in a.out["per_batch"].to_dict("records"):
        lines.append(f"| {r['parameterization']} | {fmt(r['N'])} | {fmt(r['D'])} | {fmt(r['B'])} | {fmt(r['lr_opt'])} | "
                     f"{interval((r['lr_lo'], r['lr_hi']))} | {fmt(r['L_opt'], 4)} | {r['flags'] or '-'} |")
    return lines


def laws_lines(a) -> list[str]:
    fitted = a.out.get("fitted") or {}
    lines = ["| file | law | parameter | fitted | 95% | published |", "|---|---|---|---|---|---|"]
    for name in hp.LAW_SPECS:
        law = fitted.get(name)
        if law is None:
            lines.append(f"| fits/{name}.json | {WHAT[name]} | not fitted (see Notes) | | | |")
            continue
        for p, v in law.params.items():
            iv = law.interval(p) if law.samples is not None else None
            pub = PUBLISHED[name].get(p)
            lines.append(f"| fits/{name}.json | {WHAT[name]} | {p} | {fmt(v, 4)} | "
                         f"{interval(iv)} | {f'{pub[0]:g} ({pub[1]})' if pub else '-'} |")
    lines += ["", "Published: DeepSeek LLM (DeepSeek-AI 2024, arXiv:2401.02954, Eq. 1; `scaling.published` "
              "deepseek2024_lr / deepseek2024_batch, C = M D with M the non-embedding FLOPs per token) and the Step "
              "Law (Li et al. 2025, arXiv:2503.04715; predictable_scale2025_lr / _batch, N non-embedding). Both "
              "were fitted on 1e17-2e19 FLOPs and 60M-1B-parameter models with BPE tokenizers; these cells are "
              "byte-level models of thousands of parameters trained for at most a few hundred steps, where warmup, "
              "the schedule's length and the eval noise weigh far more. The exponents here describe this "
              "codebase's small-scale regime and are not expected to agree with the published ones; use the "
              "fitted files as rules only within (or near) the range they were fitted on (their data.ranges).",
              "", "Each law is weighted by the inverse variance of the cells' ln optimum (over the bootstrap "
              "draws of their parabolas) and bootstrapped over cells; flagged cells are never used."]
    return lines


def held_out_lines(a) -> list[str]:
    h = a.out.get("held_out") or {}
    if "skipped" in h:
        return [f"Not run: {h['skipped']}."]
    c = h["cell"]
    lines = [f"The cell with the largest C (N = {fmt(c['N'])}, D = {fmt(c['D'])}, C = {fmt(c['C'])}) left out, "
             "the laws refitted on the others and asked for its optimum. Cost: the loss at the predicted "
             "setting, interpolated (linear in ln lr, or ln B) on the cell's measured curve, against the cell's "
             "best measured loss.", "",
             "| law | measured | predicted | 95% band | error in ln | loss at prediction | best loss | cost |",
             "|---|---|---|---|---|---|---|---|"]
    for r in h["rows"]:
        lines.append(f"| {r['law']} | {fmt(r['measured'])} | {fmt(r['predicted'])} | {interval((r['lower'], r['upper']))} | "
                     f"{r['log_error']:+.3f} | {fmt(r['loss_at_prediction'], 4)} | {fmt(r['best_loss'], 4)} | "
                     + ("outside the grid" if not math.isfinite(r["cost"]) else f"{100 * r['cost']:+.2f}%") + " |")
    if h.get("notes"):
        lines += [""] + [f"- {n}" for n in h["notes"]]
    return lines


def seeds_lines(a) -> list[str]:
    s = a.out.get("seeds")
    if s is None or s.empty:
        return ["No extra seeds (extra_seeds=0, or the seed rung has not run)."]
    lines = ["| param. | N | D | lr | B | seeds | mean loss | seed s.d. | median SEM | gap to next-best lr |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in s.to_dict("records"):
        lines.append(f"| {r['parameterization']} | {fmt(r['N'])} | {fmt(r['D'])} | {fmt(r['lr'])} | {fmt(r['B'])} | "
                     f"{r['n_seeds']} | {fmt(r['mean_loss'], 4)} | {fmt(r['seed_sd'], 2)} | {fmt(r['median_sem'], 2)} | "
                     f"{fmt(r['gap_to_next'], 2)} |")
    lines += ["", "Seed s.d. above the eval SEM means the seed (initialization and data order), not the held-out "
              "sample, limits how well a cell's optimum is resolved; a gap to the next-best rate of the order of "
              "the seed s.d. means the basin is flat at the grid's resolution."]
    return lines


def mup_lines(a) -> list[str]:
    m = a.out.get("mup")
    if not m:
        return ["Not run (preset cpu_mup: --set parameterizations=sp,mup with widths at a fixed depth)."]
    lines = ["| parameterization | exponent of N in eta_opt | 95% | cells |", "|---|---|---|---|"]
    for r in m["rows"]:
        if r["exponent"] is None:
            lines.append(f"| {r['parameterization']} | not fitted: {r['cells']} cells with an inside optimum "
                         "(see the flags above) | | |")
            continue
        lines.append(f"| {r['parameterization']} | {r['exponent']:+.3f} | "
                     f"{interval(r['interval'])} | {r['cells']} |")
    lines += ["", "Under muP (Yang et al. 2022, arXiv:2203.03466; `models.transformer` mup) the optimal base learning "
              "rate should not move with width: an exponent near 0, against a negative one under the standard "
              "parameterization (Everett et al. 2024, arXiv:2407.05872, find that per-layer constants matter "
              "too). N here is non-embedding parameters at fixed depth (so N ~ width^2)."]
    return lines


def usage_lines(a) -> list[str]:
    """The ladder's commands with the files this analysis fitted (a rule not fitted keeps the
    study's own), then the two isoFLOP grids side by side (`experiments.reports.branch_grid`)."""
    fitted = a.out.get("fitted") or {}
    rules = []
    for name, field in (("lr_optimum", "lr"), ("batch_optimum", "rows_per_step")):
        if name in fitted:
            rules.append(f"--set {field}={a.context.workdir}/fits/{name}.json" + (" --set lr_scale=1" if field == "lr" else ""))
    if not rules:
        return ["No learning-rate or batch law fitted (see Notes): nothing to train the ladder at yet."]
    missing = [n for n in ("lr_optimum", "batch_optimum") if n not in fitted]
    return ["Every study takes the fitted files as its rules (tokens per step are divided by seq_len)"
            + (f"; {', '.join(missing)} not fitted, so that rule stays the study's own" if missing else "")
            + ". The isoFLOP grid at the study's own rules and at these, then side by side (exponents, "
            "held-out check, optimal loss per budget):", "",
            "```bash",
            "python -m experiments.studies.isoflop_chinchilla --workdir runs/iso_deepseek --preset cpu",
            "python -m experiments.studies.isoflop_chinchilla --workdir runs/iso_hp --preset cpu \\",
            *[f"    {r}" + (" \\" if i < len(rules) - 1 else "") for i, r in enumerate(rules)],
            "python -m experiments.reports.branch_grid runs/iso_deepseek runs/iso_hp --out runs/iso_compare.md",
            "```", "",
            "A file of the wrong kind (a batch law given as lr, a loss law) is refused with one line naming it."]


# ----------------------------------------------------------------------------- plots


def plot_loss_vs_lr(a):
    import matplotlib.pyplot as plt

    t, per_batch = a.out.get("table"), a.out.get("per_batch")
    if t is None or t.empty:
        raise ValueError("no completed runs")
    cells = a.out["cells"]
    n = len(cells)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.85, max(1, t["B"].nunique())))
    bcolor = dict(zip(sorted(t["B"].unique()), colors))
    for ax, c in zip(axes.flat, cells.to_dict("records")):
        sel = (t["parameterization"] == c["parameterization"]) & (t["N"] == c["N"]) & (t["D"] == c["D"])
        for b, g in t[sel].groupby("B"):
            ax.plot(g["lr"], g["loss"], "o", ms=4, color=bcolor[b], label=f"B {b:.0f}")
            pb = per_batch[(per_batch["parameterization"] == c["parameterization"]) & (per_batch["N"] == c["N"])
                           & (per_batch["D"] == c["D"]) & (per_batch["B"] == b)].iloc[0]
            if all(math.isfinite(pb[k]) for k in ("c0", "c1", "c2")):
                near = g["lr"][(g["lr"] >= pb["fit_lo"]) & (g["lr"] <= pb["fit_hi"])]
                u = np.linspace(math.log(near.min() / pb["lr_ref"]), math.log(near.max() / pb["lr_ref"]), 50)
                ax.plot(pb["lr_ref"] * np.exp(u), pb["c0"] + pb["c1"] * u + pb["c2"] * u * u, "-", color=bcolor[b], lw=1)
        if math.isfinite(c["lr_opt"]):
            ax.axvline(c["lr_opt"], color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_title(f"{c['parameterization']} N {c['N']:.3g} D {c['D']:.3g}" + (f" [{c['flags']}]" if c["flags"] else ""),
                     fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("peak learning rate")
    fig.supylabel("final held-out loss (nats/byte)")
    fig.tight_layout()
    return fig


def _plot_optimum(a, law_name: str, column: str, x: str, ylabel: str):
    import matplotlib.pyplot as plt

    cells = a.out.get("cells")
    law = (a.out.get("fitted") or {}).get(law_name)
    if cells is None or cells.empty:
        raise ValueError("no cells")
    cells = cells[cells["parameterization"] == a.out["primary"]]
    usable = cells["usable_lr" if column == "lr_opt" else "usable_batch"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    other = "D" if x == "N" else "N"
    for val, g in cells.groupby(other):
        ok = usable[g.index]
        lo, hi = g[column.replace("_opt", "_lo")], g[column.replace("_opt", "_hi")]
        yerr = np.vstack([g[column] - lo, hi - g[column]])
        yerr = np.where(np.isfinite(yerr), np.maximum(yerr, 0), 0)
        line = ax.errorbar(g[x][ok], g[column][ok], yerr=yerr[:, ok.to_numpy()], fmt="o", ms=5, capsize=2,
                           label=f"{other} {val:.3g}")
        ax.plot(g[x][~ok], g[column][~ok], "x", color=line[0].get_color(), ms=7)
        if law is not None:
            xs = np.geomspace(cells[x].min() / 1.5, cells[x].max() * 1.5, 40)
            cov = {c: (xs if c in (x, "x") else np.full_like(xs, val)) for c in law.law.covariates}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                band = law.predict(level=0.95, extrapolate=True, **cov)
            ax.plot(xs, np.asarray(band.value), "-", color=line[0].get_color(), lw=1)
            if band.lower is not None:
                ax.fill_between(xs, np.asarray(band.lower), np.asarray(band.upper), color=line[0].get_color(), alpha=0.15)
    ax.set_xscale("log")
    ax.set_yscale("log")
    finite = cells[column][np.isfinite(cells[column])]
    if len(finite):  # a law's band far from the cells can span many decades: keep the cells in view
        ax.set_ylim(finite.min() / 5, finite.max() * 5)
    ax.set_xlabel({"N": "N (non-embedding parameters)", "D": "D (tokens)"}[x])
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} per cell (x: flagged, not fitted); line and band: fits/{law_name}.json", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_lr_vs_N(a):
    return _plot_optimum(a, "lr_optimum", "lr_opt", "N", "optimal peak learning rate")


def plot_lr_vs_D(a):
    return _plot_optimum(a, "lr_optimum", "lr_opt", "D", "optimal peak learning rate")


def plot_batch_vs_D(a):
    return _plot_optimum(a, "batch_optimum", "B_opt", "D", "optimal batch (tokens per step)")


def _json(a) -> dict:
    cells = a.out.get("cells")
    return {"cells": [] if cells is None else cells.to_dict("records"),
            "held_out": a.out.get("held_out"), "mup": a.out.get("mup"), "compile": a.out.get("compile"),
            "laws": {k: {"params": v.params} for k, v in (a.out.get("fitted") or {}).items()}}


REPORT = Report(
    title="Hyperparameter laws",
    compute=compute,
    sections=[
        Section("What was run", what_lines),
        Section("Optimal learning rate and batch per cell", cells_lines),
        Section("Fitted laws beside the published (95% bootstrap intervals)", laws_lines),
        Section("Held out: the largest cell", held_out_lines),
        Section("Seed noise at each cell's best point", seeds_lines),
        Section("muP transfer check", mup_lines),
        Section("Using the fitted laws", usage_lines),
    ],
    plots=[Plot("loss_vs_lr", plot_loss_vs_lr), Plot("lr_opt_vs_N", plot_lr_vs_N), Plot("lr_opt_vs_D", plot_lr_vs_D),
           Plot("batch_opt_vs_D", plot_batch_vs_D)],
    tables={"cell_optima.csv": lambda a: a.out.get("cells", pd.DataFrame()),
            "batch_optima.csv": lambda a: a.out.get("per_batch", pd.DataFrame())},
    json=_json,
)


# ----------------------------------------------------------------------------- the seed rung


def seed_runs(study, workdir) -> list:
    """Extra seeds at each cell's best grid point (the lowest measured loss over lr and batch)."""
    results = read_results(workdir)
    done = results[(results["status"] == "completed") & (results["role"] == "grid")]
    if done.empty:
        return []
    by_id = {run.run_id: spec for run, spec in study.grid()}
    out = []
    for _, g in done.groupby(["parameterization", "n_params_nonembedding", "cell_tokens"]):
        best = g.loc[g["eval_loss"].idxmin()]
        model, tokens, mult, rows, param = by_id[best["run_id"]]
        used = set(study.seeds)
        extra = [s for s in range(1, 1000) if s not in used][:study.extra_seeds]
        for s in extra:
            out.append(study.grid_run(model, tokens, mult, rows, param, seed=s, role="seed"))
    return out


def seed_report(context, rung_results: pd.DataFrame) -> dict:
    """The analysis again, with the seed runs (report.md rewritten)."""
    combined = pd.concat([context.results, rung_results], ignore_index=True)
    return REPORT.stage(dataclasses.replace(context, results=combined))
