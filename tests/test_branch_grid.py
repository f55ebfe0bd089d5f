"""The isoFLOP grid as cooldown branches (issue 21, point 4): the run plan only, no training.

The smoke preset's grid with ``grid=branches``: one stable run per size, one branch per cosine
point ending at the same tokens; every branch passes the harness's own branch check against its
stable run's config (with the kept checkpoints faked as directories); the FLOPs accounting of
`experiments.reports.branch_grid` against the plans; the shared-size lattice; the tree figure.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pandas as pd
import pytest

from experiments import isoflop_chinchilla as chinchilla
from experiments.harness import io
from experiments.harness.config import to_dict
from experiments.harness.train import check_branch
from experiments.reports import branch_grid
from experiments.runner import runs as runs_lib
from experiments.runner.recipe import derive
from models.transformer import param_counts


def _plan(study):
    runs = list(study.runs())
    return runs, runs_lib.results_frame(
        (runs_lib._row(r, r.run_id, None, "pending") for r in runs), runs_lib.label_columns(runs))


@pytest.fixture(scope="module")
def smoke():
    cosine = chinchilla.smoke()
    branches = derive(cosine, grid="branches")
    return cosine, list(cosine.runs()), *_plan(branches)


def _size(run):
    return param_counts(run.config.model)["total"]


def test_one_stable_run_per_size_and_one_branch_per_cosine_point(smoke):
    _, cosine, runs, _ = smoke
    stable = [r for r in runs if r.labels["role"] == "stable"]
    branches = [r for r in runs if r.labels["role"] == "branch"]
    assert len(stable) == len({_size(r) for r in cosine}) < len(cosine)
    assert len({_size(r) for r in stable}) == len(stable)
    # the same (budget, size, endpoint tokens, FLOPs) points as the cosine grid, nothing else
    def point(r):
        return r.budget, _size(r), r.config.train.tokens, r.plan().flops_at(r.plan().steps)["6N"]

    assert collections.Counter(map(point, branches)) == collections.Counter(map(point, cosine))
    by_id = {r.run_id: r for r in stable}
    for b in branches:
        parent = by_id[b.config.train.parent]
        plan, pplan = b.plan(), parent.plan()
        assert _size(parent) == _size(b) and b.run_id.startswith(parent.run_id + "_b")
        assert plan.branch_step in parent.config.train.keep_steps and plan.branch_step <= pplan.steps
        assert plan.decay_steps == max(1, round(0.2 * plan.steps))
        assert b.config.train.schedule == "wsd" and b.config.train.cooldown == "1-sqrt"
        assert b.labels["leaves_at"] == plan.tokens_at(plan.branch_step)
    for s in stable:
        mine = [b for b in branches if b.config.train.parent == s.run_id]
        assert s.config.train.schedule == "constant"
        assert s.plan().steps == max(b.plan().branch_step for b in mine)
        assert sorted(s.config.train.keep_steps) == sorted({b.plan().branch_step for b in mine})
        # the group's peak rate is its longest cosine point's (the rules evaluated there)
        longest = max((c for c in cosine if _size(c) == _size(s)), key=lambda c: c.config.train.tokens)
        assert s.config.train.lr == longest.config.train.lr


def test_every_branch_passes_the_harness_check_against_its_stable_run(smoke, tmp_path):
    _, _, runs, _ = smoke
    for s in (r for r in runs if r.labels["role"] == "stable"):
        io.write_json(tmp_path / s.run_id / "config.json", to_dict(s.config))
        for step in s.config.train.keep_steps:
            (tmp_path / s.run_id / "checkpoints" / str(step)).mkdir(parents=True)
    branches = [r for r in runs if r.labels["role"] == "branch"]
    for b in branches:
        check_branch(b.config, b.plan(), tmp_path / b.config.train.parent)
    b = branches[0]
    (tmp_path / b.config.train.parent / "checkpoints" / str(b.plan().branch_step)).rmdir()
    with pytest.raises(ValueError, match=f"no checkpoint at step {b.plan().branch_step}"):
        check_branch(b.config, b.plan(), tmp_path / b.config.train.parent)


def test_flops_spent_are_the_stable_runs_plus_the_cooldowns(smoke):
    _, cosine, runs, table = smoke
    cost = branch_grid.cost(table, "6N")
    stable = sum(r.plan().flops_at(r.plan().steps)["6N"] for r in runs if r.labels["role"] == "stable")
    cooldowns = sum(r.plan().flops_at(r.plan().steps)["6N"] - r.plan().flops_at(r.plan().branch_step)["6N"]
                    for r in runs if r.labels["role"] == "branch")
    scratch = sum(r.plan().flops_at(r.plan().steps)["6N"] for r in cosine)
    assert cost["stable_flops"] == pytest.approx(stable, rel=1e-12)
    assert cost["cooldown_flops"] == pytest.approx(cooldowns, rel=1e-12)
    assert cost["from_scratch"] == pytest.approx(scratch, rel=1e-12)
    assert cost["spent"] == pytest.approx(stable + cooldowns, rel=1e-12) and cost["spent"] < scratch
    assert (cost["stable_runs"], cost["branches"]) == (len(runs) - len(cosine), len(cosine))
    assert set(branch_grid.parents(table).values()) == set(table.loc[table["role"] == "stable", "run_id"])
    text = "\n".join(branch_grid.section(table, "6N"))
    assert f"{cost['ratio']:.2f}x" in text and f"{len(runs) - len(cosine)} stable runs" in text


def test_shared_sizes_let_neighbouring_budgets_share_stable_runs():
    study = derive(chinchilla.cpu(), grid="branches", shared_sizes=True)
    per_budget = {b: [param_counts(m)["total"] for m in chinchilla.models_at(study, b)] for b in study.budgets}
    budgets = sorted(per_budget)
    assert all(len(set(per_budget[a]) & set(per_budget[b])) >= 3 for a, b in zip(budgets, budgets[1:]))
    assert per_budget[budgets[0]] == [param_counts(m)["total"] for m in
                                      chinchilla.models_at(chinchilla.cpu(), budgets[0])]
    assert dataclasses.replace(chinchilla.cpu_branches(), name=study.name) == study
    runs, table = _plan(study)
    cost = branch_grid.cost(table, "6N")
    assert cost["stable_runs"] == len(set().union(*map(set, per_budget.values())))
    assert cost["ratio"] < 0.7  # measured plan: 6.19e12 of 9.69e12 FLOPs


def test_bad_branch_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="Study.grid='trees'"):
        derive(chinchilla.smoke(), grid="trees")
    with pytest.raises(ValueError, match="Study.cooldown_fraction=1.5"):
        derive(chinchilla.smoke(), cooldown_fraction=1.5)
    with pytest.raises(ValueError, match="Study.cooldown='cubic'"):
        derive(chinchilla.smoke(), cooldown="cubic")


def test_the_tree_figure_draws_every_stable_run_and_branch(smoke):
    import matplotlib

    matplotlib.use("Agg")
    _, cosine, runs, table = smoke
    fig = branch_grid.tree_figure(table)
    ax = fig.axes[0]
    grey = [ln for ln in ax.lines if ln.get_color() == "0.6"]
    squares = [ln for ln in ax.lines if ln.get_marker() == "s"]
    assert len(grey) == len(runs) - len(cosine) and len(squares) == len(cosine)
    ends = sorted(float(ln.get_xdata()[0]) for ln in squares)
    np.testing.assert_array_equal(ends, sorted(float(r.config.train.tokens) for r in cosine))


def test_compare_puts_both_grids_side_by_side(smoke, tmp_path):
    _, cosine, _, table = smoke
    cosine_table = runs_lib.results_frame(runs_lib._row(r, r.run_id, None, "completed") for r in cosine)
    for name, frame, a in (("cosine", cosine_table, 0.52), ("branches", table, 0.47)):
        runs_lib.write_results(tmp_path / name, frame)
        io.write_json(tmp_path / name / "analysis.json", {
            "approaches": {"2": {"exponents": {"a": a, "a_interval": [a - 0.1, a + 0.1], "b": 1 - a,
                                               "b_interval": None}}},
            "extrapolation": {"predictions": {"2": {"loss_rel_error": 0.012, "n_opt_rel_error": -0.25}}}})
    frame = branch_grid.compare([tmp_path / "cosine", tmp_path / "branches"])
    assert list(frame["kind"]) == ["cosine", "branches"] and list(frame["a"]) == [0.52, 0.47]
    assert frame["flops_spent"][0] == pytest.approx(cosine_table["flops_6N"].sum(), rel=1e-12)
    assert frame["flops_spent"][1] == pytest.approx(branch_grid.cost(table, "6N")["spent"], rel=1e-12)
    text = branch_grid.main([str(tmp_path / "cosine"), str(tmp_path / "branches"), "--bootstrap", "0"])
    assert "| cosine (cosine) |" in text and "[0.370, 0.570]" in text and "-25.00%" in text
    runs_lib.write_results(tmp_path / "unanalyzed", cosine_table)
    with pytest.raises(ValueError, match="unanalyzed: no analysis.json"):
        branch_grid.compare([tmp_path / "unanalyzed"])
    with pytest.raises(ValueError, match="unanalyzed: no analysis.json"):
        branch_grid.optima([tmp_path / "unanalyzed"])


def test_optima_puts_each_budgets_optimal_loss_side_by_side(smoke, tmp_path):
    """Two grids of the same budgets (say, trained at two learning-rate rules): per budget, the best
    measured loss, its difference to the first grid, and Approach 2's L_opt where it was fitted."""
    _, cosine, _, _ = smoke
    base = runs_lib.results_frame(runs_lib._row(r, r.run_id, None, "completed") for r in cosine)
    rng = np.random.default_rng(0)
    budgets = sorted(base["budget"].unique())
    tables = {}
    for name, shift in (("deepseek", 0.0), ("fitted", -0.05)):
        table = base.copy()
        table["eval_loss"] = 3.0 + rng.uniform(0, 1, len(table)) + shift
        table.loc[0, "status"] = "failed"  # a failed run is no point
        tables[name] = table
        runs_lib.write_results(tmp_path / name, table)
        io.write_json(tmp_path / name / "analysis.json", {"approaches": {"2": {"budgets": [
            {"budget": budgets[0], "loss_opt": 2.5 + shift, "loss_opt_interval": [2.4, 2.6], "n_opt": 1e4,
             "minimum_inside": True}]}}})
    frame = branch_grid.optima([tmp_path / "deepseek", tmp_path / "fitted"])
    assert len(frame) == 2 * len(budgets)
    for name, table in tables.items():
        ok = table[table["status"] == "completed"]
        mine = frame[frame["grid"] == name].set_index("budget")
        np.testing.assert_allclose(mine["best_loss"], ok.groupby("budget")["eval_loss"].min().loc[mine.index])
        assert mine.loc[budgets[0], "L_opt"] == pytest.approx(2.5 + (-0.05 if name == "fitted" else 0))
        assert np.isnan(mine.loc[budgets[-1], "L_opt"]) and not mine.loc[budgets[-1], "inside"]
    both = frame.pivot(index="budget", columns="grid", values="best_loss")
    fitted = frame[frame["grid"] == "fitted"].set_index("budget")["dL_best"]
    np.testing.assert_allclose(fitted, (both["fitted"] - both["deepseek"]).loc[fitted.index])
    assert (frame[frame["grid"] == "deepseek"]["dL_best"] == 0).all()
    out = tmp_path / "compare.md"
    text = branch_grid.main([str(tmp_path / "deepseek"), str(tmp_path / "fitted"), "--out", str(out),
                             "--bootstrap", "0"])
    assert out.read_text().strip() == text.strip() and "| 2.450 | [2.400, 2.600] |" in text


def test_recipe_comparison_of_two_grids_recovers_a_known_compute_multiplier(tmp_path):
    """Two isoFLOP grids whose losses follow one Chinchilla law, the second recipe with twice the
    parameters' and the tokens' worth (loss = L(2N, 2D)): `recipe_comparisons` (scaling.compare on
    the two results.csv) gives a compute multiplier of 4 at every budget (within 3%: the free form
    fits each recipe its own exponents, and the losses carry 0.2% noise), inside a band of its own."""
    law = {"E": 1.7, "A": 400.0, "B": 1100.0, "alpha": 0.34, "beta": 0.28}
    rng = np.random.default_rng(1)
    for name, m in (("standard", 1.0), ("better", 2.0)):
        rows = []
        for C in np.geomspace(1e10, 1e12, 5):
            for N in np.geomspace(2e3, 2e5, 5) * (C / 1e10) ** 0.5:
                D = C / (6 * N)
                loss = law["E"] + law["A"] / (m * N) ** law["alpha"] + law["B"] / (m * D) ** law["beta"]
                rows.append({"run_id": f"{name}_{C:.3g}_{N:.3g}", "budget": C, "seed": 0, "n_params": N,
                             "n_params_nonembedding": N, "tokens": D, "flops_6N": C, "flops_6N_nonembed": C,
                             "flops_exact": C, "flops_exact_noncausal": C,
                             "eval_loss": loss * (1 + 0.002 * rng.standard_normal()),
                             "eval_loss_sem": 0.002 * loss, "status": "completed", "reason": ""})
        runs_lib.write_results(tmp_path / name, pd.DataFrame(rows))
    text = branch_grid.recipe_comparisons([tmp_path / "standard", tmp_path / "better"], bootstrap=20)
    assert "Recipe comparison, better against standard:" in text and "`scaling.compare`: 25 standard runs" in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| C (FLOPs) | multiplier |")) + 2
    table = lines[start:lines.index("", start)]
    multipliers = [(float(r.split("|")[2]), r.split("|")[3]) for r in table if "(beyond" not in r]
    assert len(multipliers) >= 3 and len(table) == 7
    for value, band in multipliers:
        lo, hi = (float(x) for x in band.strip(" []").split(","))
        assert abs(value / 4.0 - 1) < 0.03 and lo <= value <= hi and hi / lo < 1.5, text
