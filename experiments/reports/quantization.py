"""The analyze stage of a PTQ study: degradation laws fitted to ptq.csv, the turning point, a
held-out check, the WSD control, figures and a Markdown report.

    run_study(..., measures=[ptq], analyze=quantization.REPORT.stage)      # in an experiment file
    out = quantization.analyze(ptq_table, results)                          # on any such table

The report is declared on the report kit (`experiments.reports.kit`): `REPORT` names its sections
and figures and writes analysis.json; `compute` runs `analyze`.

Fits (`scaling.fit`, one engine; every law saved in fits/ with bootstrap intervals):
- ``ptq_degradation`` (Ouyang et al. 2024, arXiv:2411.17691, Eq. 8): delta = k D^beta / (N^alpha P^gamma)
- ``ptq_precision`` (Kumar et al. 2024, arXiv:2411.04330, Eq. 2): delta = C_T D^gamma_D / N^gamma_N e^{-P/gamma_post}
  both on the weight-only round-to-nearest integer formats of the grid runs (N = non-embedding
  parameters, D = training tokens, P = bits), least squares on log delta weighted by
  (delta / delta_sem)^2 (the delta method: var(log delta) ~ (sem / delta)^2); rows whose delta is
  not resolved (delta < 2 delta_sem) are left out of the fits and listed.
- ``chinchilla`` (Hoffmann et al. 2022, Eq. 2) on the float losses of the grid runs, when there
  are at least 6 of them.

The turning point (Ouyang et al. Fig. 7: the quantized loss is L_16bit + delta): with
L(N, D) = E + A/N^a + B/D^b and delta = k D^beta / (N^alpha P^gamma), the post-PTQ loss
L + delta is smallest at D* = [b B N^alpha P^gamma / (beta k)]^(1 / (b + beta)); beyond D* more
pretraining makes the quantized model worse.

QAT (``experiments.reports.quantization_qat``: each QAT run against its float twin, and with
activation/KV runs Kumar et al.'s ``precision`` law, Eq. 4). Weights (Kumar et al. 2024, Eq. 3
with activations and KV cache in high precision): ``precision_weights``,
L = A N_eff^-alpha + B D^-beta + E with N_eff = N (1 - e^{-P_w/gamma_w}), fitted to the float runs
(P_w = 16, bfloat16 as Kumar et al.'s high precision; ours train in float32, at least as precise)
and the QAT runs (P_w = the format's bits), N non-embedding. Compute-optimal training precision:
with Kumar et al.'s compute model C = (6/16) N D P (their Eq. 5), the P in [2, 16] and N that
minimize the fitted loss at fixed C, found on a grid.

Held-out check: each law is refitted without the most-trained run of every size and predicts
that run's delta at every precision; the report gives the relative errors.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pandas as pd

from experiments.reports import choose, quantization_qat
from experiments.reports.kit import Plot, Report, Section, Select, fmt as _g, interval as _iv

log = logging.getLogger(__name__)

PTQ_LAWS = ("ptq_degradation", "ptq_precision")
COLUMNS = {"N": "n_params_nonembedding", "D": "tokens", "P": "bits", "P_post": "bits"}


def parse_format(spec: str):
    """`models.quantization.parse_format` (imported on call: this module loads no jax/qwix)."""
    from models.quantization import parse_format as parse

    return parse(spec)


def fit_rows(ptq: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows the PTQ laws are fitted to, resolved-but-excluded rows): completed grid runs,
    weight-only round-to-nearest integer formats with delta >= 2 delta_sem."""
    done = ptq[(ptq["status"] == "completed") & (ptq["role"] == "grid")]
    weight_only = done[done["format"].astype(str).str.fullmatch(r"int[2-8]")]
    resolved = weight_only["delta"] >= 2 * weight_only["delta_sem"]
    return weight_only[resolved].reset_index(drop=True), weight_only[~resolved].reset_index(drop=True)


def _fit_ptq(name: str, rows: pd.DataFrame, bootstrap: int, seed: int = 0):
    import scaling

    law = scaling.laws.get(name)
    data = rows.assign(log_weight=(rows["delta"] / rows["delta_sem"].clip(lower=1e-12)) ** 2)
    weights = data["log_weight"] / data["log_weight"].mean()
    return scaling.fit(law, data, target="delta", objective="mse_log", weights=weights.to_numpy(),
                       bootstrap=bootstrap, seed=seed, columns={c: COLUMNS[c] for c in law.covariates})


def turning_tokens(loss_law, ptq_law, n_nonembed: float, n_total: float, bits: float) -> float:
    """D* where the post-PTQ loss L(N, D) + delta(N, D, P) is smallest (module docstring).

    ``loss_law``: a fitted chinchilla (N = all parameters, as the grid's runs); ``ptq_law``: a fitted
    ``ptq_degradation`` (N = non-embedding parameters). inf when delta does not grow with D.
    """
    p, q = loss_law.params, ptq_law.params
    if q["beta"] <= 0:
        return math.inf
    delta_coeff = q["k"] * n_nonembed ** -q["alpha"] * bits ** -q["gamma"]
    return (p["beta"] * p["B"] / (q["beta"] * delta_coeff)) ** (1.0 / (p["beta"] + q["beta"]))


def optimal_training_precision(law, budget: float) -> dict:
    """The training precision P (bits, 2-16) and size N that minimize a fitted ``precision_weights``
    loss at compute C = (6/16) N D P = ``budget`` (Kumar et al. 2024, Eq. 5), on a grid."""
    bits = np.linspace(2.0, 16.0, 141)
    sizes = np.geomspace(1e2, 1e9, 141)
    P, N = np.meshgrid(bits, sizes, indexing="ij")
    D = budget * 16.0 / (6.0 * N * P)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss = np.asarray(law.predict(N=N, D=D, P_w=P))
    i, j = np.unravel_index(np.nanargmin(loss), loss.shape)
    return {"budget": budget, "bits": float(P[i, j]), "n_params_nonembedding": float(N[i, j]),
            "tokens": float(D[i, j]), "loss": float(loss[i, j]),
            "loss_at_16_bits": float(np.nanmin(loss[-1])), "convention": "C = (6/16) N D P (Kumar et al. Eq. 5)"}


def held_out_check(rows: pd.DataFrame, bootstrap: int = 0) -> list[dict]:
    """Refit each law without the most-trained run of every size; predict those runs' deltas."""
    longest = rows.groupby("n_params")["tokens"].transform("max") == rows["tokens"]
    train, test = rows[~longest], rows[longest]
    out = []
    if len(train) < 6 or train["tokens"].nunique() < 2 or test.empty:
        return [{"law": name, "skipped": "too few rows left to refit (need 2 lengths per size)"}
                for name in PTQ_LAWS]
    for name in PTQ_LAWS:
        try:
            law = _fit_ptq(name, train, bootstrap)
        except ValueError as err:
            out.append({"law": name, "skipped": str(err)})
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            pred = law.predict(N=test[COLUMNS["N"]].to_numpy(), D=test["tokens"].to_numpy(),
                               **({"P": test["bits"].to_numpy()} if name == "ptq_degradation"
                                  else {"P_post": test["bits"].to_numpy()}))
        for row, p in zip(test.to_dict("records"), np.asarray(pred)):
            out.append({"law": name, "run_id": row["run_id"], "n_params": row["n_params"],
                        "tokens": row["tokens"], "format": row["format"], "delta": row["delta"],
                        "delta_sem": row["delta_sem"], "predicted": float(p),
                        "rel_error": float(p / row["delta"] - 1)})
    return out


def wsd_trajectory(ptq: pd.DataFrame) -> pd.DataFrame:
    """The WSD control's delta at each kept checkpoint, per format (completed rows)."""
    wsd = ptq[(ptq["role"] == "wsd_control") & (ptq["status"] == "completed") & (ptq["format"] != "float")]
    return wsd.sort_values(["format", "checkpoint_step"]).reset_index(drop=True)


def analyze(ptq: pd.DataFrame, results: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0) -> dict:
    """Fits, turning points, held-out check and WSD trajectory (module docstring); each part that
    cannot be done is skipped with its reason in ``notes``."""
    import scaling

    notes, fits = [], {}
    rows, unresolved = fit_rows(ptq)
    if len(unresolved):
        notes.append(f"{len(unresolved)} weight-only rows with delta < 2 sem left out of the fits: "
                     + ", ".join(f"{r.format} of {r.run_id}" for r in unresolved.itertuples()))
    for name in PTQ_LAWS:
        try:
            fits[name] = _fit_ptq(name, rows, bootstrap, seed)
        except ValueError as err:
            notes.append(f"{name} not fitted: {err}")
    grid = results[(results["status"] == "completed") & (results.get("role", "grid") == "grid")]
    if len(grid) >= 6:
        try:
            fits["chinchilla"] = scaling.fit("chinchilla", grid, target="eval_loss", bootstrap=bootstrap,
                                             seed=seed, columns={"N": "n_params", "D": "tokens",
                                                                 "loss": "eval_loss"})
        except ValueError as err:
            notes.append(f"chinchilla not fitted on the float runs: {err}")
    else:
        notes.append(f"chinchilla not fitted: {len(grid)} completed grid runs (need 6)")
    precision = None
    qat = quantization_qat.fit_qat(results, bootstrap=bootstrap, seed=seed)
    qat["compare"] = quantization_qat.compare_qat(results, bootstrap=bootstrap)
    fits.update(qat["fits"])
    notes += qat["notes"]
    if "precision_weights" in fits:
        precision = optimal_training_precision(fits["precision_weights"], float(grid["flops_6N"].max()))
    turning = []
    if "chinchilla" in fits and "ptq_degradation" in fits:
        sizes = grid.groupby("n_params")["n_params_nonembedding"].first()
        for n_total, n_nonembed in sizes.items():
            for bits in sorted(rows["bits"].unique()):
                d_star = turning_tokens(fits["chinchilla"], fits["ptq_degradation"], n_nonembed, n_total, bits)
                turning.append({"n_params": int(n_total), "n_params_nonembedding": int(n_nonembed),
                                "bits": int(bits), "tokens_star": d_star,
                                "tokens_per_param_star": d_star / n_total})
    return {"fits": fits, "rows": rows, "unresolved": unresolved, "turning": turning, "precision": precision,
            "qat": qat, "held_out": held_out_check(rows), "wsd": wsd_trajectory(ptq), "notes": notes}


# ----------------------------------------------------------------------------- report


def compute(context) -> dict:
    """`analyze` on the study's ptq.csv; its laws and notes for the kit."""
    out = analyze(context.measurements["ptq"], context.results, bootstrap=getattr(context.declaration, "bootstrap", 200))
    return {**out, "laws": out["fits"]}


def _measured(a) -> pd.DataFrame:
    ptq = a.context.measurements["ptq"]
    return ptq[ptq["status"] == "completed"]


def what_was_run(a) -> list[str]:
    results, measured = a.results, _measured(a)
    grid = results[results.get("role", "grid") == "grid"]
    return [f"- {len(results)} runs ({int((results['status'] == 'completed').sum())} completed): "
            f"{grid['n_params'].nunique()} sizes ({', '.join(_g(n) for n in sorted(grid['n_params'].unique()))} "
            f"parameters) x {grid['tokens_per_param'].nunique() if 'tokens_per_param' in grid else '?'} "
            "training lengths, each decayed to its end; plus a WSD control run",
            f"- {len(measured)} measurements in ptq.csv ({measured['format'].nunique()} formats incl. float), "
            f"each on {int(measured['eval_tokens'].max()) if len(measured) else 0} held-out tokens"]


def fitted_laws(a) -> list[str]:
    from scaling.quantization_laws import KUMAR_PTQ_REFERENCE, OUYANG_PTQ_REFERENCE

    lines = ["| law | parameter | value | 95% | published |", "|---|---|---|---|---|"]
    reference = {"ptq_degradation": OUYANG_PTQ_REFERENCE, "ptq_precision": KUMAR_PTQ_REFERENCE}
    for name, law in a.out["fits"].items():
        for param, value in law.params.items():
            ref = reference.get(name, {}).get(param)
            lines.append(f"| {name} | {param} | {_g(value, 4)} | "
                         f"{_iv(law.interval(param) if law.samples is not None else None)} | {_g(ref, 4) if ref else ''} |")
    return lines + ["", "Published: Ouyang et al. 2024 Eq. 8 (GPTQ on Pythia, verified); Kumar et al. 2024 "
                    "(constants from a secondary source, NOT verified; gamma_post illustrative)."]


def measured_degradation(a) -> list[str]:
    measured = _measured(a)
    formats = sorted(set(measured["format"]) - {"float"})
    lines = ["| run | N | D | float loss | " + " | ".join(formats) + " |", "|---|---|---|---|" + "---|" * len(formats)]
    for rid, group in measured[measured["role"] == "grid"].groupby("run_id", sort=False):
        by = {r["format"]: r for r in group.to_dict("records")}
        first = group.iloc[0]
        cells = [f"{by[f]['delta']:+.4f} ± {by[f]['delta_sem']:.4f}" if f in by else "" for f in formats]
        lines.append(f"| {rid} | {_g(first['n_params'])} | {_g(first['tokens'])} | "
                     f"{by.get('float', first)['loss']:.4f} | " + " | ".join(cells) + " |")
    return lines


def turning_section(a) -> list[str]:
    if not a.out["turning"]:
        return ["Not computed (needs both the chinchilla and the ptq_degradation fits)."]
    lines = ["Tokens D* beyond which L(N, D) + delta(N, D, P) rises (chinchilla on the float runs + "
             "ptq_degradation):", "", "| N | bits | D* | D*/N |", "|---|---|---|---|"]
    for t in a.out["turning"]:
        lines.append(f"| {_g(t['n_params'])} | {t['bits']} | {_g(t['tokens_star'])} | {_g(t['tokens_per_param_star'])} |")
    unsure = [name for name in ("chinchilla", "ptq_degradation") if a.out["fits"][name].diagnostics()]
    if unsure:  # D* comes from both fits: a flagged fit makes every D* unreliable
        lines += ["", f"**Unreliable**: D* is derived from {' and '.join(unsure)}, whose fit is flagged in "
                      "Fitted laws (a parameter at a bound or domain edge, or intervals spanning orders of "
                      "magnitude); do not use these D* to plan training."]
    return lines


def qat_section(a) -> list[str]:
    p = a.out.get("precision")
    if p is None:
        lines = ["No compute-optimal training precision: `precision_weights` was not fitted (no weight-only "
                 "QAT runs, or the fit failed: see Notes)."]
    else:
        law = a.out["fits"]["precision_weights"]
        lines = [f"`precision_weights` on the float and weight-only QAT runs: gamma_w = {law.params['gamma_w']:.3g} bits "
                 f"(Kumar et al.'s secondary-source value: 2.67, unverified). At C = {_g(p['budget'])} FLOPs "
                 f"({p['convention']}) the fitted loss is lowest at P = {p['bits']:.1f} bits with "
                 f"N = {_g(p['n_params_nonembedding'])} non-embedding parameters (loss {p['loss']:.4f}; "
                 f"{p['loss_at_16_bits']:.4f} at the best N for 16 bits)."]
    qat = quantization_qat.render(a.out.get("qat", {}))
    return lines + ([""] + qat if qat else [])


def held_out_section(a) -> list[str]:
    held = a.out["held_out"]
    if all("skipped" in h for h in held):
        return [f"- {h['law']}: skipped ({h['skipped']})" for h in held]
    lines = ["| law | run | format | measured delta | predicted | error |", "|---|---|---|---|---|---|"]
    for h in held:
        if "skipped" in h:
            lines.append(f"| {h['law']} | skipped: {h['skipped']} | | | | |")
        else:
            lines.append(f"| {h['law']} | {h['run_id']} | {h['format']} | {h['delta']:.4g} ± {h['delta_sem']:.2g} | "
                         f"{h['predicted']:.4g} | {100 * h['rel_error']:+.1f}% |")
    for name in PTQ_LAWS:
        errs = [abs(h["rel_error"]) for h in held if h.get("law") == name and "rel_error" in h]
        if errs:
            lines.append(f"\n- {name}: median |error| {100 * float(np.median(errs)):.1f}% over {len(errs)} predictions")
    return lines


def wsd_section(a) -> list[str]:
    wsd = a.out["wsd"]
    if wsd.empty:
        return ["No WSD control run was measured."]
    lines = []
    steps = sorted(wsd["checkpoint_step"].unique())
    lines += ["| format | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for fmt, group in wsd.groupby("format"):
        by = dict(zip(group["checkpoint_step"], group["delta"]))
        lines.append(f"| {fmt} | " + " | ".join(f"{by[s]:+.4f}" if s in by else "" for s in steps) + " |")
    stable, final = steps[:-1], steps[-1]
    if stable:
        verdicts = []
        for fmt, group in wsd.groupby("format"):
            by = dict(zip(group["checkpoint_step"], group["delta"]))
            if final in by and all(s in by for s in stable):
                rise_stable = by[stable[-1]] - by[stable[0]]
                rise_decay = by[final] - by[stable[-1]]
                verdicts.append(f"{fmt}: {rise_stable:+.4f} over the stable phase, {rise_decay:+.4f} at the decay")
        lines += ["", "Change in delta: " + "; ".join(verdicts) + "."]
    return lines


def _plots():
    from experiments.reports import quantization_plots as qplots

    return qplots


def _grid_deltas(a) -> pd.DataFrame:
    ptq = a.context.measurements["ptq"]
    return ptq[(ptq["role"] == "grid") & (ptq["format"] != "float") & (ptq["status"] == "completed")]


def select_table(context) -> pd.DataFrame:
    """The rows the PTQ laws are fitted to (`fit_rows`), with the fits' weight column
    (delta / delta_sem)^2 (a column, so that every split of the selection weights its own rows)."""
    rows, _ = fit_rows(context.measurements["ptq"])
    return rows.assign(log_weight=(rows["delta"] / rows["delta_sem"].clip(lower=1e-12)) ** 2)


def _ptq_candidate(name: str) -> dict:
    import scaling

    law = scaling.laws.get(name)
    return {"law": name, "target": "delta", "objective": "mse_log", "weights": "log_weight",
            "columns": {c: COLUMNS[c] for c in law.covariates}}


# Which PTQ law extrapolates in training tokens: the two published forms and a form whose growth
# in D levels off (``ptq_saturating``), each refitted without the longest runs and asked for them.
SELECT_PTQ = Select(
    "ptq", {name: _ptq_candidate(name) for name in (*PTQ_LAWS, "ptq_saturating")},
    used="ptq_degradation", used_for="the turning point D* and the delta-against-tokens figure",
    table=select_table, holdout="tokens", splits=3, min_train_levels=3, columns={"D": "tokens"},
    after="Measured degradation (grid runs)",
    what="which PTQ law extrapolates to longer training (held out: the largest token counts)")

def _compare_figure(a, label: str):
    result = a.out["qat"].get("compare", {}).get(label)
    if result is None:
        raise ValueError(f"no QAT {label} runs")
    return choose.compare_figure(result)


REPORT = Report(
    title="PTQ study", compute=compute, selects=[SELECT_PTQ],
    sections=[
        Section("What was run", what_was_run),
        Section("Fitted laws (95% bootstrap intervals)", fitted_laws),
        Section("Measured degradation (grid runs)", measured_degradation),
        Section("When does more pretraining hurt the quantized model?", turning_section),
        Section("Quantization-aware training: the compute-optimal training precision", qat_section),
        Section("Recipe comparison: QAT against float training", lambda a: quantization_qat.render_compare(
            a.out["qat"].get("compare", {}), a.out["fits"].get("precision_weights"))),
        Section("Held-out check: refit without each size's most-trained run, predict its delta", held_out_section),
        Section("WSD control: does delta rise with tokens, or only at the decay?", wsd_section)],
    plots=[Plot("delta_vs_tokens", lambda a: _plots().plot_delta_vs_tokens(a.out["rows"], a.out["fits"].get("ptq_degradation"))),
           Plot("delta_vs_bits", lambda a: _plots().plot_delta_vs_bits(_grid_deltas(a))),
           Plot("post_ptq_loss", lambda a: _plots().plot_post_ptq_loss(
               a.context.measurements["ptq"], a.out["fits"].get("chinchilla"), a.out["fits"].get("ptq_degradation"),
               a.out["turning"])),
           Plot("wsd_trajectory", lambda a: _plots().plot_wsd_trajectory(a.out["wsd"])),
           *[Plot(f"compare_qat_{label}", lambda a, label=label: _compare_figure(a, label))
             for label in ("W2", "W3", "W4", "W5", "W6", "W8")]],
    json=lambda a: {"turning": a.out["turning"], "held_out": a.out["held_out"], "notes": a.out["notes"],
                    "precision": a.out["precision"],
                    "qat_compare": {label: choose.compare_json(r) for label, r in a.out["qat"].get("compare", {}).items()},
                    "fits": {name: law.to_dict()["params"] for name, law in a.out["fits"].items()}})
analyze_stage = REPORT.stage
