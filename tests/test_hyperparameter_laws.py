"""Hyperparameter laws: the per-cell optima (`scaling.analysis.hyperparameters`) recover a known
optimal learning rate and batch from a simulated sweep and the laws recover their exponents; a cell
whose optimum is on its grid's edge is flagged and left out; a fitted-law file of the wrong kind
given as ``lr`` / ``rows_per_step`` is refused in one line; the ladder trains at a fitted law's
prediction; the smoke study (`experiments.studies.hyperparameter_laws`) writes its fits, report and
seed runs, each run's config holding the rate and batch it trained at."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import scaling
from experiments.harness.config import apply_overrides
from experiments.reports.files import write_fits
from experiments.runner.recipe import BATCH_RULES, LR_RULES, as_rule
from scaling.analysis import hyperparameters as hp

TRUE = {"A": 2.0, "b_N": -0.4, "b_D": 0.1, "B_A": 2.0, "B_b": 0.5}


def simulated_sweep(seed=0, noise=0.002, shift=1.0) -> pd.DataFrame:
    """loss = 3 + 0.05 ln(lr / eta*)^2 + 0.02 ln(B / B*)^2 + noise; eta* = 2 N^-0.4 D^0.1 (x
    ``shift`` for the smallest N), B* = 2 D^0.5; 3 N x 3 D cells, 7 jittered rates x 3 batches."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in (1e4, 3e4, 1e5):
        for D in (2e5, 1e6, 5e6):
            eta = TRUE["A"] * N ** TRUE["b_N"] * D ** TRUE["b_D"]
            b_opt = TRUE["B_A"] * D ** TRUE["B_b"]
            for B in (b_opt / 2.5, b_opt, b_opt * 2.5):
                B = float(2 ** np.round(np.log2(B)))
                for k in range(-3, 4):
                    lr = eta * 2.0 ** k
                    centre = eta * (shift if N == 1e4 else 1.0)
                    loss = 3 + 0.05 * np.log(lr / centre) ** 2 + 0.02 * np.log(B / b_opt) ** 2 + rng.normal(0, noise)
                    rows.append(dict(N=N, D=D, C=6 * N * D, lr=lr, B=B, loss=loss, sem=noise,
                                     parameterization="sp"))
    return pd.DataFrame(rows)


def test_cell_optima_and_laws_recover_the_simulated_ones():
    per_batch, cells, draws = hp.cell_optima(simulated_sweep(), cell=("N", "D"), bootstrap=30)
    assert len(per_batch) == 27 and len(cells) == 9 and (cells["flags"] == "").all()
    eta = TRUE["A"] * cells["N"] ** TRUE["b_N"] * cells["D"] ** TRUE["b_D"]
    assert np.abs(np.log(cells["lr_opt"] / eta)).max() < 0.1
    assert ((cells["lr_lo"] <= cells["lr_opt"]) & (cells["lr_opt"] <= cells["lr_hi"])).all()
    # basin: rates within 1% of the best loss (0.05 ln^2 <= 0.03: within a factor e^0.77 either side)
    assert (cells["basin_hi"] / cells["basin_lo"] >= 2).all()
    laws, notes = hp.fit_laws(cells, bootstrap=30)
    assert not notes and set(laws) == set(hp.LAW_SPECS)
    lr = laws["lr_optimum"]
    assert lr.params["b_N"] == pytest.approx(TRUE["b_N"], abs=0.04)
    assert lr.params["b_D"] == pytest.approx(TRUE["b_D"], abs=0.04)
    assert laws["batch_optimum"].params["b"] == pytest.approx(TRUE["B_b"], abs=0.08)
    assert lr.provenance["quantity"] == "learning_rate" and "x" not in lr.provenance
    assert laws["batch_optimum"].provenance == {**laws["batch_optimum"].provenance, "quantity": "batch_tokens", "x": "D"}
    assert lr.interval("b_N")[0] < lr.params["b_N"] < lr.interval("b_N")[1]


def test_a_cell_whose_optimum_is_on_the_edge_is_flagged_and_not_used():
    sweep = simulated_sweep(shift=40.0)   # the smallest N's optimum lies far above its grid
    _, cells, _ = hp.cell_optima(sweep, cell=("N", "D"), bootstrap=0)
    small = cells[cells["N"] == 1e4]
    assert (small["flags"].str.contains("lr_edge_high")).all() and not small["usable_lr"].any()
    assert "move the grid up" in hp.move_grid_hint(small.iloc[0])
    laws, _ = hp.fit_laws(cells, bootstrap=0, names=("lr_optimum",))
    assert laws["lr_optimum"].data["n_points"] == 6      # the 3 flagged cells left out
    # a diverged rate (NaN loss) above the best one is a bracket, not an edge
    top = sweep["lr"] == sweep.groupby(["N", "D", "B"])["lr"].transform("max")
    _, with_nan, _ = hp.cell_optima(sweep.assign(loss=sweep["loss"].where(~top)), cell=("N", "D"), bootstrap=0)
    assert (with_nan.loc[with_nan["N"] > 1e4, "flags"] == "").all()
    assert with_nan.loc[with_nan["N"] > 1e4, "lr_opt"].to_numpy() == pytest.approx(
        cells.loc[cells["N"] > 1e4, "lr_opt"].to_numpy(), rel=0.05)
    assert laws["lr_optimum"].params["b_N"] == pytest.approx(TRUE["b_N"], abs=0.06)


def test_a_smaller_batch_that_measured_lower_is_the_best_batch_even_with_its_rates_off_the_grid():
    """The smallest batch's losses fall all the way to its grid's lowest rate and below every other
    batch's minimum: the cell's best batch is that one (flagged at both edges), not the next batch
    up whose rate optimum happens to be inside (which would call a too-large batch an optimum)."""
    sweep = simulated_sweep()
    small = sweep["B"] == sweep.groupby(["N", "D"])["B"].transform("min")
    u = np.log(sweep["lr"] / sweep.groupby(["N", "D"])["lr"].transform("min"))   # 0 at the lowest rate
    sweep.loc[small, "loss"] = 2.95 + 0.01 * u[small]
    per_batch, cells, _ = hp.cell_optima(sweep, cell=("N", "D"), bootstrap=0)
    assert per_batch.loc[per_batch["B"] == per_batch.groupby(["N", "D"])["B"].transform("min"),
                         "flags"].str.contains("lr_edge_low").all()
    np.testing.assert_allclose(cells["B_opt"], sweep[small].groupby(["N", "D"])["B"].first().to_numpy())
    assert cells["flags"].str.contains("batch_edge_low").all() and cells["flags"].str.contains("lr_edge_low").all()
    assert not cells["usable_batch"].any() and not cells["usable_lr"].any()
    # the same sweep without the smaller batch's lower losses: an inside batch optimum, as before
    _, plain, _ = hp.cell_optima(simulated_sweep(), cell=("N", "D"), bootstrap=0)
    assert plain["usable_batch"].all()


def _law(tmp_path, name, law, data, provenance):
    fitted = scaling.fit(law, data, "y", provenance=provenance)
    (path,) = write_fits(tmp_path, {name: fitted})
    return str(path)


def test_a_fitted_law_file_of_the_wrong_kind_is_refused_in_one_line(tmp_path):
    c = np.array([1e9, 1e10, 1e11, 1e12])
    batch = _law(tmp_path, "batch", "pure_power_law", {"x": c, "y": 0.3 * c ** 0.33}, hp.describe("batch_tokens", "C"))
    lr_d = _law(tmp_path, "lr_d", "pure_power_law", {"x": c, "y": 0.01 * c ** -0.1}, hp.describe("learning_rate", "D"))
    old = _law(tmp_path, "old", "pure_power_law", {"x": c, "y": 0.01 * c ** -0.1}, {})
    loss = str(tmp_path / "loss.json")
    scaling.published.get("hoffmann2022").save(loss)
    for value, field, rules, kind in ((batch, "Study.lr", LR_RULES, "batch_tokens"),
                                      (lr_d, "Study.rows_per_step", BATCH_RULES, "learning_rate"),
                                      (loss, "Study.lr", LR_RULES, "loss")):
        with pytest.raises(ValueError) as err:
            as_rule(value, rules, field)
        message = str(err.value)
        assert "\n" not in message and value in message and f"fitted {kind} law" in message
    # x says what the covariate is: D here (the rule's second input), C for a file without it
    assert as_rule(lr_d, LR_RULES, "Study.lr")(7.0, 1e6, 1e15) == pytest.approx(0.01 * 1e6 ** -0.1, rel=1e-6)
    assert as_rule(old, LR_RULES, "Study.lr")(7.0, 1e6, 1e15) == pytest.approx(0.01 * 1e15 ** -0.1, rel=1e-6)
    assert as_rule(batch, BATCH_RULES, "Study.rows_per_step")(7.0, 1e6, 1e10) == pytest.approx(0.3 * 1e10 ** 0.33,
                                                                                                 rel=1e-6)


def test_the_ladder_trains_at_the_fitted_laws_predictions(tmp_path):
    """isoFLOP study given the fitted files as lr and rows_per_step: every run's config holds the
    law's rate at its (N non-embedding, D) and the law's batch (tokens / seq_len) at its D."""
    from experiments.studies import isoflop_chinchilla as iso
    from models.transformer import param_counts

    _, cells, _ = hp.cell_optima(simulated_sweep(), cell=("N", "D"), bootstrap=0)
    laws, _ = hp.fit_laws(cells, bootstrap=0, names=("lr_optimum", "batch_optimum"))
    paths = {p.stem: str(p) for p in write_fits(tmp_path, laws)}
    study = apply_overrides(iso.smoke(), [f"lr={paths['lr_optimum']}", "lr_scale=1",
                                          f"rows_per_step={paths['batch_optimum']}"])
    runs = list(study.runs())
    assert runs
    seq = study.base.data.seq_len
    for run in runs:
        cfg = run.config
        n_ne, d = param_counts(cfg.model)["nonembedding"], cfg.train.tokens
        assert cfg.train.lr == pytest.approx(laws["lr_optimum"].params["A"] * n_ne ** laws["lr_optimum"].params["b_N"]
                                             * d ** laws["lr_optimum"].params["b_D"], rel=1e-6)
    # the batch rule is applied to the planned tokens before rounding to whole steps
    planned = {round(r.config.train.batch_size) for r in runs}
    assert all(b >= 1 for b in planned) and len(planned) >= 1
    b_law = laws["batch_optimum"]
    for run in runs:
        rows = run.config.train.batch_size
        target = b_law.params["A"] * run.config.train.tokens ** b_law.params["b"] / seq
        assert abs(math.log(rows / max(target, 1))) < math.log(1.6)


def test_smoke_study_writes_fits_report_and_seed_runs(hp_smoke):
    workdir, proc = hp_smoke
    assert "runs completed" in proc.stdout
    results = pd.read_csv(workdir / "results.csv")
    assert set(results["role"]) == {"grid"} and len(results) == 24
    assert results.groupby(["cell_tokens", "rows_per_step"])["lr"].nunique().eq(6).all()
    for row in results.itertuples():   # each run's config records the rate and batch it trained at
        cfg = json.loads((workdir / "runs" / row.run_id / "config.json").read_text())
        assert cfg["train"]["lr"] == pytest.approx(row.lr) and cfg["train"]["batch_size"] == row.rows_per_step
    seeds = pd.read_csv(workdir / "rung" / "results.csv")
    assert len(seeds) == 2 and set(seeds["role"]) == {"seed"} and (seeds["seed"] == 1).all()
    cells = pd.read_csv(workdir / "cell_optima.csv")
    assert len(cells) == 2 and {"lr_opt", "B_opt", "basin_lo", "basin_hi", "flags"} <= set(cells.columns)
    report = (workdir / "report.md").read_text()
    for section in ("Optimal learning rate and batch per cell", "Fitted laws beside the published",
                    "Held out: the largest cell", "Seed noise", "muP transfer check"):
        assert f"## {section}" in report
    parabolas = sorted((workdir / "fits").glob("loss_vs_lr_*.json"))
    assert parabolas
    law = scaling.load(str(parabolas[0]))
    assert law.law.name == "isoflop_parabola" and law.params["c2"] > 0
    for name in ("lr_optimum_C", "batch_optimum", "lr_optimum"):
        path = workdir / "fits" / f"{name}.json"
        if path.exists():
            assert scaling.load(str(path)).provenance["quantity"] in hp.QUANTITIES
    assert (workdir / "plots" / "loss_vs_lr.png").stat().st_size > 1000


def test_a_law_file_that_the_analysis_no_longer_fits_is_removed(hp_smoke, tmp_path):
    """Rerun on more runs, the analysis may fit fewer laws; a fits/ file left by the earlier one
    would be taken as a rule (`--set lr=.../fits/lr_optimum.json`), so it is removed, with a note."""
    import dataclasses
    import shutil

    from etils import epath

    from experiments.reports import hyperparameter_laws as report
    from experiments.runner.runs import read_results
    from experiments.runner.study import StudyContext
    from experiments.studies import hyperparameter_laws as study_file

    workdir, _ = hp_smoke
    copy = epath.Path(tmp_path / "hp")
    shutil.copytree(workdir, copy)
    stale = copy / "fits" / "lr_optimum.json"   # one size only: eta_opt(N, D) is never fitted here
    stale.write_text((copy / "fits" / sorted(p.name for p in (copy / "fits").glob("loss_vs_lr_*"))[0]).read_text())
    context = StudyContext(name="hp", workdir=copy, results=read_results(copy), measurements={},
                           declaration=study_file.smoke(), preset="smoke", flop_convention="6N", started=0.0)
    out = report.compute(dataclasses.replace(context))
    assert "lr_optimum" not in out["fitted"] and not stale.exists()
    assert any("fits/lr_optimum.json of an earlier analysis removed" in n for n in out["notes"])
    assert (copy / "fits" / "lr_optimum_C.json").exists() == ("lr_optimum_C" in out["fitted"])


def test_the_reports_ladder_commands_name_only_the_fitted_files():
    """report.md's "Using the fitted laws": the isoFLOP commands pass only the files this analysis
    fitted (a batch law not fitted keeps the study's batch), then put both grids side by side."""
    from types import SimpleNamespace

    from experiments.reports import hyperparameter_laws as report

    def lines(*names):
        return "\n".join(report.usage_lines(SimpleNamespace(out={"fitted": dict.fromkeys(names, object())},
                                                            context=SimpleNamespace(workdir="W"))))

    both = lines("lr_optimum", "batch_optimum")
    assert "--set lr=W/fits/lr_optimum.json --set lr_scale=1 \\\n    --set rows_per_step=W/fits/batch_optimum.json\n" in both
    assert "python -m experiments.reports.branch_grid runs/iso_deepseek runs/iso_hp" in both
    only_lr = lines("lr_optimum", "lr_optimum_C")
    assert "rows_per_step" not in only_lr and "batch_optimum not fitted" in only_lr
    assert "--set lr=W/fits/lr_optimum.json --set lr_scale=1\npython -m experiments.reports.branch_grid" in only_lr
    assert "branch_grid" not in lines("lr_optimum_C") and "nothing to train" in lines()
