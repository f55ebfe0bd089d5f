"""The report kit (`experiments.reports.kit`): an analyze stage declared as laws on tables,
held-out checks, plots and sections writes fits/, plots/, report.md and a table, without training."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

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


def _two_recipes(seed: int = 0) -> pd.DataFrame:
    """An isoFLOP-like grid per recipe from Chinchilla's law (Besiroglu et al.'s constants); recipe
    "b" is recipe "a" at twice the parameters and tokens, so b's compute multiplier over a is 4."""
    rng = np.random.default_rng(seed)
    p = dict(E=1.82, A=482.0, B=2085.0, alpha=0.3478, beta=0.3658)
    rows = []
    for recipe, m in (("a", 1.0), ("b", 2.0)):
        for c in (1e18, 3e18, 1e19, 3e19, 1e20):
            for n in np.geomspace(0.3, 3.0, 4) * 0.1 * c ** 0.5:
                d = c / (6 * n)
                loss = p["E"] + p["A"] * (m * n) ** -p["alpha"] + p["B"] * (m * d) ** -p["beta"]
                rows.append({"run_id": f"{recipe}{len(rows)}", "recipe": recipe, "budget": c, "n_params": n,
                             "tokens": d, "eval_loss": loss * np.exp(rng.normal(0, 0.002)),
                             "status": "completed", "reason": ""})
    return pd.DataFrame(rows)


def test_declared_law_selection_and_recipe_comparison_sections(tmp_path):
    """A `Select` ranks the true law first and says the report used another; a `Compare` splitting
    one table by a label column recovers the known compute multiplier (4) within its band."""
    import json

    from experiments.reports.kit import Compare, Select

    results = _two_recipes()
    context = StudyContext("kit_choose", tmp_path, results, {}, None, "smoke", "6N", time.perf_counter())
    columns = {"N": "n_params", "D": "tokens", "loss": "eval_loss", "C": "budget"}
    report = Report(
        title="Recipes",
        selects=[Select("loss", {"chinchilla": {"law": "chinchilla", "starts": "coarse"}, "kaplan": "kaplan"},
                        used="kaplan", used_for="the demo", rows=lambda t: t[t["recipe"] == "a"],
                        holdout="budget", splits=2, min_train_levels=3, columns=columns, what="loss laws")],
        compares=[Compare("ab", ("a", "b"), by="recipe", form="efficiency", bootstrap=20, columns=columns)])
    report.stage(context)
    text = (tmp_path / "report.md").read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["## Law selection: loss laws", "## Recipe comparison: b against a"]
    assert "| 1 | chinchilla | 5 |" in text and "| 2 | kaplan | 4 |" in text
    assert "This report uses **kaplan** for the demo, ranked 2 of 2 here: **chinchilla** extrapolates better" in text
    chosen = json.loads((tmp_path / "select_loss.json").read_text())
    assert chosen["chosen"] == "chinchilla" and chosen["used"] == "kaplan" and len(chosen["splits"]) == 4
    comp = json.loads((tmp_path / "compare_ab.json").read_text())
    m = comp["compute_multiplier"]
    assert all(lo <= 4.0 <= hi for lo, hi in zip(m["lower"], m["upper"])), m
    assert all(abs(v / 4 - 1) < 0.15 for v in m["multiplier"])
    assert "Crossover: none (the efficiency form" in text and "| a | 20 |" in text
    for name in ("select_loss", "compare_ab"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_a_selection_with_too_few_levels_says_so_and_a_compare_needs_its_column(tmp_path):
    from experiments.reports import choose
    from experiments.reports.kit import Compare, Select

    results = _two_recipes()
    few = results[results["budget"] <= 3e18].reset_index(drop=True)   # 2 budgets
    spec = Select("loss", {"kaplan": "kaplan"}, used="kaplan", columns={"N": "n_params", "D": "tokens",
                                                                        "loss": "eval_loss", "C": "budget"})
    out = choose.run_select(spec, few)
    assert out["selection"] is None and "2 distinct level(s)" in out["skipped"]
    assert choose.select_lines(spec, out, "kaplan")[0].startswith("Not run: 2 distinct level(s)")
    three = results[results["budget"] <= 1e19].reset_index(drop=True)  # 3 budgets: one split on 2
    out = choose.run_select(spec, three)
    assert out["selection"] is not None and "1 split(s)" in out["reduced"]
    with pytest.raises(ValueError, match="either table_b"):
        Compare("x", ("a", "b"))
    with pytest.raises(ValueError, match="no column 'arm'"):
        choose.split_tables(Compare("x", ("a", "b"), by="arm"), results, None)
