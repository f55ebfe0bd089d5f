"""Recipe comparison (`scaling.compare`), law selection by extrapolation (`scaling.select`) and
two-step task prediction (`scaling.analysis.task_accuracy`), each on simulated data with a known
answer, and `select` on a bundled public table (Gadre et al. 2024's runs)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import scaling
from scaling.laws.loss import chinchilla_frontier

REF = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}   # Besiroglu et al.'s refit


def _isoflop_grid(params, seed, m_N=1.0, m_D=1.0, budgets=np.geomspace(1e18, 1e21, 5), sizes=6, noise=0.005):
    """An isoFLOP grid of runs of the law L(m_N N, m_D D) with `params`, lognormal noise, sem."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        n_opt = chinchilla_frontier(params, C=C)["N"]
        for N in n_opt * np.geomspace(0.25, 4.0, sizes):
            D = C / (6 * N)
            loss = params["E"] + params["A"] * (m_N * N) ** -params["alpha"] + params["B"] * (m_D * D) ** -params["beta"]
            rows.append((N, D, C, loss * np.exp(noise * rng.standard_normal()), noise * loss))
    return pd.DataFrame(rows, columns=["N", "D", "C", "loss", "sem"])


# ---------------------------------------------------------------------------------- compare

@pytest.fixture(scope="module")
def known_multiplier():
    # recipe b is recipe a with every parameter and token worth two: L_b(N, D) = L_a(2N, 2D), so on
    # the compute-optimal frontier recipe a needs exactly 4x the compute (C = 6ND) at every budget
    a, b = _isoflop_grid(REF, 0), _isoflop_grid(REF, 1, m_N=2.0, m_D=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {form: scaling.compare(a.drop(columns="D"), b.drop(columns="D"), names=("base", "better"),
                                      form=form, bootstrap=100) for form in ("efficiency", "free")}


@pytest.mark.parametrize("form", ["efficiency", "free"])
def test_compare_recovers_a_known_compute_multiplier_within_its_band(known_multiplier, form):
    comp = known_multiplier[form]
    C = np.geomspace(1e18, 1e21, 4)
    band = comp.compute_multiplier(C, level=0.95)
    assert band.method == "bootstrap_percentile"
    assert np.all(band.lower <= 4.0) and np.all(4.0 <= band.upper), (band.lower, band.upper)
    assert np.all(np.abs(band.value / 4.0 - 1) < 0.05), band.value
    assert np.all(band.upper / band.lower < 1.5)          # informative, not just wide
    for fn, x in ((comp.parameter_multiplier, 1e9), (comp.data_multiplier, 1e11)):
        b = fn(x, level=0.95)                              # each 2 in truth: less well determined alone
        assert b.lower < b.value < b.upper and abs(b.value / 2.0 - 1) < (0.1 if form == "efficiency" else 0.4), b
    assert comp.crossover()["C"] is None                   # parallel frontiers never cross
    d = comp.diagnostics                                   # noise at the stated sem: no lack of fit
    assert not d["lack_of_fit"] and 0.4 < d["reduced_chi2"] < 1.6 and d["p_value"] > 0.01
    out = json.loads(json.dumps(comp.to_dict()))           # JSON-ready
    fig = scaling.plots.plot_comparison(comp)                # headless, returns the Figure
    assert len(fig.axes) == 2
    assert out["recipes"] == ["base", "better"] and len(out["compute_multiplier"]["multiplier"]) == 7


def test_compare_finds_a_known_crossover_and_flags_lack_of_fit():
    # recipe b starts worse (larger A, B) but improves faster (larger exponents): the frontiers
    # cross at a known compute; a third table whose E differs breaks the shared-E assumption
    b_params = dict(REF, A=10000.0, B=60000.0, alpha=0.5, beta=0.5)   # crossing at 1.8e20
    a, b = _isoflop_grid(REF, 2, budgets=np.geomspace(1e18, 1e22, 5)), _isoflop_grid(b_params, 3, budgets=np.geomspace(1e18, 1e22, 5))
    fa, fb = chinchilla_frontier(REF), chinchilla_frontier(b_params)
    true_cross = 6 * np.exp((np.log(fa["loss_coefficient"]) - np.log(fb["loss_coefficient"])) / (fa["gamma"] - fb["gamma"]))
    assert 1e18 < true_cross < 1e22
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp = scaling.compare(a, b, bootstrap=100)
        cross = comp.crossover()
        assert cross["lower"] <= true_cross <= cross["upper"], (cross, true_cross)
        m = comp.compute_multiplier([1e18, 1e22], level=None)
        assert m[0] < 1 < m[1]                             # b worse at small budgets, better at large
        shifted = _isoflop_grid(dict(REF, E=2.3), 4)
        bad = scaling.compare(a, shifted, bootstrap=0)
    assert bad.diagnostics["lack_of_fit"] and bad.diagnostics["reduced_chi2"] > 3
    with pytest.raises(ValueError, match="needs columns N, loss and D or C"):
        scaling.compare(a.drop(columns=["D", "C"]), b)


# ---------------------------------------------------------------------------------- select

def test_select_ranks_the_true_law_first_on_held_out_budgets():
    true = {"E": 1.8, "A": 400.0, "B": 4000.0, "alpha": 0.25, "beta": 0.5}   # alpha != beta
    df = _isoflop_grid(true, 5, budgets=np.geomspace(1e18, 1e21, 6), sizes=5, noise=0.002)
    sel = scaling.select(["overtraining", "kaplan", "chinchilla"], df, holdout="budget", splits=3)
    assert sel.chosen == "chinchilla" and sel.chosen_law is scaling.laws.get("chinchilla")
    assert list(sel.table["law"]) [0] == "chinchilla"
    top = sel.table.iloc[0]
    assert top["score"] < 0.005 and top["failed"] == 0 and top["split_max"] >= top["split_min"]
    assert sel.table.iloc[1]["score"] > 1.5 * top["score"]   # a clear margin over the runner-up
    assert len(sel.splits) == 9 and "| 1 | chinchilla |" in sel.markdown()
    json.dumps(sel.to_dict())
    with pytest.raises(ValueError, match="needs at least splits \\+ min_train_levels = 3 \\+ 3 = 6 distinct levels"):
        scaling.select(["chinchilla"], df[df.C < 5e20], holdout="budget")


def test_select_on_gadre_et_al_runs_prefers_their_law_holding_out_the_largest_models():
    """Gadre et al. 2024's RefinedWeb runs (C4 validation loss), holding out the two largest
    model sizes (1.4B and 6.9B parameters) one at a time: their `overtraining` law (alpha = beta)
    extrapolates best, Chinchilla's five-parameter law second, Kaplan's last."""
    df = scaling.published.dataset("overtraining_gadre2024")
    df = df[df["dataset"] == "rw_original"]
    sel = scaling.select(["chinchilla", "overtraining", "kaplan"], df, holdout="size", splits=2,
                         columns={"loss": "loss_c4_val"})
    assert list(sel.table["law"]) == ["overtraining", "chinchilla", "kaplan"], sel.table
    assert sel.table.iloc[0]["score"] < 0.02 and sel.table.iloc[-1]["score"] > 0.05
    assert scaling.plots.plot_selection(sel).get_xticklabels()[0].get_text() == "overtraining"


# ---------------------------------------------------------------------------------- two-step task prediction

TASK = {"E": 0.6, "A": 60.0, "B": 300.0, "alpha": 0.3, "beta": 0.3}   # task loss of (N, D)
SIGMOID = {"a": 0.7, "L0": 1.0, "k": -8.0, "b": 0.25}                  # 4-choice task: chance 0.25


def _ladder(seed, accuracy):
    """6 sizes x 4 token counts (5-40 tokens per parameter): task loss with 1% noise, accuracy
    from `accuracy(loss)` sampled on 1,000 questions."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in np.geomspace(2e7, 1.5e9, 6):
        for tpp in (5, 10, 20, 40):
            D = tpp * N
            loss = (TASK["E"] + TASK["A"] * N ** -TASK["alpha"] + TASK["B"] * D ** -TASK["beta"]) * np.exp(
                0.01 * rng.standard_normal())
            rows.append((N, D, loss, rng.binomial(1000, accuracy(loss)) / 1000))
    return pd.DataFrame(rows, columns=["N", "D", "task_loss", "accuracy"])


def test_two_step_predicts_a_known_sigmoid_jump_beyond_the_ladder():
    from scaling.analysis.task_accuracy import fit_two_step
    sigmoid = lambda L: SIGMOID["a"] / (1 + np.exp(-SIGMOID["k"] * (L - SIGMOID["L0"]))) + SIGMOID["b"]  # noqa: E731
    df = _ladder(0, sigmoid)
    N, D = 1e10, 2e11                                       # 7x the largest ladder model, 3x its tokens
    true_loss = TASK["E"] + TASK["A"] * N ** -TASK["alpha"] + TASK["B"] * D ** -TASK["beta"]
    true_acc = sigmoid(true_loss)                           # 0.846, above every ladder point
    assert true_acc > df["accuracy"].max() + 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp = fit_two_step(df, bootstrap=200)
    loss = tp.predict_loss(N, D, level=0.95)
    assert loss.lower <= true_loss <= loss.upper
    band = tp.predict(N, D, level=0.95)
    assert band.method == "bootstrap_chained"
    assert band.lower <= true_acc <= band.upper and abs(band.value - true_acc) < 0.03, (band, true_acc)
    ax = scaling.plots.plot_two_step(tp, df, targets=[(N, D, true_acc)])
    assert ax.get_ylabel() == "accuracy"
    assert tp.target == "accuracy" and json.loads(json.dumps(tp.to_dict()))["chaining"]["method"] == "bootstrap_chained"


def test_two_step_with_gadre_et_al_error_law():
    from scaling.analysis.task_accuracy import fit_two_step
    law = scaling.laws.get("error_exponential")
    p = {"eps": 0.75, "k": 6.0, "gamma": 2.5}
    err = lambda L: p["eps"] - p["k"] * np.exp(-p["gamma"] * L)  # noqa: E731
    df = _ladder(1, lambda L: 1 - err(L))
    df["error"] = 1 - df["accuracy"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp = fit_two_step(df, accuracy_law=law, bootstrap=100)
    N, D = 1e10, 2e11
    true_loss = TASK["E"] + TASK["A"] * N ** -TASK["alpha"] + TASK["B"] * D ** -TASK["beta"]
    band = tp.predict(N, D, level=0.95)
    assert tp.target == "error" and band.lower <= err(true_loss) <= band.upper, (band, err(true_loss))
