"""The isoFLOP analysis recovers known compute-optimal exponents, flags bad grids, rejects bad input.

Synthetic data come from a known Chinchilla law L = E + A/N^alpha + B/D^beta with C = 6 N D, so
the true exponents are a = beta/(alpha+beta), b = alpha/(alpha+beta) (Hoffmann et al. 2022, Eq. 4).
"""

import io
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from scaling import isoflop, isoflop_plots
from scaling.fitted import load

TRUE = dict(E=1.7, A=400.0, B=410.0, alpha=0.34, beta=0.28)
A_TRUE = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])     # 0.4516
B_TRUE = TRUE["alpha"] / (TRUE["alpha"] + TRUE["beta"])    # 0.5484
GAMMA_TRUE = TRUE["alpha"] * TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
BUDGETS = np.logspace(18, 21, 7)
# A compact start grid for the parametric fit (the default 4,500 starts is slow on CI).
STARTS = dict(zip(("E", "A", "B", "alpha", "beta"), np.array(list(itertools.product(
    (1.0, 2.0), (100.0, 1000.0), (100.0, 1000.0), (0.2, 0.5), (0.2, 0.5)))).T))


def true_loss(N, D):
    return TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]


def true_n_opt(C):
    al, be = TRUE["alpha"], TRUE["beta"]
    G = (al * TRUE["A"] / (be * TRUE["B"])) ** (1 / (al + be))
    return G * (C / 6) ** A_TRUE


def isoflop_runs(noise=0.003, seed=0, budgets=BUDGETS, n_sizes=9, span=4.0, shift=None):
    """Per budget, n_sizes log-spaced sizes over [c/span, c*span] around c ~ N_opt (off-centre)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, C in enumerate(budgets):
        factor = np.exp(rng.uniform(-0.3, 0.3)) if shift is None else shift[i]
        centre = true_n_opt(C) * factor
        for N in np.geomspace(centre / span, centre * span, n_sizes):
            D = C / (6 * N)
            rows.append(dict(budget=C, n_params=N, tokens=D, flops=C, status="completed",
                             eval_loss=true_loss(N, D) * np.exp(noise * rng.standard_normal())))
    return pd.DataFrame(rows)


def curves_from_runs(runs, n_points=40):
    """The loss along each run: L(N, D_seen) at 40 log-spaced points up to its final token count."""
    rows = []
    for i, r in runs.reset_index(drop=True).iterrows():
        D = np.geomspace(r.tokens / 200, r.tokens, n_points)
        rows += [dict(run_id=f"run{i}", n_params=r.n_params, flops=6 * r.n_params * d, loss=true_loss(r.n_params, d),
                      tokens=d) for d in D]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def noisy_runs():
    return isoflop_runs()


@pytest.fixture(scope="module")
def clean_runs():
    return isoflop_runs(noise=0.0, seed=1)


@pytest.fixture(scope="module")
def clean_curves(clean_runs):
    return curves_from_runs(clean_runs)


@pytest.fixture(scope="module")
def result2(noisy_runs):
    return isoflop.approach2(noisy_runs, bootstrap=200, seed=0)


@pytest.fixture(scope="module")
def result3(noisy_runs):
    # the six smallest budgets: the extrapolation test refits on data of the same shape
    return isoflop.approach3(noisy_runs[noisy_runs.budget < BUDGETS[-1]], bootstrap=100, starts=STARTS)


@pytest.fixture(scope="module")
def result1(clean_curves):
    return isoflop.approach1(clean_curves, n_grid=300, bootstrap=30)


def _check_exponents(ex, tol):
    assert abs(ex.a - A_TRUE) < tol and abs(ex.b - B_TRUE) < tol, (ex.a, ex.b)
    assert ex.a_interval[0] < A_TRUE < ex.a_interval[1], ex.a_interval
    assert ex.b_interval[0] < B_TRUE < ex.b_interval[1], ex.b_interval


def test_approach2_recovers_exponents_with_intervals(result2, tmp_path):
    _check_exponents(result2.exponents, 0.02)
    assert all(b.minimum_inside and b.used_in_fit for b in result2.budgets)
    for b in result2.budgets:  # every parabola minimum is within 15% of the true optimum
        assert abs(b.n_opt / true_n_opt(b.budget) - 1) < 0.15
        assert b.n_opt_interval[0] < b.n_opt < b.n_opt_interval[1]
    # L_opt(C) = E + A' C^-gamma exactly on the frontier; 7 budgets allow the offset
    assert result2.loss_opt_law.law.name == "power_law"
    assert abs(result2.loss_opt_law.params["alpha"] - GAMMA_TRUE) < 0.02
    # tokens per parameter at 1e21 FLOPs against the truth D_opt / N_opt = C / (6 N_opt^2)
    tpp = result2.tokens_per_param[-1]
    assert abs(tpp["value"] / (1e21 / (6 * true_n_opt(1e21) ** 2)) - 1) < 0.2
    json.dumps(result2.to_dict())
    result2.n_opt_law.save(tmp_path / "n_opt.json")
    again = load(tmp_path / "n_opt.json")
    assert again.params == result2.n_opt_law.params
    assert again.interval("b") == result2.n_opt_law.interval("b")


def test_approach3_recovers_exponents_and_frontier_laws(result3):
    _check_exponents(result3.exponents, 0.02)
    p = result3.parametric.params
    assert result3.exponents.a == pytest.approx(p["beta"] / (p["alpha"] + p["beta"]), rel=1e-12)
    C = np.array([1e19, 1e22])
    opt = result3.parametric.compute_optimal(C)
    with pytest.warns(UserWarning):  # 1e22 lies beyond the fitted budgets
        assert result3.n_opt_law.predict(x=C) == pytest.approx(opt["N"], rel=1e-9)
        assert result3.d_opt_law.predict(x=C) == pytest.approx(opt["D"], rel=1e-9)
        assert result3.loss_opt_law.predict(x=C) == pytest.approx(opt["loss"], rel=1e-9)
    json.dumps(result3.to_dict())


def test_approach1_envelope_recovers_exponent(result1):
    _check_exponents(result1.exponents, 0.02)
    assert abs(result1.exponents.extra["loss_exponent"]["value"] - GAMMA_TRUE) < 0.01
    # every envelope point is won by a size that is neither the smallest nor the largest
    assert len(set(result1.points["N_opt"])) > 10


def test_extrapolation_errors_small_on_noiseless_data(clean_runs, clean_curves):
    check = isoflop.extrapolation_check(clean_runs, clean_curves, approach3_starts=STARTS, n_grid=300)
    assert check.held_out_budget == BUDGETS[-1]
    assert check.reference["source"] == "parabola_minimum"
    assert abs(check.reference["n_opt"] / true_n_opt(BUDGETS[-1]) - 1) < 0.1
    assert set(check.predictions) == {1, 2, 3}
    for approach, pred in check.predictions.items():
        assert abs(pred["loss_rel_error"]) < 0.003, (approach, pred)
        assert abs(pred["n_opt_rel_error"]) < 0.06, (approach, pred)
    json.dumps(check.to_dict())


def test_minimum_inside_flags_one_sided_budgets():
    shift = np.ones(len(BUDGETS))
    shift[2] = 1 / 10   # sizes N_opt/40 .. N_opt/2.5: all too small
    shift[4] = 10.0     # all too large
    runs = isoflop_runs(noise=0.0, shift=shift)
    minima = isoflop.isoflop_minima(runs)
    inside = [m.minimum_inside for m in minima]
    assert inside == [True, True, False, True, False, True, True]
    assert minima[2].suggestion["direction"] == "larger" and minima[4].suggestion["direction"] == "smaller"
    assert minima[2].suggestion["n_center"] > minima[2].n_range[1]
    assert minima[4].suggestion["n_center"] < minima[4].n_range[0]
    res = isoflop.approach2(runs, bootstrap=0)
    assert [b.used_in_fit for b in res.budgets] == inside
    assert len(res.points["C"]) == 5 and abs(res.exponents.a - A_TRUE) < 0.02
    assert res.exponents.a_interval is None  # no bootstrap, no interval


def test_sem_weights_downweight_a_noisy_run():
    runs = isoflop_runs(noise=0.0, budgets=BUDGETS[:3])
    runs["eval_loss_sem"] = 1e-3
    outlier = runs.index[4]  # the middle size of the first budget
    runs.loc[outlier, "eval_loss"] += 0.3
    plain = isoflop.isoflop_minima(runs.drop(columns="eval_loss_sem"))[0]
    runs.loc[outlier, "eval_loss_sem"] = 10.0
    weighted = isoflop.isoflop_minima(runs)[0]
    assert weighted.weighted and not plain.weighted
    truth = isoflop.isoflop_minima(isoflop_runs(noise=0.0, budgets=BUDGETS[:3]))[0]
    assert abs(weighted.loss_opt - truth.loss_opt) < 1e-3 < abs(plain.loss_opt - truth.loss_opt)


def test_bad_input_raises_value_error(noisy_runs, clean_curves):
    runs = noisy_runs.copy()
    with pytest.raises(ValueError, match="missing columns.*tokens"):
        isoflop.approach2(runs.drop(columns="tokens"))
    with pytest.raises(ValueError, match="distinct model sizes"):
        isoflop.isoflop_minima(runs[~((runs.budget == BUDGETS[0]) & (runs.index % 9 > 1))])
    bad = runs.copy()
    bad.loc[3, "n_params"] = -1.0
    with pytest.raises(ValueError, match="n_params.*non-positive.*rows \\[3\\]"):
        isoflop.approach2(bad)
    bad = runs.copy()
    bad.loc[5, "eval_loss"] = np.nan
    with pytest.raises(ValueError, match="eval_loss.*NaN"):
        isoflop.approach3(bad)
    bad = runs.copy()
    bad["eval_loss_sem"] = 0.0
    with pytest.raises(ValueError, match="eval_loss_sem.*> 0"):
        isoflop.isoflop_minima(bad)
    with pytest.raises(ValueError, match="unknown names"):
        isoflop.approach2(runs, columns={"loss": "eval_loss"})
    with pytest.raises(ValueError, match="at least 2"):
        isoflop.approach2(runs[runs.budget == BUDGETS[0]])
    with pytest.raises(ValueError, match="missing columns.*loss"):
        isoflop.approach1(clean_curves.drop(columns="loss"))
    with pytest.raises(ValueError, match="distinct FLOP"):
        isoflop.approach1(pd.concat([clean_curves, clean_curves.iloc[:1].assign(run_id="lonely")]))
    with pytest.raises(ValueError, match="must be > 0"):
        isoflop.approach1(clean_curves.assign(flops=clean_curves.flops * 0))
    with pytest.raises(ValueError, match="DataFrame"):
        isoflop.approach2([1, 2, 3])


def test_analyze_reports_excluded_runs_and_fits(clean_runs, clean_curves):
    runs = clean_runs.copy()
    runs.loc[0, "status"] = "failed"
    runs.loc[0, "eval_loss"] = np.nan  # failed runs may carry anything: they are not used
    analysis = isoflop.analyze(runs, clean_curves, approaches=(1, 2), bootstrap=50, bootstrap_approach1=10,
                               n_grid=300)
    assert [e["status"] for e in analysis.excluded_runs] == ["failed"]
    assert set(analysis.approaches) == {1, 2}
    assert set(analysis.fitted_laws()) == {f"approach{i}_{q}" for i in (1, 2) for q in ("n_opt", "d_opt", "loss_opt")}
    rows = analysis.exponents_table()
    assert [r["approach"] for r in rows] == [1, 2] and all(abs(r["a"] - A_TRUE) < 0.02 for r in rows)
    assert set(analysis.extrapolation.predictions) == {1, 2}
    json.dumps(analysis.to_dict())


def test_plots_draw_one_curve_per_budget_and_per_approach(result1, result2, result3, clean_curves):
    fig = isoflop_plots.plot_isoflop_curves(result2)
    ax = fig.axes[0]
    assert len(ax.lines) == len(result2.budgets) == 7
    fig = isoflop_plots.plot_training_envelope(clean_curves, result1)
    assert len(fig.axes[0].lines) == clean_curves.run_id.nunique() == 63
    fig = isoflop_plots.plot_compute_optimal([result1, result2, result3])
    for ax in fig.axes:
        assert len(ax.lines) == 3
        labels = [line.get_label() for line in ax.lines]
        assert [lab.split(":")[0] for lab in labels] == ["Approach 1", "Approach 2", "Approach 3"]
        assert len({line.get_linestyle() for line in ax.lines}) == 3
        assert len(ax.collections) == 6  # a band and the points per approach
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(legend) == 6 and sum("points" in t for t in legend) == 3   # every line (+band) and every set of points
        points = [c for c in ax.collections if c.get_label().startswith("Approach")]
        assert len(points) == 3 and min(c.get_zorder() for c in points) > max(line.get_zorder() for line in ax.lines)
    fig = isoflop_plots.plot_isoloss_frontier(result3)
    ax = fig.axes[0]
    assert len(ax.collections) >= 1  # the iso-loss contours
    assert len(ax.lines) == 1 + 6  # the frontier and one isoFLOP line per budget
    assert "frontier" in ax.lines[0].get_label()
    # axes: the fitted data's range with a modest margin; contours at the optimal losses of the budgets
    ranges = result3.parametric.data["ranges"]
    assert ax.get_xlim() == pytest.approx((ranges["N"][0] / 1.6, ranges["N"][1] * 1.6))
    assert ax.get_ylim() == pytest.approx((ranges["D"][0] / 1.6, ranges["D"][1] * 1.6))
    optimal = sorted(result3.parametric.compute_optimal(c)["loss"] for c in result3.points["C"])
    levels = ax.collections[0].levels
    assert all(np.min(np.abs(levels - o)) < 1e-9 for o in optimal)
    assert sum(t.get_text().startswith("C = ") for t in ax.texts) >= 3   # iso-FLOP lines labelled
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="Approach 3"):
        isoflop_plots.plot_isoloss_frontier(result2)


def test_chinchilla_points_approach2_matches_hoffmann():
    """Hoffmann et al. 2022 Table 2, Approach 2: a = 0.49 (0.462, 0.534), b = 0.51 (0.483, 0.529)."""
    from importlib import resources
    df = pd.read_csv(resources.files("scaling") / "data" / "chinchilla_points.csv")
    df["budget"] = isoflop.assign_budgets(df["C"], step_dex=0.25, tolerance_dex=0.05)
    df = df.dropna(subset=["budget"])
    res = isoflop.approach2(df, columns={"n_params": "N", "tokens": "D", "eval_loss": "loss"}, bootstrap=200,
                            drop_small_budgets=True)
    ex = res.exponents
    assert ex.a_interval[0] < 0.49 < ex.a_interval[1] and ex.b_interval[0] < 0.51 < ex.b_interval[1]
    assert abs(ex.a - 0.49) < 0.04 and abs(ex.a + ex.b - 1) < 0.01
    assert sum(b.used_in_fit for b in res.budgets) >= 9


def test_approach3_without_a_frontier_is_a_clear_error():
    # loss that grows with model size at fixed tokens: the fit needs alpha < 0, and L(N, D) then has
    # no compute-optimal frontier, which must be said rather than returned as NaN
    runs = isoflop_runs(noise=0.0)
    runs["eval_loss"] = 2.0 + 0.5 * (runs["n_params"] / 1e8) ** 0.3 + 400.0 * runs["tokens"] ** -0.3
    with pytest.raises(ValueError, match="no compute-optimal"):
        isoflop.approach3(runs, bootstrap=0, starts=STARTS)


# ----------------------------------------------------------------------------- Approach 2 near each minimum

def _three_decade_profiles(alpha=0.40, beta=0.25, E=1.69, A=406.4, B=410.7):
    """Noise-free isoFLOP profiles of L(N, D) = E + A/N^alpha + B/D^beta: one family of 25 sizes over three
    decades of N (3e6..3e9) trained at every budget (1e18..1e21), so each minimum sits off-centre."""
    sizes = np.geomspace(3e6, 3e9, 25)
    rows = [{"budget": C, "n_params": N, "tokens": C / (6 * N), "eval_loss": E + A * N ** -alpha + B * (C / (6 * N)) ** -beta}
            for C in np.geomspace(1e18, 1e21, 4) for N in sizes]
    return pd.DataFrame(rows), beta / (alpha + beta)


def test_approach2_fits_each_parabola_near_its_minimum_and_recovers_the_exponent():
    runs, a_true = _three_decade_profiles()
    local = isoflop.approach2(runs, bootstrap=0)
    assert abs(local.exponents.a - a_true) < 0.01            # measured: 1.2e-4
    with pytest.warns(UserWarning, match="too wide for a parabola"):
        whole = isoflop.approach2(runs, bootstrap=0, fit_window=None)
    assert abs(whole.exponents.a - a_true) > 0.01            # the full-profile parabola misses (measured: +0.012)
    for m in local.budgets:
        used = np.asarray(m.sizes)[np.asarray(m.used)]
        best = m.best_run["n_params"]
        assert len(used) == 7 and np.all(np.abs(np.log(used / best)) <= np.log(3.0) + 1e-9)
        assert "factor 3" in m.fit_rule and m.minimum_inside and not m.flags
        assert m.to_dict()["used"] == m.used
    for m in whole.budgets:
        assert all(m.used) and any("too wide" in f for f in m.flags)
    assert any("too wide" in note for note in whole.notes)


def test_select_points_rule_and_lopsided_warning():
    N = np.geomspace(1e7, 1e9, 9)
    L = (np.log(N) - np.log(N[0])) ** 2 + 2.0            # best run at the smallest size
    mask, rule = isoflop.select_points(N, L, window=3.0, min_sizes=5)
    assert mask.tolist() == [True] * 5 + [False] * 4 and "at least the 5 nearest" in rule
    assert isoflop.select_points(N, L, window=None)[0].all()
    with pytest.raises(ValueError, match="fit_window must be a factor > 1"):
        isoflop.select_points(N, L, window=0.5)
    # a budget whose minimum sits at the edge of its sizes: flagged lopsided
    runs = pd.DataFrame({"budget": 1e19, "n_params": np.tile(N, 2), "tokens": 1e19 / (6 * np.tile(N, 2)),
                         "eval_loss": np.tile(2.0 + 0.02 * (np.log(N / 1.2e7)) ** 2, 2)})
    runs.loc[9:, "budget"] = 1e20
    with pytest.warns(UserWarning, match="lopsided"):
        result = isoflop.approach2(runs, bootstrap=0)
    assert any("lopsided" in f for m in result.budgets for f in m.flags)


def test_a_saved_frontier_law_answers_compute_optimal_as_a_prior(result2, tmp_path):
    """fits/approach2_n_opt.json of one study gives the next one N_opt(C) and D = C / (k N_opt)."""
    path = tmp_path / "approach2_n_opt.json"
    result2.fitted_laws()["approach2_n_opt"].save(path)
    prior = load(path)
    assert prior.flop_convention == "6N" and prior.data["target"] == "N_opt"
    C = np.array([1e19, 1e20])
    out = prior.compute_optimal(C)
    assert out["method"] == "frontier_law" and out["interval_method"] == "bootstrap_percentile"
    np.testing.assert_allclose(out["N"], isoflop.predict_band(result2.n_opt_law, C)[0], rtol=1e-12)
    np.testing.assert_allclose(out["D"], C / (6 * out["N"]), rtol=1e-12)
    lo, hi = out["N_interval"]
    assert np.all(lo < out["N"]) and np.all(out["N"] < hi)
    assert np.all(np.abs(np.log(out["N"] / true_n_opt(C))) < 0.15)
    assert out["loss"] is None


def test_flop_conventions_are_the_flops_vocabulary(noisy_runs):
    """isoflop speaks scaling.flops.CONVENTIONS: "6N" works (it raised before), "exact" needs the runs' k."""
    result = isoflop.approach2(noisy_runs, flop_convention="6N", bootstrap=0)
    assert result.flop_convention == "6N" and result.n_opt_law.flop_convention == "6N"
    legacy = isoflop.approach2(noisy_runs, flop_convention="6ND", bootstrap=0)   # older name, same thing
    assert legacy.flop_convention == "6N" and legacy.exponents.a == result.exponents.a
    k = isoflop.effective_k(noisy_runs)
    exact = isoflop.approach2(noisy_runs, flop_convention="exact", k=k, bootstrap=0)
    assert exact.flop_convention == "exact" and exact.n_opt_law.k == pytest.approx(k)
    with pytest.raises(ValueError, match="needs k="):
        isoflop.approach2(noisy_runs, flop_convention="exact", bootstrap=0)
