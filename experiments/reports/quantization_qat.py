"""The QAT part of the quantization study's analysis: each quantization-aware run against its
float twin, and Kumar et al.'s effective-parameter laws.

    table = qat_table(results)        # every QAT run: P_w, P_a, P_kv, loss, float twin loss, delta
    out = fit_qat(results)            # {"fits": {...}, "table": ..., "notes": [...]}

The float twin of a QAT run is the grid run of the same size trained on the same tokens (the study
trains both from the same config but ``quant``), so delta = loss_QAT - loss_float is the cost of
training at that precision at this (N, D).

Fits (Kumar et al. 2024, "Scaling Laws for Precision", arXiv:2411.04330; L = A N_eff^-alpha +
B D^-beta + E):
- ``precision_weights`` (Eq. 3, weights only: N_eff = N (1 - e^{-P_w/gamma_w})) on the float grid
  runs (P_w = 16) and the weight-only QAT runs;
- ``precision`` (Eq. 4, N_eff = N (1 - e^{-P_w/gamma_w}) (1 - e^{-P_a/gamma_a})
  (1 - e^{-P_kv/gamma_kv})) on every completed grid and QAT run when some QAT run quantizes
  activations or keys/values; a precision that a run does not quantize counts as 16 bits
  (Kumar et al.'s bfloat16 high precision; our float runs train in float32, at least as precise).
  gamma_a and gamma_kv rest on the few A/KV runs only: their intervals say how thin that is.
  Activation runs quantize weights too (W8A4: qwix quantizes a matmul's activations only with its
  weights), so their delta mixes P_a = 4 with P_w = 8; the law separates the two.
N counts non-embedding parameters, D training tokens.
"""

from __future__ import annotations

import math

import pandas as pd

HIGH_PRECISION = 16.0
COLUMNS = {"N": "n_params_nonembedding", "D": "tokens", "P_w": "P_w", "P_a": "P_a", "P_kv": "P_kv",
           "loss": "eval_loss"}


def precisions(spec) -> dict:
    """{"P_w", "P_a", "P_kv"}: bits of a study format string (``HIGH_PRECISION`` where unquantized)."""
    from models.quantization import format_bits, parse_format

    quant = parse_format(spec)
    return {name: HIGH_PRECISION if value is None else float(format_bits(value))
            for name, value in (("P_w", quant.weights), ("P_a", quant.activations), ("P_kv", quant.kv))}


def _completed(results: pd.DataFrame, role: str) -> pd.DataFrame:
    if "role" not in results:
        return results.iloc[:0]
    return results[(results["status"] == "completed") & (results["role"] == role)]


def qat_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per completed QAT run: run_id, qat (format string), label, n_params,
    n_params_nonembedding, tokens, P_w, P_a, P_kv, eval_loss, float_loss (the twin's; NaN when
    it has none), delta."""
    from models.quantization import parse_format

    qat = _completed(results, "qat")
    if qat.empty:
        return pd.DataFrame(columns=["run_id", "qat", "label", "n_params", "n_params_nonembedding", "tokens",
                                     "P_w", "P_a", "P_kv", "eval_loss", "float_loss", "delta"])
    twins = _completed(results, "grid").groupby(["n_params", "tokens"])["eval_loss"].first()
    rows = []
    for r in qat.to_dict("records"):
        twin = twins.get((r["n_params"], r["tokens"]), float("nan"))
        rows.append({"run_id": r["run_id"], "qat": r["qat"], "label": parse_format(r["qat"]).label,
                     "n_params": r["n_params"], "n_params_nonembedding": r["n_params_nonembedding"],
                     "tokens": r["tokens"], **precisions(r["qat"]), "eval_loss": r["eval_loss"],
                     "float_loss": twin, "delta": r["eval_loss"] - twin})
    return pd.DataFrame(rows)


def fit_qat(results: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0) -> dict:
    """The fits of the module docstring; a fit that cannot be made is a note, not an error."""
    import scaling

    table, notes, fits = qat_table(results), [], {}
    grid = _completed(results, "grid").assign(P_w=HIGH_PRECISION, P_a=HIGH_PRECISION, P_kv=HIGH_PRECISION)
    if table.empty:
        return {"fits": fits, "table": table, "notes": notes}
    weight_only = table[(table["P_a"] == HIGH_PRECISION) & (table["P_kv"] == HIGH_PRECISION)
                        & (table["P_w"] < HIGH_PRECISION)]
    if len(weight_only):
        data = pd.concat([grid, weight_only], ignore_index=True)
        try:
            fits["precision_weights"] = scaling.fit("precision_weights", data, target="eval_loss",
                                                    bootstrap=bootstrap, seed=seed,
                                                    columns={k: COLUMNS[k] for k in ("N", "D", "P_w", "loss")})
        except ValueError as err:
            notes.append(f"precision_weights not fitted: {err}")
    act_kv = table[(table["P_a"] < HIGH_PRECISION) | (table["P_kv"] < HIGH_PRECISION)]
    if len(act_kv):
        data = pd.concat([grid, table], ignore_index=True)
        try:
            fits["precision"] = scaling.fit("precision", data, target="eval_loss", bootstrap=bootstrap,
                                            seed=seed, columns=COLUMNS)
        except ValueError as err:
            notes.append(f"precision (weights, activations, KV) not fitted: {err}")
        counts = {"activation": int((act_kv["P_a"] < HIGH_PRECISION).sum()),
                  "KV": int((act_kv["P_kv"] < HIGH_PRECISION).sum())}
        notes.append("precision's gamma_a and gamma_kv rest on " + " and ".join(
            f"{n} {kind} QAT runs" for kind, n in counts.items()) + " only: read the measured deltas first")
    return {"fits": fits, "table": table, "notes": notes}


COMPARE_COLUMNS = {"N": "n_params", "D": "tokens", "loss": "eval_loss", "sem": "eval_loss_sem"}


def compare_qat(results: pd.DataFrame, *, bootstrap: int = 200) -> dict:
    """``{label: choose.run_compare result}``: each weight-only QAT format against float training
    (`scaling.compare`, form "parameters": the QAT recipe is the float recipe with m_N times the
    parameters, Kumar et al.'s N_eff, a constant compute multiplier; the float grid fixes the law,
    the QAT runs m_N. Its "efficiency" form's m_N and m_D are not identified by QAT runs at one
    tokens-per-parameter ratio: with D a fixed multiple of N both terms fall as powers of N and
    trade off). N counts every parameter and C = 6 N D, as the float chinchilla fit. Empty
    without such runs."""
    from experiments.reports import choose

    table = qat_table(results)
    if table.empty:
        return {}
    grid = _completed(results, "grid")
    qat = _completed(results, "qat").set_index("run_id")
    weight_only = table[(table["P_a"] == HIGH_PRECISION) & (table["P_kv"] == HIGH_PRECISION)
                        & (table["P_w"] < HIGH_PRECISION)]
    out = {}
    for label, group in weight_only.sort_values("P_w").groupby("label", sort=False):
        runs = qat.loc[group["run_id"]].reset_index()
        spec = choose.Compare(f"qat_{label}", ("float", f"QAT {label}"), table_b="qat", form="parameters",
                              columns=COMPARE_COLUMNS, bootstrap=bootstrap)
        out[label] = choose.run_compare(spec, grid.reset_index(drop=True), runs)
    return out


def render_compare(compared: dict, precision_weights=None) -> list[str]:
    """Markdown lines: one multiplier per weight-only QAT format, then each comparison in full."""
    from experiments.reports import choose

    if not compared:
        return ["Not run: no weight-only QAT runs (the preset trains none; `--set qat=int4` adds them)."]
    lines = ["Compute multiplier of QAT over float training: the compute float training needs to reach the "
             "loss QAT reaches (< 1: QAT needs more compute for the same loss). `scaling.compare` with "
             "form `parameters` (the QAT loss is the float loss at m_N N parameters, Kumar et al.'s N_eff; "
             "C = 6 N D counts every parameter at full cost, not Kumar et al.'s (P/16) discount); "
             "95% bootstrap bands, each recipe's runs resampled on their own:", "",
             "| QAT | runs | compute multiplier | 95% | m_N | 95% | m_N from precision_weights | reduced chi2 |",
             "|---|---|---|---|---|---|---|---|"]
    for label, result in compared.items():
        comp = result["comparison"]
        if comp is None:
            lines.append(f"| {label} | {len(result['tables'][1])} | not fitted: {result['skipped']} | | | | | |")
            continue
        m = comp.compute_multiplier(comp.compute_range[1])
        iv = comp.fitted.interval("m_N") if comp.fitted.samples is not None else None
        chi = comp.diagnostics.get("reduced_chi2")
        kumar = "n/a"
        if precision_weights is not None:
            bits = float(result["tables"][1]["qat"].map(lambda f: precisions(f)["P_w"]).iloc[0])
            kumar = f"{1 - math.exp(-bits / precision_weights.params['gamma_w']):.3g}"
        lines.append(f"| {label} | {comp.diagnostics['recipes'][comp.names[1]]['n']} | {float(m.value):.3g} | "
                     f"{choose._band(m.lower, m.upper)} | {comp.fitted.params['m_N']:.3g} | "
                     f"{choose._band(*(iv or (None, None)))} | {kumar} | {'n/a' if chi is None else f'{chi:.3g}'} |")
    lines += ["", "m_N from precision_weights: Kumar et al.'s N_eff = N (1 - e^{-P_w/gamma_w}) with the fitted "
              "gamma_w, the same effect in their law's terms (that law puts E, A, B, alpha, beta on non-embedding "
              "parameters, this comparison on all of them)."]
    for label, result in compared.items():
        if result["comparison"] is not None:
            lines += ["", f"**QAT {label} against float** (plots/compare_qat_{label}.png):", "",
                      *choose.compare_lines(result)]
    return lines


def render(out: dict) -> list[str]:
    """Markdown lines: the QAT runs against their float twins, and the precision fit."""
    table = out.get("table")
    if table is None or table.empty:
        return []
    lines = ["QAT runs against their float twin (same size, same tokens, no quantization); delta = "
             "QAT loss - float loss:", "",
             "| run | N | D | QAT | P_w | P_a | P_kv | eval loss | float twin | delta |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.sort_values(["n_params", "P_kv", "P_a", "P_w"]).itertuples():
        bits = [f"{b:.0f}" if b < HIGH_PRECISION else "-" for b in (r.P_w, r.P_a, r.P_kv)]
        lines.append(f"| {r.run_id} | {r.n_params:.3g} | {r.tokens:.3g} | {r.label} | " + " | ".join(bits)
                     + f" | {r.eval_loss:.4f} | {r.float_loss:.4f} | {r.delta:+.4f} |")
    law = out.get("fits", {}).get("precision")
    if law is not None:
        cells = []
        for name in ("gamma_w", "gamma_a", "gamma_kv"):
            iv = law.interval(name) if law.samples is not None else None
            cells.append(f"{name} = {law.params[name]:.3g}" + ("" if iv is None else f" [{iv[0]:.3g}, {iv[1]:.3g}]"))
        lines += ["", "`precision` (Kumar et al. Eq. 4) on the float and every QAT run: " + ", ".join(cells)
                  + " bits (Kumar et al.'s secondary-source values, unverified: 2.67, 2.21, 0.96)."]
    return lines + [""]
