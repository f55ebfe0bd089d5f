"""scaling.fit: parameter recovery, Epoch's refit of the real Chinchilla points, determinism,
weights, every bad input, objective choices, failed starts, compile reuse, bootstrap coverage."""

from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize as scipy_minimize

import scaling
from scaling import fitting, laws
from scaling.law import Law, Param

CHINCHILLA = laws.get("chinchilla")
POWER = laws.get("power_law")

# Besiroglu et al. 2024 (Epoch AI), "Chinchilla Scaling: A replication attempt", Table 1: estimate
# and standard error of their refit of 245 points extracted from Hoffmann et al. (2022) Fig. 4
# (their notebook's `baseline_fitted_params` = log A 6.17796, log B 7.64273, log E 0.59711,
# alpha 0.34781, beta 0.36585). Our file holds 234 of those points.
EPOCH = {"E": (1.8172, 0.026), "A": (482.01, 124.5), "B": (2085.43, 1293.3),
         "alpha": (0.3478, 0.015), "beta": (0.3658, 0.021)}


def chinchilla_points() -> pd.DataFrame:
    with resources.files("scaling").joinpath("data/chinchilla_points.csv").open() as fh:
        return pd.read_csv(fh)


def natural_starts(law, z) -> dict:
    with jax.enable_x64(True):
        return {k: np.asarray(v) for k, v in law.natural(jnp.asarray(z)).items()}


EPOCH_SUBGRID = natural_starts(CHINCHILLA, CHINCHILLA.default_grid()[::18])   # 250 of the 4,500 starts


def test_real_chinchilla_points_reproduce_epochs_refit():
    df = chinchilla_points()
    fitted = scaling.fit("chinchilla", df, starts=EPOCH_SUBGRID)
    assert fitted.fit["objective"] == "huber_log" and fitted.fit["delta"] == 1e-3
    for name, (value, se) in EPOCH.items():
        assert abs(fitted.params[name] - value) < 2 * se, (name, fitted.params[name], value)
    assert fitted.fit["n_converged"] == 250
    assert fitted.fit["n_starts_at_best"] > 200
    assert fitted.data["n_points"] == 234 and fitted.data["target"] == "loss"
    assert fitted.data["ranges"]["N"] == [df.N.min(), df.N.max()]

    # No lower objective within reach: tight L-BFGS-B from our optimum cannot improve it.
    loss = fitting.point_losses(CHINCHILLA, "huber_log")
    with jax.enable_x64(True):
        x = {c: jnp.asarray(df[c].to_numpy(float)) for c in ("N", "D")}
        logy = jnp.asarray(np.log(df.loss.to_numpy()))
        vg = jax.jit(jax.value_and_grad(lambda z: jnp.sum(loss(z, x, logy, 1e-3))))
        z_best = CHINCHILLA.internal(fitted.params)
        f_best, _ = vg(jnp.asarray(z_best))
        res = scipy_minimize(lambda z: tuple(np.asarray(v, float) for v in vg(jnp.asarray(z))), z_best, jac=True,
                             method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})
    assert np.isclose(float(f_best), fitted.fit["objective_value"], rtol=1e-12)
    assert res.fun >= fitted.fit["objective_value"] * (1 - 1e-9)


def test_recovers_chinchilla_parameters_from_exact_data():
    data = fitting.simulate(CHINCHILLA, 240, noise=0.0, seed=1)
    fitted = scaling.fit(CHINCHILLA, data, starts=EPOCH_SUBGRID)
    for name, value in CHINCHILLA.reference.items():
        assert fitted.params[name] == pytest.approx(value, rel=1e-6), name
    assert fitted.fit["objective_value"] < 1e-20


def test_bootstrap_is_deterministic_for_a_seed():
    data = fitting.simulate(CHINCHILLA, 240, noise=0.01, seed=2)
    start = {k: [v] for k, v in CHINCHILLA.reference.items()}
    a = scaling.fit(CHINCHILLA, data, starts=start, bootstrap=64, seed=3)
    b = scaling.fit(CHINCHILLA, data, starts=start, bootstrap=64, seed=3)
    c = scaling.fit(CHINCHILLA, data, starts=start, bootstrap=64, seed=4)
    for name in CHINCHILLA.param_names:
        np.testing.assert_array_equal(a.samples[name], b.samples[name])
        assert not np.array_equal(a.samples[name], c.samples[name])
        assert a.interval(name, method="percentile") == pytest.approx(
            tuple(np.percentile(a.samples[name], [2.5, 97.5])), rel=1e-12)
        assert a.standard_errors[name] == pytest.approx(np.std(a.samples[name], ddof=1))
    assert a.fit["bootstrap"]["resamples"] == 64 and a.fit["bootstrap"]["failed"] == 0
    assert len(a.samples["E"]) == 64


def test_weights_match_duplicated_and_dropped_points():
    data = pd.DataFrame(fitting.simulate(CHINCHILLA, 240, noise=0.01, seed=5))
    start = {k: [v] for k, v in CHINCHILLA.reference.items()}
    duplicated = pd.concat([data.iloc[:220], data.iloc[:20]])          # first 20 points twice
    weights = np.r_[np.full(20, 2.0), np.ones(200), np.zeros(20)]      # ... and the last 20 dropped
    by_rows = scaling.fit(CHINCHILLA, duplicated, starts=start)
    by_weights = scaling.fit(CHINCHILLA, data, starts=start, weights=weights)
    unweighted = scaling.fit(CHINCHILLA, data, starts=start)
    for name in CHINCHILLA.param_names:
        assert by_weights.params[name] == pytest.approx(by_rows.params[name], rel=1e-7), name
    assert by_weights.fit["objective_value"] == pytest.approx(by_rows.fit["objective_value"], rel=1e-9)
    assert by_weights.fit["weighted"] and not unweighted.fit["weighted"]
    assert unweighted.params["alpha"] != pytest.approx(by_weights.params["alpha"], rel=1e-7)


def _bad(**changes):
    data = {"N": np.array([1e8, 2e8, 4e8, 8e8, 1.6e9, 3.2e9]), "D": np.array([1e9, 3e9, 1e10, 3e10, 1e11, 3e11]),
            "loss": np.array([3.5, 3.2, 2.9, 2.7, 2.5, 2.4])}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize("kwargs, message", [
    (dict(data=_bad(D=None)), r"missing columns \['D'\]"),
    (dict(data=_bad(loss=np.array([3.5, np.nan, 2.9, 2.7, 2.5, 2.4]))), r"'loss' has 1 non-finite .* rows \[1\]"),
    (dict(data=_bad(N=np.array([1e8, 2e8, np.inf, 8e8, 1.6e9, 3.2e9]))), r"'N' has 1 non-finite .*rows \[2\]"),
    (dict(data=_bad(D=np.array([1e9, 3e9, 0.0, 3e10, 1e11, -1.0]))), r"'D' must be > 0 .* rows \[2, 5\]"),
    (dict(data=_bad(loss=np.array([3.5, 3.2, 2.9, 2.7, 2.5]))), r"different lengths"),
    (dict(data=_bad(N=np.array(["a"] * 6))), r"'N' is not numeric"),
    (dict(data=np.ones((6, 3))), r"DataFrame or a dict"),
    (dict(data={k: v[:4] for k, v in _bad().items()}), r"5 parameters but data has only 4 points"),
    (dict(law="chinchila"), r"unknown law 'chinchila'"),
    (dict(objective="l1"), r"unknown objective 'l1'"),
    (dict(objective="nll"), r"needs a law with an nll"),
    (dict(delta=0.0), r"delta must be a positive"),
    (dict(bootstrap=-1), r"bootstrap must be a non-negative int"),
    (dict(bootstrap=2.5), r"bootstrap must be a non-negative int"),
    (dict(weights=np.ones(5)), r"weights must have one value per point"),
    (dict(weights=np.r_[np.ones(5), -1.0]), r"weights must be >= 0, negative at rows \[5\]"),
    (dict(weights=np.r_[np.ones(5), np.nan]), r"weights have non-finite values"),
    (dict(weights=np.zeros(6)), r"weights are all zero"),
    (dict(weights="w"), r"weights column 'w' is not in data"),
    (dict(starts={"E": [1.0]}), r"starts must give exactly the parameters"),
    (dict(starts=np.ones((2, 4))), r"starts array must have shape \[starts, 5\]"),
    (dict(starts={"E": [-1.0], "A": [1.0], "B": [1.0], "alpha": [0.3], "beta": [0.3]}), r"starts for 'E' .* outside"),
    (dict(columns={"M": "N"}), r"columns maps unknown names \['M'\]"),
    (dict(flop_convention="6NDX"), r"unknown flop_convention"),
    (dict(k=-6.0), r"k \(FLOPs per parameter per token\) must be a positive"),
])
def test_bad_input_raises_value_error_naming_the_problem(kwargs, message):
    args = dict(law="chinchilla", data=_bad())
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        scaling.fit(args.pop("law"), args.pop("data"), **args)


def test_columns_and_target_map_names():
    data = fitting.simulate(CHINCHILLA, 240, noise=0.0, seed=6)
    renamed = {"params": data["N"], "tokens": data["D"], "val_loss": data["loss"]}
    start = {k: [v * 1.1] for k, v in CHINCHILLA.reference.items()}
    fitted = scaling.fit(CHINCHILLA, renamed, target="val_loss", columns={"N": "params", "D": "tokens"}, starts=start)
    assert fitted.params["alpha"] == pytest.approx(CHINCHILLA.reference["alpha"], rel=1e-6)
    assert fitted.data["target"] == "val_loss" and set(fitted.data["ranges"]) == {"N", "D"}


@pytest.mark.parametrize("objective", ["huber_log", "huber", "mse_log", "mse"])
def test_every_objective_recovers_exact_data(objective):
    data = fitting.simulate(POWER, 50, noise=0.0, seed=7)
    fitted = scaling.fit(POWER, data, objective=objective)
    assert fitted.fit["objective"] == objective
    assert fitted.fit["residual_space"] == ("log" if objective.endswith("_log") else "linear")
    for name, value in POWER.reference.items():
        assert fitted.params[name] == pytest.approx(value, rel=1e-5), (objective, name)


def test_huber_resists_an_outlier_that_pulls_least_squares():
    fits = {}
    for factor in (1.5, 3.0):                       # one corrupted point at the largest compute
        data = fitting.simulate(POWER, 50, noise=0.002, seed=8)
        data["y"][np.argmax(data["x"])] *= factor
        fits[factor] = {obj: scaling.fit(POWER, data, objective=obj) for obj in ("huber_log", "mse_log")}
    err = lambda f: abs(f.params["alpha"] / POWER.reference["alpha"] - 1)  # noqa: E731
    assert err(fits[1.5]["huber_log"]) < 0.05 < 0.5 < err(fits[1.5]["mse_log"])
    # bounded influence: how far out the outlier lies does not move the Huber fit, only least squares
    for name in POWER.param_names:
        assert fits[1.5]["huber_log"].params[name] == pytest.approx(fits[3.0]["huber_log"].params[name], rel=1e-6)
    assert err(fits[3.0]["mse_log"]) > 2 * err(fits[1.5]["mse_log"])


POISSON = Law(
    name="test_poisson_rate", params=(Param("A", "log", grid=(1.0, 100.0)), Param("b", grid=(-1.0, 0.0, 1.0))),
    covariates=("x",), target="count", fn=lambda p, x: p["A"] * x["x"] ** p["b"],
    nll=lambda p, x, y: p["A"] * x["x"] ** p["b"] - y * (jnp.log(p["A"]) + p["b"] * jnp.log(x["x"])))


def test_nll_is_the_default_objective_of_a_likelihood_law():
    """Poisson counts: the maximum-likelihood fit recovers the rate law (zeros allowed in the target)."""
    x = np.geomspace(1.0, 1e3, 200)
    counts = np.random.default_rng(9).poisson(30.0 * x ** -0.4).astype(float)
    assert (counts == 0).any()
    fitted = scaling.fit(POISSON, {"x": x, "count": counts})
    assert fitted.fit["objective"] == "nll" and fitted.fit["delta"] is None
    assert fitted.params["A"] == pytest.approx(30.0, rel=0.1) and fitted.params["b"] == pytest.approx(-0.4, abs=0.03)
    # the MLE of a Poisson GLM with log link matches total counts: sum(mu) = sum(y)
    assert fitted.predict(x=x).sum() == pytest.approx(counts.sum(), rel=1e-8)


SIGNED = Law(name="test_signed_power", params=(Param("A", grid=(1.0,)), Param("b", grid=(0.0,))),
             covariates=("x",), target="y", fn=lambda p, x: p["A"] * x["x"] ** p["b"])


def test_failed_starts_are_reported_and_do_not_poison_the_rest():
    x = np.geomspace(1.0, 100.0, 30)
    data = {"x": x, "y": 2.0 * x ** -0.5}
    fitted = scaling.fit(SIGNED, data, starts={"A": [-1.0, 1.0, -3.0, 5.0], "b": [0.0, 0.0, 1.0, -1.0]})
    assert fitted.fit["n_failed"] == 2 and fitted.fit["n_starts"] == 4
    np.testing.assert_array_equal(fitted.multistart["failed"], [True, False, True, False])
    assert fitted.params["A"] == pytest.approx(2.0, rel=1e-6) and fitted.params["b"] == pytest.approx(-0.5, rel=1e-6)
    with pytest.raises(ValueError, match="not finite at any of the 2 starts"):
        scaling.fit(SIGNED, data, starts={"A": [-1.0, -2.0], "b": [0.0, 0.0]})


def test_direct_solve_agrees_with_continuation():
    df = chinchilla_points()
    start = natural_starts(CHINCHILLA, CHINCHILLA.default_grid()[::450])
    direct = scaling.fit(CHINCHILLA, df, starts=start, continuation=False)
    homotopy = scaling.fit(CHINCHILLA, df, starts=start)
    assert direct.fit["objective_value"] == pytest.approx(homotopy.fit["objective_value"], rel=1e-9)
    for name in CHINCHILLA.param_names:
        assert direct.params[name] == pytest.approx(homotopy.params[name], rel=1e-4), name


def test_compiled_solver_is_reused_across_fits_and_the_bootstrap():
    solver = fitting.compiled_run   # jit-compiled with the law and the objective static
    scaling.fit(POWER, fitting.simulate(POWER, 50, noise=0.01, seed=10), objective="mse")
    size = solver._cache_size()
    # same padded number of points (64), a different number of starts, and a bootstrap
    scaling.fit(POWER, fitting.simulate(POWER, 53, noise=0.01, seed=11), objective="mse",
                starts={"E": [1.0, 2.0], "A": [100.0, 300.0], "alpha": [0.1, 0.2]}, bootstrap=100)
    assert fitting.padded_size(50) == fitting.padded_size(53) == 64
    assert [fitting.padded_size(n) for n in (10, 33, 64, 65, 97, 129, 200, 234)] == [64, 64, 64, 96, 128, 192, 256, 256]
    assert solver._cache_size() == size


def test_bootstrap_intervals_cover_the_truth():
    """Repeated draws: percentile intervals should contain the truth about 95% of the time.

    (Least squares on log y, the maximum likelihood for lognormal noise; `benchmarks/interval_coverage.py`
    runs the same check for every law with its default objective.)
    """
    truth, hits, draws = POWER.reference, [], 40
    start = {k: [v] for k, v in truth.items()}
    for seed in range(draws):
        data = fitting.simulate(POWER, 30, noise=0.02, seed=100 + seed)
        fitted = scaling.fit(POWER, data, objective="mse_log", starts=start, bootstrap=100, seed=seed)
        hits.append([fitted.interval(k)[0] <= v <= fitted.interval(k)[1] for k, v in truth.items()])
    coverage = np.mean(hits, axis=0)
    assert np.all(coverage >= 0.8), coverage
    assert 0.85 <= np.mean(hits) <= 0.99, np.mean(hits)


def test_trust_region_step_satisfies_the_optimality_conditions():
    """The step minimizes the quadratic model over the ball (Moré & Sorensen 1983): the interior
    Newton step when it fits, else a boundary step that no sampled point of the ball beats,
    including the hard case (gt[0] = 0 with a negative lowest eigenvalue)."""
    rng = np.random.default_rng(3)
    cases = 400
    eig = np.sort(rng.choice([-1.0, 1.0, 1.0], (cases, 5)) * 10.0 ** rng.uniform(-6, 3, (cases, 5)), axis=1)
    gt = rng.standard_normal((cases, 5)) * 10.0 ** rng.uniform(-4, 2, (cases, 1))
    gt[::4, 0] = 0.0                                             # the hard case, when eig[0] < 0
    radius = 10.0 ** rng.uniform(-3, 1, cases)
    with jax.enable_x64(True):
        steps, predicted = (np.asarray(v) for v in jax.jit(jax.vmap(fitting.trust_region_step))(
            jnp.asarray(eig), jnp.asarray(gt), jnp.asarray(radius)))
    hard = 0
    for case in range(cases):
        e, g, r, s, p = eig[case], gt[case], radius[case], steps[case], predicted[case]
        norm = np.linalg.norm(s)
        assert norm <= r * (1 + 1e-3), (case, norm, r)
        assert p == pytest.approx(-(g @ s + 0.5 * np.sum(e * s * s)), rel=1e-12)
        if e[0] > 0 and np.linalg.norm(g / e) <= r:
            np.testing.assert_allclose(s, -g / e, rtol=1e-12)    # the interior Newton step
            continue
        assert norm == pytest.approx(r, rel=1e-3), case            # on the boundary
        hard += g[0] == 0 and e[0] < 0
        # no point of the ball does better than s (sampled along random directions)
        d = rng.standard_normal((2000, 5))
        d *= r * rng.uniform(0, 1, (2000, 1)) ** 0.2 / np.linalg.norm(d, axis=1, keepdims=True)
        decrease = -(d @ g + 0.5 * (d * d) @ e)
        assert decrease.max() <= p * (1 + 1e-6) + 1e-15, case
    assert hard > 20


def test_fit_many_fits_each_dataset_on_its_own_points_and_reuses_compiled_code():
    """`fit_many` gives each (dataset, start) its own points: every dataset's optimum agrees with an
    independent weighted least-squares solve (scipy), a dataset whose offset runs away (an optimum at
    E -> 0, creeping to max_iter) leaves the others bit-for-bit as they are when fitted without it,
    and a second call with other datasets of at most 16 points compiles nothing new."""
    from scipy.optimize import least_squares

    from scaling.fitting.batched import natural_numpy

    rng = np.random.default_rng(3)
    x = np.geomspace(1e17, 1e21, 12)
    truth = {"E": 1.7, "A": 30.0, "alpha": 0.08}
    clean = truth["E"] + truth["A"] * x ** -truth["alpha"]
    sizes = [5, 7, 9, 12]
    y = np.stack([clean * np.exp(0.002 * rng.standard_normal(12)) for _ in sizes])
    w = np.zeros((len(sizes), 12))
    for r, m in enumerate(sizes):   # m of the 12 points, with bootstrap-like count weights
        w[r, np.sort(rng.choice(12, m, replace=False))] = rng.integers(1, 4, m)
    creep = (x[::3] / 1e17) ** -0.05          # a pure power law: E -> 0 is best, the fit creeps
    y_all = np.vstack([y, np.r_[creep, np.ones(8)]])
    w_all = np.vstack([w, np.r_[np.ones(4), np.zeros(8)]])
    x_all = np.vstack([np.tile(x, (4, 1)), np.r_[x[::3], np.ones(8)]])
    z0 = np.tile(POWER.internal(truth), (5, 1))
    z, f, ok, _ = fitting.fit_many(POWER, "mse_log", {"x": x_all}, y_all, w_all, z0)
    assert ok.all()
    params = natural_numpy(POWER, z)
    for r in range(len(sizes)):
        used = w[r] > 0

        def residuals(p):
            return np.sqrt(w[r, used]) * (np.log(y[r, used]) - np.log(p[0] + p[1] * x[used] ** -p[2]))

        ref = least_squares(residuals, [truth["E"], truth["A"], truth["alpha"]], xtol=1e-15, ftol=1e-15, gtol=1e-15)
        assert f[r] == pytest.approx(np.sum(ref.fun ** 2), rel=1e-6, abs=1e-14)
        for j, name in enumerate(POWER.param_names):
            assert params[name][r] == pytest.approx(ref.x[j], rel=1e-4), (r, name)
    assert params["E"][4] < 1e-2                      # the runaway dataset went towards E = 0
    size = fitting.compiled_run._cache_size()
    alone, f_alone, _, _ = fitting.fit_many(POWER, "mse_log", {"x": x_all[:4]}, y, w, z0[:4])
    np.testing.assert_array_equal(alone, z[:4])
    np.testing.assert_array_equal(f_alone, f[:4])
    assert fitting.compiled_run._cache_size() == size
