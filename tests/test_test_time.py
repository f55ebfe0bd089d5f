"""Test-time compute: the pass@k estimator, the Beta model, coverage and verifier laws."""

import itertools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.special
import scipy.stats

import scaling
from scaling.laws import pass_at_k as tt


# ----------------------------------------------------------------------------- pass@k estimator

def _brute_force_pass_at_k(n, c, k):
    """Fraction of the k-subsets of n samples (c of them correct) that contain a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_subset_enumeration():
    cases = [(n, c, k) for n in range(1, 8) for c in range(n + 1) for k in range(1, n + 1)]
    n, c, k = (np.array(v) for v in zip(*cases))
    got = tt.pass_at_k(n, c, k)  # one vectorized call over all 168 "problems"
    want = np.array([_brute_force_pass_at_k(*case) for case in cases])
    assert got.shape == (len(cases),)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


def test_pass_at_k_exact_edge_cases():
    out = tt.pass_at_k([10, 10, 10, 10, 5], [0, 10, 8, 3, 5], [4, 1, 3, 0, 5])
    assert out[0] == 0.0  # no correct sample
    assert out[1] == 1.0  # all correct
    assert out[2] == 1.0  # n - c = 2 < k = 3: every 3-subset holds a correct one
    assert out[3] == 0.0  # k = 0 attempts
    assert out[4] == 1.0


def test_pass_at_k_stable_for_large_n():
    n, c, k = 100_000, 37, 500
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    got = tt.pass_at_k(n, c, k)
    assert abs(float(got) - float(exact)) < 1e-10
    # Schaeffer et al.'s product form, Chen et al.'s numerically stable reference
    product = 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))
    assert abs(float(got) - product) < 1e-10
    tiny = tt.pass_at_k(10**6, 1, 1)  # 1e-6 exactly
    assert abs(float(tiny) - 1e-6) < 1e-15


def test_pass_at_k_is_exactly_unbiased_and_monte_carlo_unbiased():
    n, k = 20, 5
    for p in (0.02, 0.1, 0.4):
        truth = 1 - (1 - p) ** k
        # exact expectation over c ~ Binomial(n, p)
        cs = np.arange(n + 1)
        expectation = np.sum(scipy.stats.binom.pmf(cs, n, p) * tt.pass_at_k(n, cs, k))
        assert abs(expectation - truth) < 1e-12
        # Monte Carlo: mean estimate over 20000 simulated problems within 4 standard errors
        rng = np.random.default_rng(0)
        est = tt.pass_at_k(n, rng.binomial(n, p, size=20_000), k)
        se = est.std(ddof=1) / np.sqrt(est.size)
        assert abs(est.mean() - truth) < 4 * se


def test_pass_at_k_broadcasts_and_accepts_integral_floats():
    out = tt.pass_at_k(np.array([[10.0], [20.0]]), 2, np.array([1, 2, 3]))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out[0], [tt.pass_at_k(10, 2, k) for k in (1, 2, 3)])
    assert float(tt.pass_at_k(jnp.asarray(10), jnp.asarray(2), 1)) == pytest.approx(0.2)


@pytest.mark.parametrize("n,c,k,message", [
    (5, 6, 1, "c must be <= n"),
    (5, 2, 6, "k must be <= n"),
    (-1, 0, 0, "n must be >= 0"),
    (5, -2, 1, "c must be >= 0"),
    (5, 2, -1, "k must be >= 0"),
    (5.5, 2, 1, "whole numbers"),
    (5, float("nan"), 1, "whole numbers"),
    ([5, 6], [1, 9], 1, r"index \[1\]"),
])
def test_pass_at_k_rejects_bad_counts(n, c, k, message):
    with pytest.raises(ValueError, match=message):
        tt.pass_at_k(n, c, k)


def test_pass_at_k_curve_is_mean_over_problems():
    n = np.array([10, 12, 15])
    c = np.array([0, 3, 15])
    ks = [1, 2, 5, 10]
    curve = tt.pass_at_k_curve(n, c, ks)
    want = [np.mean([tt.pass_at_k(ni, ci, k) for ni, ci in zip(n, c)]) for k in ks]
    np.testing.assert_allclose(curve, want, rtol=0, atol=1e-15)
    assert np.all(np.diff(curve) >= 0)
    with pytest.raises(ValueError, match="k must be <= n"):
        tt.pass_at_k_curve(n, c, [11])
    with pytest.raises(ValueError, match="no problems"):
        tt.pass_at_k_curve([], [], [1])


# ----------------------------------------------------------------------------- Beta model

def test_beta_pass_at_k_matches_monte_carlo():
    alpha, beta = 0.3, 3.0
    rng = np.random.default_rng(1)
    p = rng.beta(alpha, beta, size=400_000)
    ks = np.array([1.0, 10.0, 100.0, 1000.0])
    with jax.enable_x64(True):
        got = np.asarray(tt.beta_pass_at_k(alpha, beta, ks))
    for k, g in zip(ks, got):
        per_problem = 1 - (1 - p) ** k
        se = per_problem.std() / np.sqrt(p.size)
        assert abs(per_problem.mean() - g) < 4 * se
    assert got[0] == pytest.approx(alpha / (alpha + beta), rel=1e-12)


def test_beta_power_law_tail():
    alpha, beta = 0.3, 3.0
    with jax.enable_x64(True):
        a, b = tt.beta_power_law_tail(alpha, beta)
        k = jnp.array([1e8, 1e10, 1e12])
        neg_log = -jnp.log(tt.beta_pass_at_k(alpha, beta, k))
        ratio = np.asarray(neg_log / (a * k ** -b))
    assert float(b) == alpha
    assert float(a) == pytest.approx(math.gamma(alpha + beta) / math.gamma(beta), rel=1e-12)
    assert np.all(np.abs(ratio - 1) < 1e-2)
    assert abs(ratio[-1] - 1) < abs(ratio[0] - 1)  # converging


def test_beta_binomial_nll_matches_scipy_and_is_minimized_near_truth():
    law = tt.pass_at_k_beta
    rng = np.random.default_rng(2)
    truth = {"alpha": 0.3, "beta": 3.0}
    x = law.design(rng, 3000)
    c = law.simulate(rng, truth, x)
    with jax.enable_x64(True):
        nll = np.asarray(law.nll({k: jnp.asarray(v) for k, v in truth.items()}, {"n": jnp.asarray(x["n"])},
                                 jnp.asarray(c)))
        ref = -scipy.stats.betabinom.logpmf(c, x["n"], truth["alpha"], truth["beta"])
        np.testing.assert_allclose(nll, ref, rtol=1e-10)
        grid_a, grid_b = np.meshgrid(np.linspace(0.15, 0.6, 24), np.linspace(1.5, 6.0, 24), indexing="ij")
        total = jax.jit(jax.vmap(lambda a, b: jnp.sum(law.nll({"alpha": a, "beta": b}, {"n": jnp.asarray(x["n"])},
                                                              jnp.asarray(c)))))(grid_a.ravel(), grid_b.ravel())
    i = int(np.argmin(np.asarray(total)))
    assert abs(grid_a.ravel()[i] - 0.3) < 0.03
    assert abs(grid_b.ravel()[i] - 3.0) < 0.6


def test_fit_pass_at_k_beta_recovers_alpha_beta_and_predicts_pass_at_k():
    law = tt.pass_at_k_beta
    rng = np.random.default_rng(3)
    truth = {"alpha": 0.3, "beta": 3.0}
    x = law.design(rng, 3000)
    data = {"n": x["n"], "c": law.simulate(rng, truth, x)}
    fitted = scaling.fit(law, data)
    assert fitted.params["alpha"] == pytest.approx(0.3, rel=0.1)
    assert fitted.params["beta"] == pytest.approx(3.0, rel=0.2)
    # the fitted Beta predicts the empirical pass@k curve at k beyond n/2 too
    ks = np.array([1, 10, 50])
    empirical = tt.pass_at_k_curve(data["n"].astype(int), data["c"].astype(int), ks)
    with jax.enable_x64(True):
        predicted = np.asarray(tt.beta_pass_at_k(fitted.params["alpha"], fitted.params["beta"], ks))
    np.testing.assert_allclose(predicted, empirical, atol=0.02)


def test_fitted_pass_at_k_band_from_bootstrap_draws():
    draws = {"alpha": np.array([0.25, 0.3, 0.35] * 20), "beta": np.array([3.5, 3.0, 2.5] * 20)}
    fitted = scaling.FittedLaw(tt.pass_at_k_beta, {"alpha": 0.3, "beta": 3.0}, samples=draws)
    out = tt.fitted_pass_at_k(fitted, [1, 10, 100], level=0.9)
    with jax.enable_x64(True):
        np.testing.assert_allclose(out["pass_at_k"], np.asarray(tt.beta_pass_at_k(0.3, 3.0, np.array([1.0, 10, 100]))))
    low, high = out["interval"]
    assert np.all(low < out["pass_at_k"]) and np.all(out["pass_at_k"] < high)
    assert out["interval_method"] == "bootstrap_percentile"
    no_uncertainty = scaling.FittedLaw(tt.pass_at_k_beta, {"alpha": 0.3, "beta": 3.0})
    assert tt.fitted_pass_at_k(no_uncertainty, [5])["interval"] is None
    with pytest.raises(ValueError, match="pass_at_k_beta"):
        tt.fitted_pass_at_k(scaling.FittedLaw(tt.coverage_power_law, {"a": 1.0, "b": 0.3}), [5])


# ----------------------------------------------------------------------------- accuracy over the whole range

_SHAPES = (1e-3, 0.3, 3.0, 9.5, 10.5, 1e3, 1e5, 1e8)


def _exact_nll(a, b, n, c):
    import mpmath
    with mpmath.workdps(50):
        a, b = mpmath.mpf(a), mpmath.mpf(b)
        return float(-(mpmath.log(mpmath.binomial(n, c)) + mpmath.log(mpmath.beta(c + a, n - c + b))
                       - mpmath.log(mpmath.beta(a, b))))


def test_beta_binomial_nll_is_accurate_and_never_negative_over_the_whole_range():
    """alpha, beta in 1e-3..1e8 and every kind of count: 50-digit mpmath agrees to 1e-9 relative.

    The old gammaln sums gave -1536 for 0 of 100 solved at alpha, beta ~ 1e5 (exact: ~0)."""
    rows = np.array([(a, b, n, c) for a in _SHAPES for b in _SHAPES for n in (1, 7, 100)
                     for c in sorted({0, 1, n // 2, n - 1, n})], dtype=np.float64)
    with jax.enable_x64(True):
        got = np.asarray(tt.pass_at_k_beta.nll({"alpha": rows[:, 0], "beta": rows[:, 1]}, {"n": rows[:, 2]},
                                               rows[:, 3]))
    exact = np.array([_exact_nll(*r) for r in rows])
    np.testing.assert_allclose(got, exact, rtol=1e-9, atol=0)
    assert (got >= 0).all()
    # where scipy's betaln sums are themselves accurate (no cancellation), they agree as well
    moderate = (rows[:, 0] <= 1e3) & (rows[:, 1] <= 1e3) & (exact > 0.1)
    a, b, n, c = rows[moderate].T
    ref = -(np.log(scipy.special.comb(n, c)) + scipy.special.betaln(c + a, n - c + b) - scipy.special.betaln(a, b))
    np.testing.assert_allclose(got[moderate], ref, rtol=1e-9)
    # far past the grid: still finite and >= 0 (the old form went to -1e10 here)
    with jax.enable_x64(True):
        huge = np.asarray(tt.pass_at_k_beta.nll({"alpha": jnp.array([1e26, 1e5, 3e12]), "beta": jnp.array([1e26, 1e5, 1e20])},
                                                {"n": jnp.array([100.0, 100.0, 100.0])}, jnp.array([0.0, 1.0, 0.0])))
    assert np.isfinite(huge).all() and (huge >= 0).all()


def test_beta_pass_at_k_is_a_probability_monotone_in_k_and_exact():
    import mpmath
    ks = np.array([0.0, 1.0, 2.0, 7.5, 10.0, 100.0, 1e4, 1e8, 1e12])
    with jax.enable_x64(True):
        for a in _SHAPES:
            for b in _SHAPES:
                curve = np.asarray(tt.beta_pass_at_k(a, b, ks))
                assert ((curve >= 0) & (curve <= 1)).all() and (np.diff(curve) >= 0).all(), (a, b)
                for k, value in zip(ks[1:4], curve[1:4]):
                    with mpmath.workdps(50):
                        want = float(1 - mpmath.beta(a, b + k) / mpmath.beta(a, b))
                    assert value == pytest.approx(want, rel=1e-9, abs=1e-300), (a, b, k)


@pytest.mark.parametrize("solved", [0, 1, 2])
def test_degenerate_tables_raise_or_warn_and_stay_bounded(solved):
    """0 problems ever solved: no MLE exists (ValueError); 1 or 2: a warning naming it, a bounded
    pass@k in [0, 1], monotone in k, inside its band (from the fit's own profile/curvature)."""
    n = np.full(128, 100.0)
    c = np.zeros(128)
    c[:solved] = 1.0
    if solved == 0:
        with pytest.raises(ValueError, match="no problem was ever solved"):
            scaling.fit("pass_at_k_beta", {"n": n, "c": c})
        return
    with pytest.warns(UserWarning, match=f"only {solved} of 128 problems were ever solved"):
        fitted = scaling.fit("pass_at_k_beta", {"n": n, "c": c})
    assert any(f"only {solved} of 128" in m for m in fitted.fit["degeneracy"])
    out = tt.fitted_pass_at_k(fitted, [1, 10, 100, 1e4])
    p, (low, high) = out["pass_at_k"], out["interval"]
    assert ((p >= 0) & (p <= 1)).all() and (np.diff(p) >= 0).all()
    assert ((low <= p) & (p <= high) & (low >= 0) & (high <= 1)).all()
    assert out["interval_method"] in ("profile_t", "normal_internal_hessian")
    # pass@1 is the pooled success rate: solved / 12,800 samples
    assert p[0] == pytest.approx(solved / 12800, rel=0.05)


@pytest.fixture(scope="module")
def zero_inflated_fit():
    law = scaling.laws.get("pass_at_k_zero_inflated_beta")
    truth = {"pi": 0.3, "alpha": 0.5, "beta": 3.0}
    data = scaling.fitting.simulate(law, 300, params=truth, seed=4)
    return truth, data, scaling.fit(law, data)


def test_zero_inflated_beta_recovers_known_parameters(zero_inflated_fit):
    truth, data, fitted = zero_inflated_fit
    for name, value in truth.items():
        lo, hi = fitted.interval(name)      # profile-likelihood interval (a maximum-likelihood fit)
        assert lo < value < hi, (name, lo, value, hi)
    assert fitted.params["pi"] == pytest.approx(0.3, abs=0.08)
    assert fitted.params["alpha"] == pytest.approx(0.5, rel=0.3)
    # pass@k = (1 - pi)(1 - B(alpha, beta + k)/B(alpha, beta)), against the empirical estimator
    ks = np.array([1, 10, 50])
    out = tt.fitted_pass_at_k(fitted, ks)
    empirical = tt.pass_at_k_curve(data["n"].astype(int), data["c"].astype(int), ks)
    np.testing.assert_allclose(out["pass_at_k"], empirical, atol=0.03)
    with jax.enable_x64(True):
        plain = np.asarray(tt.beta_pass_at_k(fitted.params["alpha"], fitted.params["beta"], ks.astype(float)))
    np.testing.assert_allclose(out["pass_at_k"], (1 - fitted.params["pi"]) * plain, rtol=1e-12)


def test_zero_inflated_nll_is_the_mixture_likelihood():
    law = scaling.laws.get("pass_at_k_zero_inflated_beta")
    n, c = np.array([20.0, 20.0, 5.0]), np.array([0.0, 3.0, 5.0])
    with jax.enable_x64(True):
        got = np.asarray(law.nll({"pi": 0.2, "alpha": 0.7, "beta": 2.0}, {"n": jnp.asarray(n)}, jnp.asarray(c)))
    pmf = scipy.stats.betabinom.pmf(c, n, 0.7, 2.0)
    want = -np.log(0.2 * (c == 0) + 0.8 * pmf)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_fitted_pass_at_k_band_comes_from_what_the_fit_carries(zero_inflated_fit):
    """A maximum-likelihood fit without a bootstrap still gets a band (profile-t draws), and says so."""
    _, _, fitted = zero_inflated_fit
    assert fitted.samples is None and fitted.covariance is not None and fitted.profile is not None
    out = tt.fitted_pass_at_k(fitted, [1, 10, 100])
    assert out["interval_method"] == "profile_t"
    low, high = out["interval"]
    assert np.all(low < out["pass_at_k"]) and np.all(out["pass_at_k"] < high) and np.all(high - low < 0.2)
    # the file keeps what the band needs
    back = scaling.FittedLaw.from_dict(fitted.to_dict())
    again = tt.fitted_pass_at_k(back, [1, 10, 100])
    np.testing.assert_allclose(again["interval"][0], low, rtol=1e-12)


# ----------------------------------------------------------------------------- coverage power law

def test_coverage_power_law_value_and_recovery():
    law = tt.coverage_power_law
    with jax.enable_x64(True):
        got = np.asarray(law({"a": 2.0, "b": 0.3}, k=np.array([1.0, 1e4])))
    np.testing.assert_allclose(got, [math.exp(-2.0), math.exp(-2.0 * 1e4 ** -0.3)], rtol=1e-12)
    rng = np.random.default_rng(4)
    x = law.design(rng, 30)
    data = {"k": x["k"], "coverage": law.simulate(rng, law.reference, x)}
    fitted = scaling.fit(law, data, objective="mse_log")  # same compiled solver as the next test
    assert fitted.params["a"] == pytest.approx(2.0, rel=0.1)
    assert fitted.params["b"] == pytest.approx(0.3, rel=0.1)


def test_coverage_law_fitted_to_beta_curve_finds_the_beta_exponent():
    """Schaeffer et al.: a Beta(α, β) difficulty distribution gives -log pass@k ~ k^-α at large k."""
    alpha, beta = 0.4, 2.0
    ks = np.logspace(4, 8, 30)  # 30 points, mse_log: reuses the previous test's compiled solver
    with jax.enable_x64(True):
        curve = np.asarray(tt.beta_pass_at_k(alpha, beta, ks))
    fitted = scaling.fit(tt.coverage_power_law, {"k": ks, "coverage": curve}, objective="mse_log")
    assert fitted.params["b"] == pytest.approx(alpha, rel=0.02)
    a_tail, _ = tt.beta_power_law_tail(alpha, beta)
    assert fitted.params["a"] == pytest.approx(float(a_tail), rel=0.05)


# ----------------------------------------------------------------------------- imperfect verifiers

def _simulate_resampling(rng, p_correct, fpr, tpr, k, problems):
    """Draw up to k candidates per problem; return the fraction whose first accepted one is correct."""
    correct = rng.random((problems, k)) < p_correct
    accept_prob = np.where(correct, tpr, fpr)
    accepted = rng.random((problems, k)) < accept_prob
    first = np.argmax(accepted, axis=1)
    any_accepted = accepted.any(axis=1)
    return np.mean(any_accepted & correct[np.arange(problems), first])


def test_resampling_accuracy_matches_simulation_and_saturates_below_one():
    rng = np.random.default_rng(5)
    for p, fpr, tpr, k in [(0.13, 0.25, 1.0, 1), (0.13, 0.25, 1.0, 8), (0.5, 0.1, 0.9, 20), (0.05, 0.0, 1.0, 30)]:
        with jax.enable_x64(True):
            want = float(tt.resampling_accuracy(p, fpr, k, tpr))
        got = _simulate_resampling(rng, p, fpr, tpr, k, 200_000)
        assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / 200_000) + 1e-12
    with jax.enable_x64(True):
        assert float(tt.resampling_accuracy(0.13, 0.25, 1)) == pytest.approx(0.13, rel=1e-12)
        ceiling = float(tt.verifier_accuracy_ceiling(0.13, 0.25))
        assert ceiling == pytest.approx(0.13 / (0.13 + 0.25 * 0.87), rel=1e-12)
        big_k = np.asarray(tt.resampling_accuracy(0.13, 0.25, np.array([10.0, 100.0, 1e4])))
        assert np.all(np.diff(big_k) >= 0) and big_k[-1] == pytest.approx(ceiling, rel=1e-12)
        assert float(tt.verifier_accuracy_ceiling(0.13, 0.0)) == 1.0  # a perfect verifier has no ceiling
        assert float(tt.resampling_accuracy(0.0, 0.0, 5)) == 0.0  # nothing is ever accepted


def test_verifier_ceiling_law_matches_function_and_recovers_parameters():
    law = tt.verifier_ceiling
    ks = np.array([1.0, 3.0, 10.0, 50.0])
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(law({"p_correct": 0.13, "fpr": 0.25}, k=ks)),
                                   np.asarray(tt.resampling_accuracy(0.13, 0.25, ks)), rtol=1e-12)
    rng = np.random.default_rng(6)
    x = law.design(rng, 60)
    data = {"k": x["k"], "accuracy": law.simulate(rng, law.reference, x)}
    fitted = scaling.fit(law, data)
    assert fitted.params["p_correct"] == pytest.approx(0.13, rel=0.15)
    assert fitted.params["fpr"] == pytest.approx(0.25, rel=0.15)


def test_test_time_laws_are_registered_with_valid_references_and_designs():
    rng = np.random.default_rng(7)
    for name in ("coverage_power_law", "pass_at_k_beta", "verifier_ceiling"):
        law = scaling.laws.get(name)
        assert law.citation and law.formula
        assert all(p.contains(law.reference[p.name]) for p in law.params)
        x = law.design(rng, 50)
        assert set(x) == set(law.covariates) and all(np.all(v > 0) for v in x.values())
        y = law.simulate(rng, law.reference, x)
        assert y.shape == (50,) and np.all(np.isfinite(y))


def test_coverage_compute_law_recovers_its_parameters_across_models():
    """Coverage curves of 6 models (N, D) at k = 1..512, simulated from the law: the fit returns
    the parameters that made them."""
    law = scaling.laws.get("coverage_compute_law")
    truth = {"A": 30.0, "a_N": 0.1, "a_D": 0.15, "b": 0.3}
    n, d = np.meshgrid([3e4, 1e5, 3e5], [1e6, 1e7])
    ks = 2.0 ** np.arange(10)
    grid = {"N": np.repeat(n.ravel(), ks.size), "D": np.repeat(d.ravel(), ks.size), "k": np.tile(ks, n.size)}
    with jax.enable_x64(True):
        coverage = np.asarray(law.fn({k: jnp.float64(v) for k, v in truth.items()},
                                     {k: jnp.asarray(v) for k, v in grid.items()}))
    assert ((coverage > 0.01) & (coverage < 0.99)).mean() > 0.5
    fitted = scaling.fit(law, pd.DataFrame({**grid, "coverage": coverage}))
    for name, value in truth.items():
        assert fitted.params[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
