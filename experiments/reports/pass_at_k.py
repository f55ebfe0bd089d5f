"""The analyze stage of a test-time-compute study: pass@k laws per model and across models, the
verifier ceiling, the training + sampling compute frontier, held-out checks, figures, report.md.

    run_study(..., measures=[counts], analyze=pass_at_k.REPORT.stage)     # in an experiment file
    out = pass_at_k.analyze(counts, results, queries=1e6)                 # on any counts table

The report is declared on the report kit (`experiments.reports.kit`): `REPORT` names its sections,
figures and the frontier table; `compute` fits (per model, so not a single `kit.Fit`).

Inputs: counts.csv, one row per (run, problem) with n samples, c exactly correct, c_weak accepted by
the weak checker, the run's training ``flops`` and ``sampling_flops`` of its n samples.

Per model (`scaling.fit`, one engine): ``pass_at_k_beta`` (Schaeffer et al. 2025: p_i ~ Beta,
beta-binomial likelihood, profile-likelihood intervals), ``pass_at_k_zero_inflated_beta`` (a mass
pi of never-solved problems) and ``coverage_power_law`` (Brown et al. 2024: coverage(k) =
exp(-a k^-b)) on the measured pass@k curve (Chen et al. 2021's unbiased estimator, k = 1, 2, 4, ...,
n). A model whose table is degenerate (almost nothing solved) is reported with the reason.

Across models: ``coverage_compute_law``, coverage(N, D, k) = exp(-A N^-a_N D^-a_D k^-b), on every
model's pass@k curve. Weak checker: ``verifier_ceiling`` (Stroebl et al. 2024) on best-of-k
accuracy, acc(k) = mean_i q_c (1 - (1 - q_c - q_f)^k) / (q_c + q_f) with q_c = c/n and
q_f = (c_weak - c)/n per problem, beside the measured false-positive rate.

Compute ("6N" training, "2N" sampling, as `scaling.flops`): answering Q queries with k samples costs
C_total = C_train + Q k f, f = sampling FLOPs per sample; the frontier is the (model, k) with the
highest mean pass@k among those costing no more.

Held-out checks: (1) each model's Beta laws fitted on a random 16 of its n samples per problem
(hypergeometric, seeded) predict pass@n of all n; (2) the cross-model law fitted on the smaller
budgets predicts the largest budget's pass@k curves.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pandas as pd

from experiments.reports import files as files_lib
from experiments.reports import task_prediction
from experiments.reports.kit import Plot, Report, Section, Select, fmt as _g, interval as _iv

log = logging.getLogger(__name__)

BETA_LAWS = ("pass_at_k_beta", "pass_at_k_zero_inflated_beta")


def ks_for(n: int) -> np.ndarray:
    """1, 2, 4, ... up to n (n itself included)."""
    ks = 2 ** np.arange(int(math.log2(n)) + 1)
    return np.unique(np.append(ks, n)).astype(np.float64)


def pass_curve(rows: pd.DataFrame, ks) -> np.ndarray:
    """Mean over problems of the unbiased pass@k estimator (Chen et al. 2021)."""
    from scaling.laws.pass_at_k import pass_at_k_curve

    return np.asarray(pass_at_k_curve(rows["n"].to_numpy(), rows["c"].to_numpy(), ks), np.float64)


def _quiet_fit(*args, **kwargs):
    import scaling

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = scaling.fit(*args, **kwargs)
    return fitted, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def per_model(counts: pd.DataFrame, results: pd.DataFrame, *, bootstrap: int = 0) -> list[dict]:
    """Fits and measured curves of every model (module docstring)."""
    from experiments.harness.tasks import weak_false_positive_rate
    from scaling.laws.pass_at_k import fitted_pass_at_k

    out = []
    meta = results.set_index("run_id")
    for rid, rows in counts.groupby("run_id", sort=False):
        n = int(rows["n"].max())
        ks = ks_for(n)
        measured = pass_curve(rows, ks)
        entry = {"run_id": rid, "n_params": float(meta.loc[rid, "n_params"]), "tokens": float(meta.loc[rid, "tokens"]),
                 "flops": float(rows["flops"].iloc[0]), "budget": float(meta.loc[rid, "budget"]),
                 "n": n, "problems": len(rows), "solved_problems": int((rows["c"] > 0).sum()),
                 "ks": ks.tolist(), "pass_at_k": measured.tolist(), "fits": {}, "notes": [],
                 "flops_per_sample": float((rows["sampling_flops"] / rows["n"]).mean()),
                 "weak_fpr": weak_false_positive_rate(rows.to_dict("records"))}
        for name in BETA_LAWS:
            try:
                fitted, warned = _quiet_fit(name, rows[["n", "c"]], bootstrap=bootstrap)
                curve = fitted_pass_at_k(fitted, ks)
                entry["fits"][name] = {"law": fitted, "curve": curve}
                entry["notes"] += [f"{name}: {w}" for w in warned]
            except ValueError as err:
                entry["notes"].append(f"{name} not fitted: {err}")
        inside = (measured > 0) & (measured < 1)
        if inside.sum() >= 3:
            try:
                fitted, _ = _quiet_fit("coverage_power_law", pd.DataFrame({"k": ks[inside], "coverage": measured[inside]}))
                entry["fits"]["coverage_power_law"] = {"law": fitted}
            except ValueError as err:
                entry["notes"].append(f"coverage_power_law not fitted: {err}")
        else:
            entry["notes"].append("coverage_power_law not fitted: fewer than 3 values of pass@k in (0, 1)")
        entry["verifier"] = verifier(rows, ks)
        out.append(entry)
    return out


def verifier(rows: pd.DataFrame, ks) -> dict:
    """Best-of-k accuracy under the weak checker, and ``verifier_ceiling`` fitted to it."""
    q_c = (rows["c"] / rows["n"]).to_numpy()[:, None]
    q_f = ((rows["c_weak"] - rows["c"]) / rows["n"]).to_numpy()[:, None]
    accept = q_c + q_f
    k = np.asarray(ks)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(accept > 0, q_c / np.where(accept > 0, accept, 1) * -np.expm1(k * np.log1p(-np.minimum(accept, 1))), 0.0)
    accuracy = acc.mean(axis=0)
    result = {"ks": list(map(float, ks)), "accuracy": accuracy.tolist(), "fit": None, "note": ""}
    keep = accuracy > 0
    if keep.sum() >= 3:
        try:
            fitted, _ = _quiet_fit("verifier_ceiling", pd.DataFrame({"k": np.asarray(ks)[keep], "accuracy": accuracy[keep]}))
            result["fit"] = fitted
        except ValueError as err:
            result["note"] = f"verifier_ceiling not fitted: {err}"
    else:
        result["note"] = "verifier_ceiling not fitted: best-of-k accuracy is 0 at almost every k"
    return result


def curve_points(models: list[dict]) -> pd.DataFrame:
    """(N, D, k, coverage, budget, run_id) of every model's measured pass@k in (0, 1)."""
    rows = []
    for m in models:
        for k, cov in zip(m["ks"], m["pass_at_k"]):
            if 0 < cov < 1:
                rows.append({"run_id": m["run_id"], "N": m["n_params"], "D": m["tokens"], "k": k,
                             "coverage": cov, "budget": m["budget"]})
    return pd.DataFrame(rows, columns=["run_id", "N", "D", "k", "coverage", "budget"])


def cross_model(models: list[dict], *, bootstrap: int = 0):
    """``coverage_compute_law`` on every model's curve (None with the reason when it cannot be fitted)."""
    points = curve_points(models)
    if len(points) < 8 or points["run_id"].nunique() < 2:
        return None, f"too few pass@k values in (0, 1) ({len(points)} from {points['run_id'].nunique()} models)"
    try:
        fitted, _ = _quiet_fit("coverage_compute_law", points, bootstrap=bootstrap)
        return fitted, ""
    except ValueError as err:
        return None, str(err)


def held_out_samples(counts: pd.DataFrame, models: list[dict], *, first: int = 16, seed: int = 0) -> list[dict]:
    """Fit each model's Beta laws on ``first`` of its n samples per problem, predict pass@n."""
    from scaling.laws.pass_at_k import fitted_pass_at_k

    rng = np.random.default_rng(seed)
    out = []
    for m in models:
        rows = counts[counts["run_id"] == m["run_id"]]
        n = int(rows["n"].max())
        if n <= first:
            continue
        sub = pd.DataFrame({"n": first, "c": rng.hypergeometric(rows["c"].to_numpy(), (rows["n"] - rows["c"]).to_numpy(), first)})
        measured = float(m["pass_at_k"][-1])
        for name in BETA_LAWS:
            try:
                fitted, _ = _quiet_fit(name, sub)
                curve = fitted_pass_at_k(fitted, [n])
            except ValueError as err:
                out.append({"run_id": m["run_id"], "law": name, "skipped": str(err)})
                continue
            predicted = float(curve["pass_at_k"][0])
            band = None if curve["interval"] is None else (float(curve["interval"][0][0]), float(curve["interval"][1][0]))
            out.append({"run_id": m["run_id"], "law": name, "k": n, "measured": measured, "predicted": predicted,
                        "interval": band, "interval_method": curve.get("interval_method"),
                        "rel_error": predicted / measured - 1 if measured > 0 else None,
                        "covers": None if band is None else bool(band[0] <= measured <= band[1])})
    return out


def held_out_budget(models: list[dict], *, bootstrap: int = 100) -> dict:
    """The cross-model law fitted without the largest budget predicts that budget's curves."""
    budgets = sorted({m["budget"] for m in models})
    if len(budgets) < 3:
        return {"skipped": f"needs at least 3 budgets ({len(budgets)} here): at one budget N and D move "
                           "together (D = C / 6N), so the law's N and D exponents are not identified"}
    largest = budgets[-1]
    train = [m for m in models if m["budget"] < largest]
    law, reason = cross_model(train, bootstrap=bootstrap)
    if law is None:
        return {"skipped": f"cross-model law not fitted on the smaller budgets: {reason}"}
    rows = []
    for m in (m for m in models if m["budget"] == largest):
        for k, measured in zip(m["ks"], m["pass_at_k"]):
            predicted, band = files_lib.predict_with_band(law, N=m["n_params"], D=m["tokens"], k=k)
            rows.append({"run_id": m["run_id"], "k": k, "measured": measured, "predicted": predicted,
                         "interval": band, "rel_error": predicted / measured - 1 if measured > 0 else None,
                         "covers": None if band is None else bool(band[0] <= measured <= band[1])})
    return {"budget": largest, "fitted_on": budgets[:-1], "law": law, "rows": rows}


def frontier(models: list[dict], queries: float) -> pd.DataFrame:
    """Every (model, k) with its total compute and pass rate; ``on_frontier`` marks the points no
    cheaper point beats."""
    rows = []
    for m in models:
        for k, p in zip(m["ks"], m["pass_at_k"]):
            rows.append({"run_id": m["run_id"], "n_params": m["n_params"], "tokens": m["tokens"], "k": k,
                         "pass_at_k": p, "train_flops": m["flops"],
                         "sampling_flops": queries * k * m["flops_per_sample"]})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["total_flops"] = table["train_flops"] + table["sampling_flops"]
    table = table.sort_values(["total_flops", "pass_at_k"], ascending=[True, False]).reset_index(drop=True)
    best = -np.inf
    flags = []
    for p in table["pass_at_k"]:
        flags.append(bool(p > best))
        best = max(best, p)
    table["on_frontier"] = flags
    return table


def analyze(counts: pd.DataFrame, results: pd.DataFrame, *, queries: float = 1e6, bootstrap: int = 0) -> dict:
    done = counts[counts["status"] == "completed"] if "status" in counts else counts
    models = per_model(done, results, bootstrap=bootstrap)
    law, reason = cross_model(models, bootstrap=max(bootstrap, 100))
    return {"models": models, "cross_model": law, "cross_model_note": reason,
            "held_out_samples": held_out_samples(done, models), "held_out_budget": held_out_budget(models),
            "frontier": frontier(models, queries), "queries": queries}


# ----------------------------------------------------------------------------- report


def fitted_laws(out: dict) -> dict:
    """``{file stem: FittedLaw}`` of everything fitted (fits/<stem>.json)."""
    laws = {}
    for i, m in enumerate(out["models"]):
        for name, fit in m["fits"].items():
            laws[f"{name}__{m['run_id']}"] = fit["law"]
        if m["verifier"]["fit"] is not None:
            laws[f"verifier_ceiling__{m['run_id']}"] = m["verifier"]["fit"]
    if out["cross_model"] is not None:
        laws["coverage_compute_law"] = out["cross_model"]
    return laws


def compute(context) -> dict:
    """`analyze` on the study's counts.csv; its laws and notes for the kit."""
    study = context.declaration
    out = analyze(context.measurements["counts"], context.results, queries=getattr(study, "queries", 1e6),
                  bootstrap=getattr(study, "bootstrap", 0))
    notes = [n for m in out["models"] for n in m["notes"]] + ([out["cross_model_note"]] if out["cross_model_note"] else [])
    out["task"] = task_prediction.safe_analyze(context.measurements.get("task"), out["models"], cross_model,
                                               step1=getattr(study, "task_step1", "final"),
                                               bootstrap=getattr(study, "task_bootstrap", 100))
    return {**out, "laws": {**fitted_laws(out), **task_prediction.fitted_laws(out["task"])}, "notes": notes}


def what_was_run(a) -> list[str]:
    models, results = a.out["models"], a.results
    return [f"- {len(results)} runs ({int((results['status'] == 'completed').sum())} completed), "
            f"{len(models)} sampled: {models[0]['problems'] if models else 0} held-out problems x "
            f"{models[0]['n'] if models else 0} samples each"]


def per_model_table(a) -> list[str]:
    lines = ["| run | N | D | solved | pass@1 | pass@n | Beta alpha | Beta beta | ZI-Beta pi | coverage b | notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in a.out["models"]:
        beta = m["fits"].get("pass_at_k_beta", {}).get("law")
        zib = m["fits"].get("pass_at_k_zero_inflated_beta", {}).get("law")
        cov = m["fits"].get("coverage_power_law", {}).get("law")
        lines.append(f"| {m['run_id']} | {_g(m['n_params'])} | {_g(m['tokens'])} | {m['solved_problems']}/{m['problems']} | "
                     f"{m['pass_at_k'][0]:.4f} | {m['pass_at_k'][-1]:.4f} | "
                     f"{_g(beta.params['alpha']) if beta else 'n/a'} {_iv(beta.interval('alpha')) if beta else ''} | "
                     f"{_g(beta.params['beta']) if beta else 'n/a'} | {_g(zib.params['pi']) if zib else 'n/a'} | "
                     f"{_g(cov.params['b']) if cov else 'n/a'} | {'; '.join(n[:90] for n in m['notes'][:2])} |")
    return lines


def across_models(a) -> list[str]:
    law = a.out["cross_model"]
    if law is None:
        return [f"Not fitted: {a.out['cross_model_note']}"]
    return [f"- {name} = {_g(value, 4)} (95% {_iv(law.interval(name) if law.samples is not None else None)})"
            for name, value in law.params.items()]


def held_out_samples_section(a) -> list[str]:
    held = [h for h in a.out["held_out_samples"] if "predicted" in h]
    if not held:
        return ["Not run: " + "; ".join(h.get("skipped", "") for h in a.out["held_out_samples"][:2]) or "n <= 16"]
    lines = ["| run | law | k | measured | predicted | 95% | error | covers |", "|---|---|---|---|---|---|---|---|"]
    for h in held:
        err = "n/a" if h["rel_error"] is None else f"{100 * h['rel_error']:+.1f}%"
        lines.append(f"| {h['run_id']} | {h['law']} | {int(h['k'])} | {h['measured']:.4f} | {h['predicted']:.4f} | "
                     f"{_iv(h['interval'], 3)} | {err} | {h['covers']} |")
    for name in BETA_LAWS:
        errs = [abs(h["rel_error"]) for h in held if h["law"] == name and h["rel_error"] is not None]
        cov = [h["covers"] for h in held if h["law"] == name and h["covers"] is not None]
        if errs:
            lines.append(f"\n- {name}: median |error| {100 * float(np.median(errs)):.1f}%, band covers "
                         f"{sum(cov)}/{len(cov)}")
    return lines


def held_out_budget_section(a) -> list[str]:
    hb = a.out["held_out_budget"]
    if "skipped" in hb:
        return [f"Not run: {hb['skipped']}"]
    lines = [f"coverage_compute_law fitted on budgets {', '.join(_g(b) for b in hb['fitted_on'])}, "
             f"predicting C = {_g(hb['budget'])}:", "",
             "| run | k | measured | predicted | 95% | error | covers |", "|---|---|---|---|---|---|---|"]
    for r in hb["rows"]:
        err = "n/a" if r["rel_error"] is None else f"{100 * r['rel_error']:+.1f}%"
        lines.append(f"| {r['run_id']} | {int(r['k'])} | {r['measured']:.4f} | {r['predicted']:.4f} | "
                     f"{_iv(r['interval'])} | {err} | {r['covers']} |")
    return lines


def weak_checker(a) -> list[str]:
    lines = ["| run | measured FPR | fitted fpr | fitted p_correct | ceiling p/(p + fpr(1-p)) | accuracy at k=n |",
             "|---|---|---|---|---|---|"]
    for m in a.out["models"]:
        v = m["verifier"]
        fit = v["fit"]
        if fit is None:
            lines.append(f"| {m['run_id']} | {_g(m['weak_fpr'])} | {v['note']} | | | {v['accuracy'][-1]:.4f} |")
            continue
        p, f = fit.params["p_correct"], fit.params["fpr"]
        lines.append(f"| {m['run_id']} | {_g(m['weak_fpr'])} | {_g(f)} | {_g(p)} | {_g(p / (p + f * (1 - p)))} | "
                     f"{v['accuracy'][-1]:.4f} |")
    return lines


def frontier_section(a) -> list[str]:
    lines = ["C_total = C_train (6N) + queries x k x sampling FLOPs per sample (2N per token, prefill shared). "
             "Points on the frontier (no cheaper (model, k) has a higher pass rate):", "",
             "| C_total | model | N | k | pass@k |", "|---|---|---|---|---|"]
    table = a.out["frontier"]
    if not table.empty:
        for r in table[table["on_frontier"]].itertuples():
            lines.append(f"| {_g(r.total_flops)} | {r.run_id} | {_g(r.n_params)} | {int(r.k)} | {r.pass_at_k:.4f} |")
    return lines


def _plots():
    from experiments.reports import pass_at_k_plots as tplots

    return tplots


def selection_points(context) -> pd.DataFrame:
    """Every completed model's measured pass@k in (0, 1) (as `curve_points`), with its training
    FLOPs ``C`` and nominal ``train_budget``: the table the cross-model laws are selected on."""
    counts = context.measurements["counts"]
    done = counts[counts["status"] == "completed"] if "status" in counts else counts
    meta = context.results.set_index("run_id")
    rows = []
    for rid, group in done.groupby("run_id", sort=False):
        ks = ks_for(int(group["n"].max()))
        for k, cov in zip(ks, pass_curve(group, ks)):
            if 0 < cov < 1:
                rows.append({"run_id": rid, "N": float(meta.loc[rid, "n_params"]), "D": float(meta.loc[rid, "tokens"]),
                             "C": float(group["flops"].iloc[0]), "train_budget": float(meta.loc[rid, "budget"]),
                             "k": float(k), "coverage": float(cov)})
    return pd.DataFrame(rows, columns=["run_id", "N", "D", "C", "train_budget", "k", "coverage"])


# The cross-model laws of the library: coverage in (N, D, k), and in (C, k) with one exponent of
# training compute; each refitted without the largest training budgets and asked for their pass@k.
SELECT_COVERAGE = Select(
    "coverage", {"coverage_compute_law": "coverage_compute_law", "coverage_budget_law": "coverage_budget_law"},
    used="coverage_compute_law", used_for="the cross-model law and held-out check 2",
    table=selection_points, holdout="train_budget", splits=2, min_train_levels=3,
    what="which cross-model pass@k law extrapolates to larger training budgets")

REPORT = Report(
    title="Test-time compute study", compute=compute, show_notes=False, selects=[SELECT_COVERAGE],
    sections=[
        Section("What was run", what_was_run),
        Section("Per model: measured pass@k and fitted laws", per_model_table),
        Section("Across models: coverage(N, D, k) = exp(-A N^-a_N D^-a_D k^-b)", across_models),
        Section("Held-out check 1: 16 samples per problem predict pass@n", held_out_samples_section),
        Section("Held-out check 2: the smaller budgets predict the largest budget's pass@k", held_out_budget_section),
        Section("Weak checker: best-of-k accuracy and its ceiling (Stroebl et al. 2024)", weak_checker),
        Section(lambda a: f"Training + sampling compute for {_g(a.out['queries'])} queries", frontier_section),
        Section("Two-step task prediction: (N, D) -> task loss -> pass@1, the largest model held out",
                task_prediction.section)],
    plots=[Plot("pass_at_k", lambda a: _plots().plot_pass_at_k(a.out["models"])),
           Plot("neg_log_pass_at_k", lambda a: _plots().plot_neg_log_pass(a.out["models"], a.out["cross_model"])),
           Plot("params_vs_compute", lambda a: _plots().plot_params_vs_compute(a.out["models"])),
           Plot("compute_frontier", lambda a: _plots().plot_frontier(a.out["frontier"], a.out["queries"])),
           Plot("two_step", task_prediction.plot)],
    tables={"frontier.csv": lambda a: a.out["frontier"]})
analyze_stage = REPORT.stage
