"""The report kit (`experiments.reports.kit`): an analyze stage declared as laws on tables,
held-out checks, plots and sections writes fits/, plots/, report.md and a table, without training."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

import scaling
from experiments.reports.kit import Fit, HeldOut, Plot, Report, Section
from experiments.runner.study import StudyContext


def _context(tmp_path):
    rng = np.random.default_rng(0)
    n = np.repeat([1e4, 3e4, 1e5], 3)
    d = np.tile([1e5, 3e5, 1e6], 3)
    lr = 2.0 * n ** -0.3 * d ** -0.05 * np.exp(rng.normal(0, 0.02, n.size))   # a learning-rate law
    results = pd.DataFrame({"run_id": [f"r{i}" for i in range(n.size)], "n_params": n, "tokens": d, "lr": lr,
                            "status": "completed", "reason": ""})
    results.loc[len(results)] = {"run_id": "bad", "n_params": 1e4, "tokens": 1e5, "lr": np.nan,
                                 "status": "diverged", "reason": "loss 1e9"}
    return StudyContext("kit_demo", tmp_path, results, {}, None, "smoke", "6N", time.perf_counter())


def test_a_declared_report_fits_checks_plots_and_writes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    def figure(a):
        fig = Figure()
        fig.add_subplot().loglog(a.tables["results"]["n_params"], a.tables["results"]["lr"], "o")
        return fig

    report = Report(
        title="Learning-rate law",
        fits=[Fit("lr_opt", "power_law_2d", columns={"N": "n_params", "D": "tokens", "y": "lr"}, bootstrap=20)],
        held_out=[HeldOut("lr_opt", lambda t: t["n_params"] == t["n_params"].max(), what="the largest size")],
        plots=[Plot("lr", figure)],
        sections=[Section("What was run", lambda a: [f"- {len(a.results)} runs"])],
        tables={"best_lr.csv": lambda a: a.tables["results"][["n_params", "tokens", "lr"]]})
    out = report.stage(_context(tmp_path))
    assert out["fitted"] == ["lr_opt"]
    law = scaling.load(tmp_path / "fits" / "lr_opt.json")
    assert abs(law.params["b_N"] + 0.3) < 0.05   # y = A N^b_N D^b_D
    held = out["held_out"]["lr_opt"]
    assert len(held) == 3 and all(abs(r["rel_error"]) < 0.2 and r["interval"] is not None for r in held)
    text = (tmp_path / "report.md").read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == ["## What was run", "## Fitted laws (95% bootstrap intervals)",
                        "## Held-out check: the largest size", "## Failed, diverged and unfinished runs", "## Files"]
    assert text.startswith("# Learning-rate law: kit_demo (preset smoke)")
    assert "- bad: diverged (loss 1e9)" in text and "`plots/lr.png`" in text and "`best_lr.csv`" in text
    assert (tmp_path / "plots" / "lr.png").exists() and len(pd.read_csv(tmp_path / "best_lr.csv")) == 9


def test_a_fit_that_fails_is_a_note_not_a_crash(tmp_path):
    report = Report(title="t", fits=[Fit("lr_opt", "power_law_2d", columns={"N": "n_params", "D": "tokens", "y": "lr"},
                                         rows=lambda t: t.iloc[:1])])
    out = report.stage(_context(tmp_path))
    assert out["fitted"] == [] and out["notes"] and out["notes"][0].startswith("lr_opt not fitted")
    assert "Not fitted: lr_opt" in (tmp_path / "report.md").read_text()
