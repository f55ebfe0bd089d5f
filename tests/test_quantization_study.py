"""The PTQ study end to end at smoke size, run as the docstring says (relative workdir, from an
empty directory, one CPU device): runs, ptq.csv, fits, plots and report.md."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import scaling
from experiments import quantization_degradation as qstudy
from experiments.runner import runs as runs_lib

REPO = Path(__file__).resolve().parents[1]
from conftest import PTQ_COMMAND as COMMAND  # noqa: E402  (the fixture ptq_smoke runs it)
PTQ_COLUMNS = ["run_id", "n_params", "n_params_nonembedding", "tokens", "checkpoint_step", "qtype",
               "method", "loss", "loss_quantized", "delta", "delta_sem"]


def test_the_docstring_command_is_the_tested_one():
    assert COMMAND in " ".join(qstudy.__doc__.split())


def test_smoke_ptq_study_end_to_end(ptq_smoke):
    workdir, proc = ptq_smoke
    study = qstudy.smoke()
    runs = list(qstudy.sweep(study))
    results = runs_lib.read_results(workdir)
    assert results["run_id"].tolist() == [r.run_id for r in runs]
    assert (results["status"] == "completed").all()
    assert results["role"].tolist() == ["grid"] * 6 + ["wsd_control"]

    ptq = pd.read_csv(workdir / "ptq.csv")
    assert set(PTQ_COLUMNS) <= set(ptq.columns) and (ptq["status"] == "completed").all()
    wsd_id = results.loc[results["role"] == "wsd_control", "run_id"].item()
    wsd_steps = sorted(ptq.loc[ptq["run_id"] == wsd_id, "checkpoint_step"].unique())
    assert len(wsd_steps) == study.wsd_checkpoints + 1  # every stable-phase checkpoint + the final
    assert len(ptq) == (6 + len(wsd_steps)) * (1 + len(study.formats))
    final = ptq[ptq["role"] == "grid"]
    for rid, group in final.groupby("run_id"):
        by = group.set_index("format")
        assert by.loc["float", "delta"] == 0.0 and by.loc["float", "loss"] == by.loc["int8", "loss"]
        # int2 degrades more than int4, resolved by their own paired errors; int4 moves the loss by
        # less than the held-out loss's own sampling error, in either direction (rounding to 4 bits
        # can lower a tiny model's loss by a few paired SEM: -2 here, -5.2 on another processor)
        d2, d4 = by.loc["int2", "delta"], by.loc["int4", "delta"]
        assert d2 - d4 > 2 * math.hypot(by.loc["int2", "delta_sem"], by.loc["int4", "delta_sem"])
        assert abs(d4) < by.loc["int4", "loss_sem"]
        assert by.loc["int2", "delta"] > 2 * by.loc["int2", "delta_sem"] > 0  # resolved (the fits use >= 2 sem)
        assert abs(by.loc["int8", "delta"]) < 5e-4
        assert by.loc["int2", "loss_quantized"] == pytest.approx(by.loc["int2", "loss"] + by.loc["int2", "delta"])
        assert by.loc["int2", "tokens"] == results.set_index("run_id").loc[rid, "tokens"]

    fits = {p.stem: scaling.load(p) for p in (workdir / "fits").glob("*.json")}
    assert {"ptq_degradation", "ptq_precision", "chinchilla"} <= set(fits)
    q = fits["ptq_degradation"]
    assert all(math.isfinite(v) for v in q.params.values()) and q.samples is not None
    assert q.params["gamma"] > 0  # fewer bits, more degradation
    report = (workdir / "report.md").read_text()
    for section in ("## Fitted laws", "## Measured degradation", "## When does more pretraining hurt",
                    "## Held-out check", "## WSD control"):
        assert section in report, section
    assert "median |error|" in report and "over the stable phase" in report
    # law selection: the PTQ laws refitted without each of the 3 largest token counts predict them
    assert "## Law selection: which PTQ law extrapolates" in report
    assert "This report uses **ptq_degradation** for the turning point D*" in report
    chosen = json.loads((workdir / "select_ptq.json").read_text())
    assert {r["law"] for r in chosen["table"]} == {"ptq_degradation", "ptq_precision", "ptq_saturating"}
    longest = sorted(results.loc[results["role"] == "grid", "tokens"])[-3:]   # levels: 3 significant digits
    assert sorted({s["level"] for s in chosen["splits"]}) == pytest.approx(longest, rel=5e-3)
    assert all(s["error"] is not None and s["n_test"] >= 1 for s in chosen["splits"])
    # no QAT runs in the smoke: the QAT-against-float comparison says why it is not there
    assert "## Recipe comparison: QAT against float training\n\nNot run: no weight-only QAT runs" in report
    for name in ("delta_vs_tokens", "delta_vs_bits", "post_ptq_loss", "wsd_trajectory", "select_ptq"):
        assert (workdir / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{study.name}: 7 of 7 runs completed; ptq: {len(ptq)} of {len(ptq)} rows")


def test_bad_formats_are_value_errors_naming_them():
    from experiments.reports.quantization import parse_format
    from models.quantization import QuantConfig

    assert parse_format("int4:gptq").method == "gptq"
    assert parse_format("int4/int8").activations == "int8"
    assert parse_format("int8/int4") == QuantConfig(weights="int8", activations="int4")
    assert parse_format("kv:int3") == QuantConfig(kv="int3")
    with pytest.raises(ValueError, match="'/int4'"):
        parse_format("/int4")
    with pytest.raises(ValueError, match="int9"):
        parse_format("int9")
    with pytest.raises(ValueError, match="format"):
        qstudy.Study(formats=("int4", "bogus"))


def test_presets_declare_activation_and_kv_qat_runs_and_a_pod():
    """cpu: W8A4 and KV3 QAT runs at the two smallest sizes, each the twin of a float grid run (same
    model and tokens, only ``quant`` differs, so a different run id); pod: 100M-1B at seq 2048."""
    import dataclasses

    from models.quantization import QuantConfig

    runs = list(qstudy.sweep(qstudy.cpu()))
    grid = {(r.config.model, r.config.train.tokens): r for r in runs if r.labels["role"] == "grid"}
    extra = [r for r in runs if r.labels.get("qat") in ("int8/int4", "kv:int3")]
    assert sorted(r.labels["qat"] for r in extra) == ["int8/int4", "int8/int4", "kv:int3", "kv:int3"]
    assert {r.config.quant for r in extra} == {QuantConfig(weights="int8", activations="int4"), QuantConfig(kv="int3")}
    for r in extra:
        twin = grid[(r.config.model, r.config.train.tokens)]
        assert dataclasses.replace(r.config, quant=QuantConfig()) == twin.config and r.run_id != twin.run_id
    assert len({r.run_id for r in runs}) == len(runs)
    pod = list(qstudy.sweep(qstudy.pod()))
    assert len(pod) == 23 and {r.config.mesh for r in pod} == {"data=4,fsdp=32"}
    assert all(r.config.data.seq_len == 2048 and r.config.model.dtype == "bfloat16"
               and r.config.train.batch_size % 128 == 0 for r in pod)
    from models.transformer import param_counts

    sizes = sorted({param_counts(r.config.model)["total"] for r in pod})
    assert len(sizes) == 3 and 0.9e8 < sizes[0] and sizes[-1] < 1.1e9
