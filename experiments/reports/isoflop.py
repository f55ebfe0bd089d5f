"""The analyze stage of an isoFLOP study: Hoffmann et al.'s three approaches, fitted laws,
figures and a Markdown report.

    run_study(..., analyze=isoflop.analyze_stage)          # in an experiment file
    analysis, curves = isoflop.analyze(workdir, results, flop_convention="6N", bootstrap=400)
    paths = isoflop.write_outputs(workdir, results, flop_convention="6N", title="my study")

Writes, under the grid's workdir (local or ``gs://``, atomically):

    curves.csv                 training-loss curves of the completed runs (Approach 1's input)
    fits/approach{1,2,3}_{n_opt,d_opt,loss_opt}.json, fits/approach3_parametric.json
                               `FittedLaw` files (``scaling.load``): N_opt(C), D_opt(C), L_opt(C)
                               power laws in C (covariate ``x``) and the parametric L(N, D)
    plots/isoflop_curves.png   loss against N per budget, parabolas and their minima
    plots/compute_optimal.png  N_opt(C), D_opt(C) of every approach with 95% bootstrap bands
    plots/isoloss_frontier.png iso-loss contours of the fitted L(N, D) and the efficient frontier
    plots/training_envelope.png  training curves and Approach 1's lower envelope
    plots/branch_tree.png      a branch grid's stable runs and where each branch leaves them
                               (`experiments.reports.branch_grid`)
    analysis.json              everything `scaling.isoflop` computed, as JSON
    select_loss.json, plots/select_loss.png
                               the loss laws of (N, D) in the library (chinchilla, kaplan,
                               overtraining) ranked by their error on the held-out largest
                               budgets (`scaling.select`, `experiments.reports.choose`)
    report.md                  what was run, exponents with 95% intervals per approach, tokens
                               per parameter at the optimum, the law selection, the
                               held-out-budget check, the failed and diverged runs with
                               their reasons; for a branch grid, its FLOPs (stable runs +
                               cooldowns) against the same endpoints trained from scratch

FLOP conventions (`scaling.flops`) and what the analysis is given: under "6N" the runs' N is
every parameter and C = 6 N D ("6ND"); under "6N_nonembed" N is the non-embedding count and
C = 6 N D in that count; under "exact" / "exact_noncausal" C is not k N D for a fixed k, so the
analysis uses the grid's effective k = median(C / (N D)) (stated in the report). Each approach
runs on its own: one that cannot be fitted (too few usable budgets, say) is reported with its
reason and the others still are.
"""

from __future__ import annotations

import io as _io
import json
import logging
import math
import re
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
from etils import epath

from experiments.harness import io
from experiments.reports import branch_grid
from experiments.reports import files as files_lib
from experiments.runner import runs as runs_lib

log = logging.getLogger(__name__)

APPROACH_TITLES = {1: "minimum over training curves", 2: "isoFLOP profiles (parabola minima)",
                   3: "parametric fit L(N, D) = E + A/N^alpha + B/D^beta"}
CONVENTION_TEXT = {
    "6N": "C = 6 N D, N = all parameters (embeddings included), as Hoffmann et al. 2022",
    "6N_nonembed": "C = 6 N D, N = non-embedding parameters, as Kaplan et al. 2020",
    "exact": "C = matmul FLOPs of forward + backward, causal attention at half (scaling.flops 'exact')",
    "exact_noncausal": "C = matmul FLOPs of forward + backward, full attention (scaling.flops 'exact_noncausal')",
}


# ----------------------------------------------------------------------------- inputs


def params_column(flop_convention: str) -> str:
    """The results.csv column holding N under a FLOP convention."""
    return "n_params_nonembedding" if flop_convention == "6N_nonembed" else "n_params"


def analysis_inputs(results: pd.DataFrame, flop_convention: str) -> tuple[pd.DataFrame, dict]:
    """results.csv -> (the runs table `scaling.isoflop` reads, its ``flop_convention``/``k`` args)."""
    if flop_convention not in CONVENTION_TEXT:
        raise ValueError(f"unknown FLOP convention {flop_convention!r}; choose one of {sorted(CONVENTION_TEXT)}")
    params = params_column(flop_convention)
    runs = pd.DataFrame({
        "run_id": results["run_id"], "budget": results["budget"], "n_params": results[params],
        "tokens": results["tokens"], "flops": results[f"flops_{flop_convention}"],
        "eval_loss": results["eval_loss"], "eval_loss_sem": results["eval_loss_sem"],
        "status": results["status"]})
    if flop_convention in ("6N", "6N_nonembed"):
        return runs, {"flop_convention": "6ND"}
    done = runs[runs["status"] == "completed"]
    if done.empty:
        raise ValueError("no completed runs: nothing to analyze")
    k = float(np.median(done["flops"] / (done["n_params"] * done["tokens"])))
    return runs, {"k": k}


# ----------------------------------------------------------------------------- analysis


def start_grid(kind: str = "coarse"):
    """Starts of Approach 3's chinchilla fit: None (the law's default grid, 4,500 starts: Epoch
    AI's protocol, Besiroglu et al. 2024) for "full"; for "coarse", every other value of each
    parameter's default grid (3 x 3 x 3 x 3 x 3 = 243 starts over the same span)."""
    if kind == "full":
        return None
    if kind != "coarse":
        raise ValueError(f"start grid {kind!r}: 'coarse' or 'full'")
    import itertools

    import scaling.laws

    law = scaling.laws.get("chinchilla")
    axes = [p.grid[::2] for p in law.params]
    rows = list(itertools.product(*axes))
    return pd.DataFrame(rows, columns=list(law.param_names))


def analyze(workdir, results: pd.DataFrame, *, flop_convention: str = "6N", bootstrap: int = 400,
            bootstrap_approach1: int | None = None, seed: int = 0, approach3_starts=None):
    """Approaches 1-3 and the held-out-budget check on a grid's results.

    Returns ``(scaling.isoflop.IsoFlopAnalysis, curves DataFrame)``. Approach 1 reads the runs'
    training curves (metrics.jsonl). An approach that raises is left out and its reason added to
    the analysis notes; when Approach 3's bootstrap fails, its point fit is kept without intervals.
    """
    from scaling import isoflop

    runs, conv = analysis_inputs(results, flop_convention)
    curves = runs_lib.training_curves(workdir, results, flop_convention, params_column(flop_convention))
    b1 = min(bootstrap, 200) if bootstrap_approach1 is None else bootstrap_approach1
    notes, approaches = [], {}
    calls = {
        1: lambda: isoflop.approach1(curves, bootstrap=b1, seed=seed, **conv),
        2: lambda: isoflop.approach2(runs, bootstrap=bootstrap, seed=seed, drop_small_budgets=True,
                                     **conv),
        3: lambda: isoflop.approach3(runs, bootstrap=bootstrap, seed=seed, starts=approach3_starts,
                                     **conv),
    }
    for i, call in calls.items():
        if i == 1 and curves.empty:
            notes.append("Approach 1 skipped: no training curves")
            continue
        try:
            approaches[i] = call()
        except Exception as err:  # noqa: BLE001  (one approach failing must not lose the others)
            log.warning("Approach %d not fitted: %s", i, err, exc_info=not isinstance(err, ValueError))
            if i == 3 and bootstrap:  # the bootstrap can fail where the point fit does not
                try:
                    approaches[3] = isoflop.approach3(runs, bootstrap=0, seed=seed,
                                                      starts=approach3_starts, **conv)
                    notes.append(f"Approach 3: the bootstrap failed ({type(err).__name__}: {err}); "
                                 "the fit is reported without intervals")
                    continue
                except Exception as err2:  # noqa: BLE001
                    err = err2
            notes.append(f"Approach {i} ({APPROACH_TITLES[i]}) could not be fitted: "
                         f"{type(err).__name__}: {err}")
    check = None
    try:
        check = isoflop.extrapolation_check(runs, curves if not curves.empty else None,
                                            approach3_starts=approach3_starts,
                                            drop_small_budgets=True, **conv)
    except Exception as err:  # noqa: BLE001
        notes.append(f"extrapolation check skipped: {type(err).__name__}: {err}")
        log.warning("extrapolation check failed: %s", err, exc_info=not isinstance(err, ValueError))
    excluded = [{"run_id": r.run_id, "status": r.status, "reason": r.reason}
                for r in results.itertuples(index=False) if r.status != "completed"]
    label = conv.get("flop_convention") or f"{conv['k']:g}ND"
    if "k" in conv:
        notes.append(f"FLOP convention {flop_convention!r} is not k N D; the analysis uses the "
                     f"grid's effective k = median(C / (N D)) = {conv['k']:.4g}")
    return isoflop.IsoFlopAnalysis(approaches, check, excluded, label, notes), curves


# ----------------------------------------------------------------------------- files


def write_fits(workdir, analysis) -> list[epath.Path]:
    """fits/<name>.json for every fitted law (the `FittedLaw` JSON format of ``scaling.load``)."""
    return files_lib.write_fits(workdir, analysis.fitted_laws())


def write_plots(workdir, analysis, curves: pd.DataFrame, dpi: int = 110,
                grid_results: pd.DataFrame | None = None,
                params: str = "n_params") -> dict[str, epath.Path]:
    """The figures of `scaling.isoflop_plots` as PNG files, and a branch grid's tree
    (`branch_grid.tree_figure`, from ``grid_results``); a figure that cannot be drawn is skipped."""
    from scaling import isoflop_plots as plots

    a = analysis.approaches
    figures = {}
    if grid_results is not None and branch_grid.is_branch_grid(grid_results):
        figures["branch_tree"] = lambda: branch_grid.tree_figure(grid_results, params)
    if 2 in a:
        figures["isoflop_curves"] = lambda: plots.plot_isoflop_curves(a[2])
    fitted = [a[i] for i in sorted(a) if a[i].n_opt_law is not None]
    if fitted:
        figures["compute_optimal"] = lambda: plots.plot_compute_optimal(fitted)
    if 3 in a:
        figures["isoloss_frontier"] = lambda: plots.plot_isoloss_frontier(a[3])
    if 1 in a and not curves.empty:
        figures["training_envelope"] = lambda: plots.plot_training_envelope(curves, a[1])
    return files_lib.write_figures(workdir, figures, dpi)


# ----------------------------------------------------------------------------- report.md


def _g(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _iv(interval, digits: int = 3) -> str:
    if interval is None:
        return "n/a"
    return f"[{_g(interval[0], digits)}, {_g(interval[1], digits)}]"


def _pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.2f}%"


def render_report(analysis, results: pd.DataFrame, *, title: str, flop_convention: str,
                  study: Mapping | None = None, files: Mapping[str, list] | None = None,
                  wall_time_s: float | None = None, grid_results: pd.DataFrame | None = None,
                  extra: list[str] | None = None) -> str:
    """The Markdown report (see the module docstring for what it holds); ``grid_results``: a
    branch grid's whole results.csv (stable runs included), for its "Branch grid" section;
    ``extra``: lines put before the extrapolation check (the law selection)."""
    a = analysis.approaches
    lines = [f"# isoFLOP study: {title}", ""]
    counts = results["status"].value_counts().to_dict()
    budgets = sorted(results["budget"].unique())
    done = results[results["status"] == "completed"]
    lines += ["## What was run", ""]
    lines.append(f"- {len(results)} runs at {len(budgets)} budgets "
                 f"({', '.join(_g(b, 3) for b in budgets)} FLOPs): "
                 + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    lines.append(f"- FLOP convention `{flop_convention}`: {CONVENTION_TEXT[flop_convention]}; "
                 f"the analysis uses `{analysis.flop_convention}`")
    pcol = params_column(flop_convention)
    if not done.empty:
        lines.append(f"- model sizes N ({pcol}) {_g(done[pcol].min())} to {_g(done[pcol].max())}, "
                     f"tokens D {_g(done['tokens'].min())} to {_g(done['tokens'].max())}, "
                     f"total training compute {_g(done[f'flops_{flop_convention}'].sum())} FLOPs")
    if study:
        data = (study.get("base") or {}).get("data") or {}
        lines.append(f"- data: `{data.get('dataset', '?')}`, tokenizer `{data.get('tokenizer', '?')}`, "
                     f"sequence length {data.get('seq_len', '?')}; sizes per budget "
                     f"{study.get('sizes_per_budget')}, spread {study.get('spread')}x around "
                     + ("the given sizes" if study.get("sizes") else
                        f"{study.get('center_scale', 1.0)} x the N_opt(C) of the prior law "
                        f"`{study.get('prior')}`")
                     + f"; batch rule {study.get('rows_per_step')!r} sequences per step, learning "
                     f"rate {study.get('lr_scale', 1.0)} x {study.get('lr')!r}; seeds {study.get('seeds')}")
    if wall_time_s is not None:
        lines.append(f"- wall time of this invocation: {wall_time_s / 60:.1f} min")
    lines.append("")
    if grid_results is not None and branch_grid.is_branch_grid(grid_results):
        lines += ["## Branch grid", ""] + branch_grid.section(grid_results, flop_convention, pcol) + [""]

    lines += ["## Compute-optimal exponents", "",
              "N_opt ∝ C^a, D_opt ∝ C^b, L_opt(C); intervals are central 95% bootstrap percentiles.", "",
              "| approach | a | a 95% | b | b 95% | L_opt exponent | 95% |",
              "|---|---|---|---|---|---|---|"]
    for i in (1, 2, 3):
        r = a.get(i)
        if r is None or r.exponents is None:
            lines.append(f"| {i}. {APPROACH_TITLES[i]} | not fitted | | | | | |")
            continue
        e = r.exponents
        le = e.extra.get("loss_exponent") or {}
        lines.append(f"| {i}. {APPROACH_TITLES[i]} | {e.a:.3f} | {_iv(e.a_interval)} | {e.b:.3f} | "
                     f"{_iv(e.b_interval)} | {_g(le.get('value'))} ({le.get('param', '')}) | "
                     f"{_iv(le.get('interval'))} |")
    lines += ["", "Hoffmann et al. 2022 (Table 2, 10th-90th percentiles) found a = 0.50, 0.49, 0.46 "
              "and b = 0.50, 0.51, 0.54 for Approaches 1, 2, 3 (large models, MassiveText).", ""]

    if 3 in a and a[3].parametric is not None:
        p = a[3].parametric
        lines += ["## Parametric fit (Approach 3)", "",
                  "| parameter | value | 95% |", "|---|---|---|"]
        for name, value in p.params.items():
            interval = p.interval(name) if p.samples is not None else None
            lines.append(f"| {name} | {_g(value, 4)} | {_iv(interval, 4)} |")
        lines.append("")
    # what the loss fits are unsure about (scaling.fitting.diagnostics): bounds, domain edges,
    # intervals spanning orders of magnitude; what is derived from a flagged fit is marked unreliable.
    # N_opt(C) and D_opt(C) are left out: the prefactor A of A C^a is its value at C = 1, far outside
    # the budgets, so its interval always spans decades while the exponent (above) is what is used.
    flagged = [line for i in sorted(a) for name, law in (("parametric L(N, D)", a[i].parametric),
                                                         ("L_opt(C)", a[i].loss_opt_law))
               if law is not None and (line := law.diagnostics_markdown(f"Approach {i} {name}"))]
    if flagged:
        lines += ["## Fits flagged as unsure", ""] + [f"- {line}" for line in flagged] + [""]

    lines += ["## Tokens per parameter at the optimum", "", "| approach | C | D_opt / N_opt | 95% |",
              "|---|---|---|---|"]
    for i in sorted(a):
        for t in a[i].tokens_per_param:
            lines.append(f"| {i} | {_g(t['C'])} | {_g(t['value'])} | {_iv(t.get('interval'))} |")
    lines.append("")

    if 2 in a:
        lines += ["## IsoFLOP minima (Approach 2)", "",
                  "| budget C | runs | sampled N | parabola fitted on | N_opt | N_opt 95% | L_opt | inside | D/N |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for b in a[2].budgets:
            used = f"{len(b.used)} of {b.n_runs} runs" if b.used else "n/a"
            flags = f" ({'; '.join(b.flags)})" if b.flags else ""
            lines.append(f"| {_g(b.budget)} | {b.n_runs} | {_g(b.n_range[0])}-{_g(b.n_range[1])} | {used}{flags} | "
                         f"{_g(b.n_opt)} | {_iv(b.n_opt_interval)} | {_g(b.loss_opt, 4)} | "
                         f"{'yes' if b.minimum_inside else 'NO: ' + str(b.suggestion)} | "
                         f"{_g(b.tokens_per_param)} |")
        rules = sorted({re.sub(r" \([^)]*\)", "", b.fit_rule) for b in a[2].budgets if b.fit_rule})
        lines += ["", ("Which runs each parabola used: " + "; ".join(rules) + ".") if rules else "", ""]

    lines += list(extra or [])
    check = analysis.extrapolation
    lines += ["## Extrapolation to the held-out largest budget", ""]
    if check is None:
        lines += ["Not run (needs at least 3 budgets).", ""]
    else:
        ref = check.reference
        lines += [f"Each approach refitted on the budgets {', '.join(_g(b) for b in check.fitted_budgets)} "
                  f"predicts the optimum at C = {_g(check.held_out_budget)}; measured reference: "
                  f"{ref['source'].replace('_', ' ')}, loss {_g(ref['loss'], 5)} at N = {_g(ref['n_opt'])}.",
                  "", "| approach | predicted L_opt | loss error | predicted N_opt | N_opt error |",
                  "|---|---|---|---|---|"]
        for i in sorted(check.predictions, key=int):
            p = check.predictions[i]
            if "skipped" in p:
                lines.append(f"| {i} | skipped: {p['skipped']} | | | |")
            else:
                lines.append(f"| {i} | {_g(p['loss'], 5)} | {_pct(p['loss_rel_error'])} | "
                             f"{_g(p['n_opt'])} | {_pct(p['n_opt_rel_error'])} |")
        lines.append("")

    bad = results[results["status"] != "completed"]
    lines += ["## Failed, diverged and unfinished runs", ""]
    if bad.empty:
        lines += ["None: every run completed.", ""]
    else:
        lines += ["| run_id | status | reason |", "|---|---|---|"]
        for r in bad.itertuples(index=False):
            lines.append(f"| {r.run_id} | {r.status} | {r.reason or ''} |")
        lines.append("")

    notes = list(analysis.notes)
    for i in sorted(a):
        notes += [f"Approach {i}: {n}" for n in a[i].notes]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if files:
        lines += ["## Files", ""]
        for kind, paths in files.items():
            lines.append(f"- {kind}: " + ", ".join(f"`{p}`" for p in paths))
        lines.append("")
    return "\n".join(lines)


def loss_law_selection(results: pd.DataFrame, flop_convention: str, approach3_starts=None):
    """`scaling.select` over the library's loss laws of (N, D) (chinchilla, Approach 3's law;
    kaplan; overtraining), holding out the largest budgets (`experiments.reports.choose`).
    Returns ``(Select, result)``."""
    from experiments.reports import choose

    done = results[results["status"] == "completed"]
    columns = {"N": params_column(flop_convention), "D": "tokens", "loss": "eval_loss", "C": "budget"}
    chinchilla = {"law": "chinchilla"}
    if approach3_starts is not None:
        chinchilla["starts"] = approach3_starts
    spec = choose.Select(
        "loss", {"chinchilla": chinchilla, "kaplan": "kaplan", "overtraining": "overtraining"},
        used="chinchilla", used_for="Approach 3 (the parametric fit and the frontier drawn from it)",
        holdout="budget", splits=2, min_train_levels=3, columns=columns,
        what="which loss law L(N, D) extrapolates to larger budgets")
    return spec, choose.run_select(spec, done.reset_index(drop=True))


def write_outputs(workdir, results: pd.DataFrame | None = None, *, flop_convention: str = "6N",
                  title: str = "isoFLOP grid", study: Mapping | None = None, bootstrap: int = 400,
                  bootstrap_curves: int | None = None, seed: int = 0, approach3_starts="coarse",
                  wall_time_s: float | None = None, analyzed=None,
                  grid_results: pd.DataFrame | None = None) -> dict:
    """Analyze a finished (or partial) grid and write curves.csv, fits, plots, analysis.json and
    report.md. ``approach3_starts``: "coarse", "full" (`start_grid`) or a DataFrame of starts.
    ``analyzed``: the ``(analysis, curves)`` of an earlier `analyze` call, to write without refitting.
    ``grid_results``: a branch grid's whole results (its stable runs too; ``results`` holds the
    branches only), for the report's "Branch grid" section and plots/branch_tree.png.
    Returns ``{"analysis", "fits", "plots", "report", "fitted", "notes"}``; ``fitted`` names the
    laws written to fits/ (empty when no approach could be fitted)."""
    workdir = epath.Path(workdir)
    results = runs_lib.read_results(workdir) if results is None else results
    started = time.perf_counter()
    if isinstance(approach3_starts, str):
        approach3_starts = start_grid(approach3_starts)
    if analyzed is None:
        analyzed = analyze(workdir, results, flop_convention=flop_convention, bootstrap=bootstrap,
                           bootstrap_approach1=bootstrap_curves, seed=seed,
                           approach3_starts=approach3_starts)
    analysis, curves = analyzed
    buffer = _io.StringIO()
    curves.to_csv(buffer, index=False)
    io.write_text_atomic(workdir / "curves.csv", buffer.getvalue())
    from experiments.reports import choose

    fits = write_fits(workdir, analysis)
    plots = write_plots(workdir, analysis, curves, grid_results=grid_results,
                        params=params_column(flop_convention))
    select_spec, selection = loss_law_selection(results, flop_convention, approach3_starts)
    plots.update(files_lib.write_figures(workdir, {"select_loss": lambda: choose.select_figure(selection)}))
    io.write_json(workdir / "select_loss.json", choose.select_json(selection, "chinchilla"))
    io.write_text_atomic(workdir / "analysis.json",
                         json.dumps(analysis.to_dict(), indent=1, allow_nan=False) + "\n")
    files = {"results": ["results.csv"], "fits": [f"fits/{p.name}" for p in fits],
             "plots": [f"plots/{p.name}" for p in plots.values()],
             "analysis": ["analysis.json", "curves.csv", "select_loss.json"]}
    selection_lines = [f"## Law selection: {select_spec.what}", "",
                       *choose.select_lines(select_spec, selection, "chinchilla"), ""]
    text = render_report(analysis, results, title=title, flop_convention=flop_convention,
                         study=study, files=files, wall_time_s=wall_time_s, grid_results=grid_results,
                         extra=selection_lines)
    io.write_text_atomic(workdir / "report.md", text)
    log.info("analysis and report written in %.1f s", time.perf_counter() - started)
    return {"analysis": analysis, "fits": fits, "plots": plots, "report": workdir / "report.md",
            "fitted": [p.stem for p in fits], "notes": list(analysis.notes)}


def analyze_stage(context) -> dict:
    """`write_outputs` as a study's analyze stage (`experiments.runner.study.StudyContext`): reads
    ``bootstrap``, ``bootstrap_curves`` and ``start_grid`` from the study's declaration."""
    study = context.declaration
    description = io.read_json(context.workdir / "study.json")["study"] if (
        context.workdir / "study.json").exists() else None
    results = grid_results = context.results
    if branch_grid.is_branch_grid(results):  # its stable runs are no isoFLOP points
        results = results[results["role"] == "branch"].reset_index(drop=True)
    else:
        grid_results = None
    return write_outputs(
        context.workdir, results, flop_convention=context.flop_convention,
        title=context.title, study=description, bootstrap=getattr(study, "bootstrap", 400),
        bootstrap_curves=getattr(study, "bootstrap_curves", None),
        approach3_starts=getattr(study, "start_grid", "coarse"), wall_time_s=context.elapsed_s(),
        grid_results=grid_results)


# ----------------------------------------------------------------------------- prediction rung


def rung_runs(workdir, budgets, make_run, *, approach: int = 2) -> list:
    """The ladder's next rung: at each budget (beyond the grid), the model that the study's fitted
    N_opt(C) of ``approach`` (``fits/approach<i>_n_opt.json``) calls compute-optimal, built by
    ``make_run(budget, n_target) -> Run``. No rung when that law was not fitted."""
    from experiments.runner.design import prior_optimal_params

    path = epath.Path(workdir) / "fits" / f"approach{approach}_n_opt.json"
    if not budgets:
        return []
    if not path.exists():
        log.warning("no prediction rung: %s was not fitted", path.name)
        return []
    return [make_run(float(b), prior_optimal_params(float(b), prior=str(path))) for b in budgets]


def rung_report(context, rung_results: pd.DataFrame, *, approach: int = 2) -> dict:
    """Predicted against measured loss of the rung's runs: every approach's L_opt(C) and the
    parametric L(N, D) at the trained N and D, with 95% bootstrap bands; writes rung.json and
    adds a "Prediction rung" section to report.md. Returns ``{"rung": rows}``."""
    workdir = context.workdir
    pcol = params_column(context.flop_convention)
    fits = {}
    for name in [f"approach{i}_loss_opt" for i in (1, 2, 3)] + ["approach3_parametric"]:
        path = workdir / "fits" / f"{name}.json"
        if path.exists():
            import scaling

            fits[name] = scaling.load(path)
    rows = []
    for r in rung_results.to_dict("records"):
        row = {"run_id": r["run_id"], "budget": float(r["budget"]), "n_params": float(r[pcol]),
               "tokens": float(r["tokens"]), "status": r["status"], "reason": r["reason"],
               "eval_loss": r["eval_loss"], "eval_loss_sem": r["eval_loss_sem"], "predictions": {}}
        for name, law in fits.items():
            if name == "approach3_parametric":
                point, band = files_lib.predict_with_band(law, N=row["n_params"], D=row["tokens"])
            else:
                point, band = files_lib.predict_with_band(law, x=row["budget"])
            measured = row["eval_loss"]
            error = point / measured - 1 if r["status"] == "completed" and math.isfinite(measured) else None
            covered = None if band is None or error is None else bool(band[0] <= measured <= band[1])
            row["predictions"][name] = {"loss": point, "interval": band, "rel_error": error,
                                        "interval_covers": covered}
        rows.append(row)
    io.write_json(workdir / "rung.json", {"approach_for_n_opt": approach, "rows": rows})

    lines = ["## Prediction rung", "",
             f"The study's fitted N_opt(C) (Approach {approach}) chose the model for each budget beyond "
             "the grid; it was trained like the grid's runs (`rung/`), and each fitted law predicted its "
             "loss before it was trained: L_opt(C) of every approach, and the parametric L(N, D) at the "
             "trained N and D. Bands are central 95% bootstrap percentiles.", "",
             "| budget C | N | D | measured loss | law | predicted | 95% | error | band covers |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        measured = (f"{row['eval_loss']:.4f} ± {row['eval_loss_sem']:.4f}" if row["status"] == "completed"
                    else f"{row['status']}: {row['reason']}")
        for name, p in row["predictions"].items():
            covers = "n/a" if p["interval_covers"] is None else ("yes" if p["interval_covers"] else "no")
            lines.append(f"| {_g(row['budget'])} | {_g(row['n_params'])} | {_g(row['tokens'])} | {measured} | "
                         f"{name} | {_g(p['loss'], 5)} | {_iv(p['interval'], 4)} | "
                         f"{_pct(p['rel_error']) if p['rel_error'] is not None else 'n/a'} | {covers} |")
    report = workdir / "report.md"
    text = report.read_text() if report.exists() else ""
    io.write_text_atomic(report, text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")
    return {"rung": rows}
