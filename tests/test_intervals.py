"""Bootstrap intervals (`scaling.intervals`, `FittedLaw.interval(method=...)`): BCa against scipy and
against the formula by hand, the jackknife acceleration of a fit, the file round trip, and errors."""

import json
import statistics

import numpy as np
import pytest
import scipy.stats

import scaling
from scaling import intervals
from scaling.fitted import FittedLaw, load
from scaling.law import Law, Param

# a law whose least-squares fit is the (weighted) mean of y: refits of resamples are resample means
MEAN = Law(name="mean_of_y", target="y", covariates=("x",), params=(Param("m", grid=(1.0,)),),
           fn=lambda p, x: p["m"] + 0.0 * x["x"])
PHI = statistics.NormalDist()


def sample(n=25, seed=0):
    return np.random.default_rng(seed).lognormal(0.0, 0.8, n)     # skewed: BCa differs from percentile


def bca_by_hand(draws, estimate, jack, level):
    """Efron & Tibshirani 1993, Eqs. 14.10, 14.14, 14.15, written out directly."""
    z0 = PHI.inv_cdf(np.mean(draws < estimate))
    d = np.mean(jack) - jack
    a = np.sum(d ** 3) / (6 * np.sum(d ** 2) ** 1.5)
    ends = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        zq = PHI.inv_cdf(q)
        ends.append(np.percentile(draws, 100 * PHI.cdf(z0 + (z0 + zq) / (1 - a * (z0 + zq)))))
    return tuple(ends)


def test_bca_matches_scipy_on_the_mean():
    x = sample()
    res = scipy.stats.bootstrap((x,), np.mean, method="BCa", n_resamples=2000, confidence_level=0.9,
                                rng=np.random.default_rng(1))
    jack = (x.sum() - x) / (len(x) - 1)                             # leave-one-out means
    lo, hi = intervals.bca(res.bootstrap_distribution, x.mean(), intervals.acceleration(jack), 0.9)
    assert (lo, hi) == pytest.approx((res.confidence_interval.low, res.confidence_interval.high), rel=1e-12)
    p_lo, p_hi = intervals.percentile(res.bootstrap_distribution, 0.9)
    assert lo > p_lo and hi > p_hi                                 # right skew moves BCa up


def test_bca_matches_the_formula_and_bc_is_bca_without_acceleration():
    rng = np.random.default_rng(2)
    draws, jack = rng.gamma(3.0, 1.0, 500), rng.gamma(2.0, 1.0, 30)
    a = intervals.acceleration(jack)
    assert a < 0                              # d = mean(jack) - jack is left-skewed here
    assert intervals.bca(draws, 2.5, a, 0.95) == pytest.approx(bca_by_hand(draws, 2.5, jack, 0.95), rel=1e-12)
    z0 = PHI.inv_cdf(np.mean(draws < 2.5))
    bc = np.percentile(draws, [100 * PHI.cdf(2 * z0 + PHI.inv_cdf(q)) for q in (0.025, 0.975)])
    assert intervals.bca(draws, 2.5, 0.0, 0.95) == pytest.approx(tuple(bc), rel=1e-12)
    assert intervals.acceleration(np.ones(10)) == 0.0


def test_bca_stays_finite_when_every_draw_is_on_one_side():
    draws = np.linspace(1.0, 2.0, 100)
    lo, hi = intervals.bca(draws, 0.5, 0.1, 0.95)
    assert 1.0 <= lo <= hi <= 2.0


@pytest.fixture(scope="module")
def fitted_mean():
    y = sample(30, seed=3)
    data = {"x": np.arange(1.0, 31.0), "y": y}
    return scaling.fit(MEAN, data, objective="mse", bootstrap=400, seed=4), data


def test_fit_stores_the_jackknife_acceleration(fitted_mean):
    fitted, data = fitted_mean
    assert fitted.fit["bootstrap"]["interval"] == "bca" and fitted.fit["bootstrap"]["jackknife_refits"] == 30
    again = FittedLaw.from_dict({**fitted.to_dict(), "acceleration": None}, law=MEAN)
    assert again.acceleration is None and again.interval("m") == again.interval("m", method="percentile")
    assert intervals.add_acceleration(again, data).acceleration == pytest.approx(fitted.acceleration, rel=1e-9)
    assert fitted.interval("m") == fitted.interval("m", method="bca") != fitted.interval("m", method="percentile")


def test_fit_acceleration_is_the_jackknife_of_the_mean(fitted_mean):
    fitted, data = fitted_mean
    y = data["y"]
    np.testing.assert_allclose(fitted.samples["m"].mean(), y.mean(), rtol=0.02)
    jack = (y.sum() - y) / (len(y) - 1)
    assert fitted.acceleration["m"] == pytest.approx(intervals.acceleration(jack), rel=1e-6)
    expected = bca_by_hand(fitted.samples["m"], fitted.params["m"], jack, 0.95)
    assert fitted.interval("m", 0.95, method="bca") == pytest.approx(expected, rel=1e-6)
    assert fitted.interval("m", 0.95, method="percentile") == pytest.approx(
        tuple(np.percentile(fitted.samples["m"], [2.5, 97.5])), rel=1e-12)


def test_add_acceleration_checks_the_data(fitted_mean):
    fitted, data = fitted_mean
    with pytest.raises(ValueError, match="sha256 mismatch"):
        intervals.add_acceleration(fitted, {**data, "y": data["y"] * 1.01})
    with pytest.raises(ValueError, match="made by scaling.fit"):
        intervals.add_acceleration(FittedLaw(MEAN, {"m": 1.0}), data)


def test_bca_round_trips_through_the_file(tmp_path, fitted_mean):
    fitted, _ = fitted_mean
    path = tmp_path / "mean.json"
    fitted.save(path)
    back = load(path, law=MEAN)
    assert back.acceleration == fitted.acceleration
    for method in intervals.METHODS:
        assert back.interval("m", 0.9, method=method) == fitted.interval("m", 0.9, method=method)
    on_disk = json.loads(path.read_text())
    assert on_disk["schema_version"] == 4 and on_disk["acceleration"] == {"m": fitted.acceleration["m"]}
    assert on_disk["intervals"]["m"] == list(fitted.interval("m"))


def test_version_1_files_load_without_bca(tmp_path, fitted_mean):
    fitted, _ = fitted_mean
    d = fitted.to_dict()
    d["schema_version"] = 1
    del d["acceleration"]
    old = FittedLaw.from_dict(d, law=MEAN)
    assert old.acceleration is None
    assert old.interval("m", method="percentile") == fitted.interval("m", method="percentile")
    assert old.interval("m", method="bc") == fitted.interval("m", method="bc")
    assert old.interval("m") == fitted.interval("m", method="percentile")
    with pytest.raises(ValueError, match="no BCa interval for 'm'.*no jackknife acceleration"):
        old.interval("m", method="bca")
    with pytest.raises(ValueError, match="acceleration is not a field of schema_version 1"):
        FittedLaw.from_dict({**d, "acceleration": {"m": 0.01}}, law=MEAN)


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "studentized"}, r"unknown interval method 'studentized'; choose one of"),
    ({"method": "bca"}, r"no bca interval for 'm': it needs bootstrap samples"),
])
def test_interval_method_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FittedLaw(MEAN, {"m": 1.0}, standard_errors={"m": 0.1}).interval("m", **kwargs)


@pytest.mark.parametrize("acceleration, message", [
    ({"q": 0.1}, r"acceleration must map a subset of \['m'\]"),
    ({"m": "0.1"}, r"acceleration\['m'\] must be a finite number"),
    ([0.1], r"acceleration must map a subset"),
])
def test_bad_acceleration_is_rejected(acceleration, message):
    with pytest.raises(ValueError, match=message):
        FittedLaw(MEAN, {"m": 1.0}, samples={"m": np.ones(3)}, acceleration=acceleration)


def test_grouped_jackknife_past_the_group_limit():
    w = np.ones(1000)
    w[::7] = 0.0                                    # zero-weight points are never "left out"
    rows = intervals.jackknife_weights(w, max_groups=64)
    assert rows.shape == (64, 1000)
    left_out = (rows == 0) & (w > 0)
    np.testing.assert_array_equal(left_out.sum(axis=0)[w > 0], 1)     # each point left out exactly once
    assert set(left_out.sum(axis=1)) <= {13, 14}                       # groups of nearly equal size
    np.testing.assert_array_equal(intervals.jackknife_weights(w[:50], max_groups=64).shape, (int((w[:50] > 0).sum()), 50))
    # the acceleration of a skewed statistic barely moves when points are left out in groups
    y = sample(2000, seed=5)
    data = {"x": np.arange(1.0, 2001.0), "y": y}
    fitted = scaling.fit(MEAN, data, objective="mse", bootstrap=50, seed=1)
    assert fitted.fit["bootstrap"]["jackknife_refits"] == intervals.JACKKNIFE_GROUPS
    exact = intervals.acceleration((y.sum() - y) / (len(y) - 1))
    assert fitted.acceleration["m"] == pytest.approx(exact, rel=0.15)   # 0.0111 vs 0.0106


def test_acceleration_is_scale_free_and_survives_values_near_the_float_limit():
    """The jackknife acceleration of refits that ran to ~1e300 (a parameter the data do not bound)
    is that of the same values scaled to ~1, not an OverflowError; a non-finite value gives NaN."""
    import math

    from scaling.fitting.intervals import acceleration

    values = np.array([1.0, 2.0, 4.0, 7.0, 7.5])
    d = values.mean() - values
    by_hand = np.sum(d ** 3) / (6 * np.sum(d ** 2) ** 1.5)
    assert acceleration(values) == pytest.approx(by_hand, rel=1e-12)
    assert acceleration(values * 1e300) == pytest.approx(by_hand, rel=1e-12)
    assert acceleration(values * 1e-300) == pytest.approx(by_hand, rel=1e-12)
    assert acceleration([3.0, 3.0]) == 0.0 and acceleration([]) == 0.0
    assert math.isnan(acceleration([1.0, math.inf]))
