"""Profile-likelihood intervals: frozen-parameter solves, agreement with a brute-force profile, files."""

import json
import math
import statistics

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar
from scipy.special import gammaln

import scaling
from scaling import fitting, laws, profile

BETA = laws.get("pass_at_k_beta")
POWER = laws.get("power_law")


@pytest.fixture(scope="module")
def beta_fit():
    data = fitting.simulate(BETA, 40, seed=3)
    return data, scaling.fit(BETA, data, bootstrap=200, seed=1)


def brute_force_interval(data, estimate, name, level=0.95):
    """The profile interval by scipy: 1-D bounded minimization over the other log-shape, Brent roots."""
    n, c = data["n"], data["c"]

    def nll(log_a, log_b):
        a, b = np.exp(log_a), np.exp(log_b)
        return -np.sum(gammaln(c + a) + gammaln(n - c + b) - gammaln(n + a + b) - gammaln(a) - gammaln(b)
                       + gammaln(a + b))

    z_hat = np.log([estimate["alpha"], estimate["beta"]])
    f_hat = nll(*z_hat)
    j = ["alpha", "beta"].index(name)
    threshold = statistics.NormalDist().inv_cdf(0.5 + level / 2) ** 2   # the chi-square(1) quantile

    def excess(v):
        other = minimize_scalar(lambda u: nll(*((v, u) if j == 0 else (u, v))),
                                bounds=(z_hat[1 - j] - 6, z_hat[1 - j] + 6), method="bounded",
                                options=dict(xatol=1e-10))
        return 2 * (other.fun - f_hat) - threshold

    return (math.exp(brentq(excess, z_hat[j] - 4, z_hat[j])), math.exp(brentq(excess, z_hat[j], z_hat[j] + 4)))


def test_profile_interval_matches_a_brute_force_profile(beta_fit):
    data, fitted = beta_fit
    assert fitted.profile is not None and set(fitted.profile) == {"alpha", "beta"}
    for name in ("alpha", "beta"):
        for level in (0.8, 0.95):
            ours = fitted.interval(name, level, method="profile")
            np.testing.assert_allclose(ours, brute_force_interval(data, fitted.params, name, level), rtol=2e-3)
        # the default for a maximum-likelihood fit is the profile interval
        assert fitted.interval(name) == fitted.interval(name, method="profile")
        lo, hi = fitted.interval(name, 0.95)
        assert lo < fitted.params[name] < hi
        # the bootstrap intervals are still there on request, and differ
        assert fitted.interval(name, method="bca") != fitted.interval(name)


def test_signed_root_is_zero_at_the_estimate_and_increasing(beta_fit):
    _, fitted = beta_fit
    for name, curve in fitted.profile.items():
        values, root = np.array(curve["values"]), np.array(curve["signed_root"])
        assert len(values) == 2 * len(profile.OFFSETS) + 1
        assert root[np.argmin(np.abs(values - fitted.params[name]))] == 0.0
        assert np.all(np.diff(root) > 0), name       # a single-optimum likelihood: r(v) is monotone


def test_frozen_parameters_stay_put_and_the_rest_is_refitted():
    data = fitting.simulate(POWER, 60, noise=0.02, seed=5)
    x, y = {"x": data["x"]}, np.log(data[POWER.target])
    z_hat = POWER.internal(scaling.fit(POWER, data, objective="mse_log").params)
    held = z_hat.copy()
    held[2] += 0.05                                    # alpha held off its optimum
    frozen = np.array([[False, False, True]])
    state = fitting.run_solver(POWER, "mse_log", 1.0, held[None], np.ones((1, 60)), x, y, frozen=frozen)
    assert state["z"][0, 2] == held[2] and state["converged"][0]
    loss = fitting.point_losses(POWER, "mse_log")

    def objective(free):
        import jax
        import jax.numpy as jnp
        with jax.enable_x64(True):
            z = jnp.asarray([free[0], free[1], held[2]])
            return float(jnp.sum(loss(z, {"x": jnp.asarray(data["x"])}, jnp.asarray(y), 1.0)))

    from scipy.optimize import minimize
    ref = minimize(objective, state["z"][0, :2] + 0.1, method="Nelder-Mead",
                   options=dict(xatol=1e-10, fatol=1e-14, maxiter=20000))
    assert state["f"][0] <= ref.fun * (1 + 1e-9)
    np.testing.assert_allclose(state["z"][0, :2], ref.x, atol=1e-4)
    # a free start reaches the unconstrained optimum, lower than the constrained one
    free = fitting.run_solver(POWER, "mse_log", 1.0, held[None], np.ones((1, 60)), x, y)
    assert free["f"][0] < state["f"][0]


def test_only_maximum_likelihood_fits_have_a_profile():
    fitted = scaling.fit(POWER, fitting.simulate(POWER, 40, noise=0.02, seed=6), bootstrap=50)
    assert fitted.profile is None
    with pytest.raises(ValueError, match="only maximum-likelihood fits"):
        fitted.interval("alpha", method="profile")
    with pytest.raises(ValueError, match="unknown interval method"):
        fitted.interval("alpha", method="likelihood")


def test_a_profile_that_never_reaches_the_threshold_is_open():
    curve = {"values": [0.5, 1.0, 2.0], "signed_root": [-3.0, 0.0, 0.5]}
    f = scaling.FittedLaw(BETA, {"alpha": 1.0, "beta": 2.0}, profile={"alpha": curve})
    lo, hi = f.interval("alpha", 0.95)
    assert hi == math.inf
    # the lower end: r crosses -1.96 between 0.5 and 1.0, linearly in log(alpha)
    z = statistics.NormalDist().inv_cdf(0.975)
    assert lo == pytest.approx(math.exp(math.log(0.5) * z / 3.0), rel=1e-12)
    with pytest.raises(ValueError, match="no interval"):
        f.interval("beta")


def test_profile_survives_the_file_and_bad_profiles_are_rejected(beta_fit, tmp_path):
    _, fitted = beta_fit
    path = tmp_path / "beta.json"
    fitted.save(path)
    back = scaling.load(path)
    assert back.profile == fitted.profile
    for name in fitted.params:
        assert back.interval(name) == fitted.interval(name)
    d = json.loads(path.read_text())
    assert d["schema_version"] == 4
    old = dict(d, schema_version=2)
    with pytest.raises(ValueError, match="profile is not a field of schema_version 2"):
        scaling.FittedLaw.from_dict(old)
    bad_cases = [
        ({"gamma": d["profile"]["alpha"]}, "profile must map parameters"),
        ({"alpha": {"values": [1.0, 2.0]}}, "must be"),
        ({"alpha": {"values": [1.0, 2.0], "signed_root": [0.0]}}, "one length"),
        ({"alpha": {"values": [2.0, 1.0], "signed_root": [0.0, 1.0]}}, "sorted ascending"),
        ({"alpha": {"values": [1.0, float("nan")], "signed_root": [0.0, 1.0]}}, "non-finite"),
        ({"alpha": {"values": ["a", "b"], "signed_root": [0.0, 1.0]}}, "lists of numbers"),
    ]
    for bad, match in bad_cases:
        with pytest.raises(ValueError, match=match):
            scaling.FittedLaw.from_dict(dict(d, profile=bad))
