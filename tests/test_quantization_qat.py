"""The QAT analysis of the quantization study (experiments.reports.quantization_qat) on runs whose
losses come from Kumar et al.'s ``precision`` law with known constants: the twin deltas, the fits
recovering gamma_w, gamma_a and gamma_kv, and the report lines."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import scaling
from experiments.reports import quantization_qat as qq

TRUE = {"A": 50.0, "alpha": 0.3, "B": 200.0, "beta": 0.3, "E": 1.0, "gamma_w": 2.5, "gamma_a": 2.2,
        "gamma_kv": 1.0}


def _results():
    law = scaling.laws.get("precision")
    rows = []

    def add(role, n, tpp, spec=None):
        bits = qq.precisions(spec) if spec else {"P_w": 16.0, "P_a": 16.0, "P_kv": 16.0}
        x = {"N": np.array([n]), "D": np.array([n * tpp]), **{k: np.array([v]) for k, v in bits.items()}}
        loss = float(np.asarray(law.fn(TRUE, x))[0])
        rows.append({"run_id": f"{role}_{n:g}_{tpp:g}_{spec}", "status": "completed", "role": role,
                     "n_params": 2 * n, "n_params_nonembedding": n, "tokens": n * tpp, "flops_6N": 6 * 2 * n * n * tpp,
                     "eval_loss": loss, "qat": spec if spec else np.nan})

    for n in (1e4, 2.5e4, 6e4):
        for tpp in (8.0, 32.0, 128.0):
            add("grid", n, tpp)
        for spec in ("int3", "int4", "int6"):
            add("qat", n, 32.0, spec)
    for n in (1e4, 2.5e4):
        for spec in ("int8/int4", "kv:int3"):
            add("qat", n, 32.0, spec)
    rows.append({**rows[-1], "run_id": "failed_one", "status": "failed", "eval_loss": np.nan})
    return pd.DataFrame(rows)


def test_precisions_of_format_strings():
    assert qq.precisions("int4") == {"P_w": 4.0, "P_a": 16.0, "P_kv": 16.0}
    assert qq.precisions("kv:int3") == {"P_w": 16.0, "P_a": 16.0, "P_kv": 3.0}
    assert qq.precisions("int8/int4") == {"P_w": 8.0, "P_a": 4.0, "P_kv": 16.0}
    with pytest.raises(ValueError, match="kv:int1"):
        qq.precisions("kv:int1")


def test_qat_table_twins_fits_and_report():
    results = _results()
    out = qq.fit_qat(results, bootstrap=0)
    table = out["table"]
    assert len(table) == 13 and set(table["label"]) == {"W3", "W4", "W6", "W8A4", "KV3"}
    grid = results[results["role"] == "grid"].set_index(["n_params", "tokens"])["eval_loss"]
    for r in table.itertuples():  # the twin is the float run of the same size and tokens
        assert r.float_loss == grid[(r.n_params, r.tokens)]
        assert r.delta == pytest.approx(r.eval_loss - r.float_loss) and r.delta > 0
    # noise-free losses from the law: the fits recover its constants
    assert out["fits"]["precision_weights"].params["gamma_w"] == pytest.approx(TRUE["gamma_w"], rel=1e-3)
    fitted = out["fits"]["precision"].params
    for name in ("gamma_w", "gamma_a", "gamma_kv", "alpha", "E"):
        assert fitted[name] == pytest.approx(TRUE[name], rel=1e-2), name
    assert any("2 activation QAT runs and 2 KV QAT runs" in n for n in out["notes"])
    text = "\n".join(qq.render(out))
    assert "| KV3 | - | - | 3 |" in text and "| W8A4 | 8 | 4 | - |" in text and "gamma_kv = 1" in text
    # weight-only QAT: no precision fit, no A/KV note
    weights_only = results[~results["qat"].isin(["int8/int4", "kv:int3"])]
    out = qq.fit_qat(weights_only, bootstrap=0)
    assert set(out["fits"]) == {"precision_weights"} and not out["notes"]


def test_qat_against_float_recovers_a_known_parameter_efficiency():
    """`compare_qat` (scaling.compare, form "parameters") on simulated runs: a float grid (3 sizes
    x 3 lengths) from Chinchilla's law and int4 QAT runs at one length per size whose loss is the
    float loss at half the parameters: m_N = 0.5, so QAT's compute multiplier over float is 0.5."""
    p = dict(E=1.0, A=30.0, B=60.0, alpha=0.3, beta=0.3)

    def loss(n, d):
        return p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"]

    rng = np.random.default_rng(0)
    rows = []
    for n in (1e4, 2.5e4, 6e4):
        for tpp in (8, 32, 128):
            rows.append(dict(run_id=f"g{n:g}_{tpp}", role="grid", qat="", n_params=n, n_params_nonembedding=0.8 * n,
                             tokens=tpp * n, eval_loss=loss(n, tpp * n) * np.exp(rng.normal(0, 0.003)),
                             eval_loss_sem=0.003 * loss(n, tpp * n), status="completed"))
        rows.append(dict(run_id=f"q{n:g}", role="qat", qat="int4", n_params=n, n_params_nonembedding=0.8 * n,
                         tokens=32 * n, eval_loss=loss(0.5 * n, 32 * n) * np.exp(rng.normal(0, 0.003)),
                         eval_loss_sem=0.003 * loss(n, 32 * n), status="completed"))
    compared = qq.compare_qat(pd.DataFrame(rows), bootstrap=20)
    comp = compared["W4"]["comparison"]
    lo, hi = comp.fitted.interval("m_N")
    assert lo <= 0.5 <= hi and abs(comp.fitted.params["m_N"] - 0.5) < 0.05
    m = comp.compute_multiplier(1e10)
    assert m.lower <= 0.5 <= m.upper and abs(float(m.value) - 0.5) < 0.05
    assert comp.crossover()["C"] is None   # a constant multiplier: the frontiers never cross
    text = "\n".join(qq.render_compare(compared))
    assert re.search(r"\| W4 \| 3 \| 0\.(49|5|51)", text) and "**QAT W4 against float**" in text and "no lack of fit" in text
    assert qq.render_compare({})[0].startswith("Not run: no weight-only QAT runs")
