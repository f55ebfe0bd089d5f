"""FittedLaw: intervals, prediction and its range warning, compute-optimal allocation (closed form
against numeric), the budget for a target loss, and the validated JSON file."""

import copy
import dataclasses
import json
import os
import warnings

import numpy as np
import pytest

import scaling
from scaling import fitting, laws
from scaling.fitted import FLOP_CONVENTIONS, FittedLaw, flop_k, load

CHINCHILLA = laws.get("chinchilla")
NUMERIC_CHINCHILLA = dataclasses.replace(CHINCHILLA, name="chinchilla_numeric")   # same law, no closed form
POWER = laws.get("power_law")
EPOCH = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
EPOCH_SE = {"E": 0.026, "A": 124.5, "B": 1293.3, "alpha": 0.015, "beta": 0.021}


def draws(n=100, seed=0):
    rng = np.random.default_rng(seed)
    return {k: v * np.exp(0.02 * rng.standard_normal(n)) for k, v in EPOCH.items()}


@pytest.fixture(scope="module")
def fitted_power():
    data = fitting.simulate(POWER, 50, noise=0.01, seed=0)
    return scaling.fit(POWER, data, objective="mse", bootstrap=50, seed=1, provenance={"notes": "test"})


# ---------------------------------------------------------------- intervals

def test_interval_from_samples_is_the_percentile_interval():
    samples = draws()
    fl = FittedLaw("chinchilla", EPOCH, samples=samples)
    lo, hi = fl.interval("alpha", 0.9)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(samples["alpha"], [5, 95])), rel=1e-12)


def test_interval_from_standard_errors_is_normal():
    fl = FittedLaw("chinchilla", EPOCH, standard_errors=EPOCH_SE)
    assert fl.interval("alpha") == pytest.approx((0.3478 - 1.959964 * 0.015, 0.3478 + 1.959964 * 0.015), rel=1e-6)


@pytest.mark.parametrize("args, message", [
    (("E",), "neither bootstrap samples nor a standard error"),
    (("gamma",), "unknown parameter 'gamma'"),
])
def test_interval_without_uncertainty_or_unknown_name_raises(args, message):
    with pytest.raises(ValueError, match=message):
        FittedLaw("chinchilla", EPOCH).interval(*args)


def test_interval_rejects_bad_level():
    with pytest.raises(ValueError, match="level must be in"):
        FittedLaw("chinchilla", EPOCH, samples=draws()).interval("E", 1.5)


# ---------------------------------------------------------------- predict

def test_predict_broadcasts_numpy_and_reads_dataframes():
    fl = FittedLaw("chinchilla", EPOCH)
    n = np.array([1e9, 1e10])[:, None]
    d = np.array([1e10, 1e11, 1e12])[None, :]
    out = fl.predict(N=n, D=d)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3) and out.dtype == np.float64
    expected = EPOCH["E"] + EPOCH["A"] * n ** -EPOCH["alpha"] + EPOCH["B"] * d ** -EPOCH["beta"]
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    import pandas as pd
    df = pd.DataFrame({"N": [1e9, 1e10], "D": [1e10, 1e11]})
    np.testing.assert_allclose(fl.predict(df), [expected[0, 0], expected[1, 1]], rtol=1e-12)
    with pytest.raises(ValueError, match="needs covariate 'D'"):
        fl.predict(N=1e9)


def test_predict_warns_only_outside_the_fitted_range():
    fl = FittedLaw("chinchilla", EPOCH, data={"n_points": 2, "ranges": {"N": [1e8, 1e10], "D": [1e9, 1e12]}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fl.predict(N=[1e8, 1e10], D=1e11)
    with pytest.warns(UserWarning, match=r"N outside the fitted range"):
        fl.predict(N=7e10, D=1e11)


# ---------------------------------------------------------------- compute-optimal

def test_compute_optimal_closed_form_matches_numeric_minimization():
    budgets = np.array([1e20, 5.76e23, 1e26])
    closed = FittedLaw(CHINCHILLA, EPOCH, samples=draws()).compute_optimal(budgets)
    numeric = FittedLaw(NUMERIC_CHINCHILLA, EPOCH, samples=draws()).compute_optimal(budgets)
    assert closed["method"] == "closed_form" and numeric["method"] == "numeric"
    for key in ("N", "D", "loss", "tokens_per_param"):
        np.testing.assert_allclose(numeric[key], closed[key], rtol=1e-6, err_msg=key)
        for i in range(2):
            np.testing.assert_allclose(numeric[f"{key}_interval"][i], closed[f"{key}_interval"][i], rtol=1e-5)
    np.testing.assert_allclose(6.0 * closed["N"] * closed["D"], budgets, rtol=1e-12)
    # it is the minimum along the budget: moving N either way raises the loss
    fl = FittedLaw(CHINCHILLA, EPOCH)
    for factor in (0.99, 1.01):
        n = closed["N"] * factor
        assert np.all(fl.predict(N=n, D=budgets / (6 * n)) > closed["loss"])
    assert np.all(closed["N_interval"][0] < closed["N"]) and np.all(closed["N"] < closed["N_interval"][1])


def test_compute_optimal_follows_the_flop_convention():
    six = FittedLaw(CHINCHILLA, EPOCH).compute_optimal(1e24)
    eight = FittedLaw(CHINCHILLA, EPOCH, flop_convention="8ND").compute_optimal(1e24)
    custom = FittedLaw(CHINCHILLA, EPOCH, k=8.0).compute_optimal(1e24)
    assert isinstance(six["N"], float) and six["k"] == 6.0 and eight["k"] == 8.0
    assert eight["N"] * eight["D"] * 8 == pytest.approx(1e24, rel=1e-12)
    assert eight["N"] == pytest.approx(custom["N"], rel=1e-12) and custom["flop_convention"] == "custom"
    # the same model and data cost 8/6 as many FLOPs under 8ND: the optimum at C*8/6 matches
    assert FittedLaw(CHINCHILLA, EPOCH, flop_convention="8ND").compute_optimal(1e24 * 8 / 6)["N"] == \
        pytest.approx(six["N"], rel=1e-12)


def test_compute_for_loss_inverts_compute_optimal():
    budgets = np.array([1e21, 1e23, 1e25])
    for law in (CHINCHILLA, NUMERIC_CHINCHILLA):
        fl = FittedLaw(law, EPOCH, samples=draws())
        loss = fl.compute_optimal(budgets)["loss"]
        back = fl.compute_for_loss(loss)
        np.testing.assert_allclose(back["C"], budgets, rtol=1e-6)
        assert np.all(back["C_interval"][0] < budgets) and np.all(budgets < back["C_interval"][1])
        with pytest.raises(ValueError, match="not reachable"):
            fl.compute_for_loss(EPOCH["E"] - 0.01)


def test_standard_error_laws_get_intervals_from_normal_draws():
    fl = FittedLaw(CHINCHILLA, EPOCH, standard_errors=EPOCH_SE)
    out = fl.compute_optimal(1e24)
    assert out["interval_method"] == "normal_independent_se"
    assert out["N_interval"][0] < out["N"] < out["N_interval"][1]
    assert FittedLaw(CHINCHILLA, EPOCH).compute_optimal(1e24)["N_interval"] is None


def test_compute_optimal_needs_an_allocation_and_valid_budgets():
    with pytest.raises(ValueError, match="has no allocation"):
        FittedLaw(POWER, POWER.reference).compute_optimal(1e24)
    with pytest.raises(ValueError, match="must be finite and > 0"):
        FittedLaw(CHINCHILLA, EPOCH).compute_optimal([1e24, -1.0])


def test_flop_conventions():
    # one vocabulary: scaling.flops.CONVENTIONS (+ "custom" for a given k); older names still read
    assert FLOP_CONVENTIONS == scaling.flops.CONVENTIONS + ("custom",)
    assert flop_k() == (6.0, "6N") and flop_k("6N") == (6.0, "6N") and flop_k("6N_nonembed") == (6.0, "6N_nonembed")
    assert flop_k("exact", k=7.1) == (7.1, "exact") and flop_k(k=3) == (3.0, "custom") and flop_k(k=6) == (6.0, "6N")
    assert flop_k("6ND") == (6.0, "6N") and flop_k("7.5ND") == (7.5, "custom")
    for bad in ("6", "ND", "-6ND", "0ND", "6NDX"):
        with pytest.raises(ValueError, match="unknown flop_convention"):
            flop_k(bad)
    with pytest.raises(ValueError, match="needs k="):
        flop_k("exact")


def test_old_files_with_6ND_still_load(tmp_path):
    fitted = FittedLaw(CHINCHILLA, EPOCH)
    d = fitted.to_dict()
    assert d["flop_convention"] == "6N"
    d["flop_convention"] = "6ND"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(d))
    old = load(path)
    assert old.flop_convention == "6N" and old.k == 6.0
    assert old.compute_optimal(1e24)["N"] == pytest.approx(fitted.compute_optimal(1e24)["N"], rel=1e-12)


def test_constructor_validates_params():
    with pytest.raises(ValueError, match=r"params must be exactly"):
        FittedLaw("chinchilla", {"E": 1.0})
    with pytest.raises(ValueError, match=r"params\['E'\] must be a finite number"):
        FittedLaw("chinchilla", dict(EPOCH, E=float("nan")))
    with pytest.raises(ValueError, match=r"params\['A'\] = -1.0 is outside its log domain"):
        FittedLaw("chinchilla", dict(EPOCH, A=-1.0))


# ---------------------------------------------------------------- files

def test_file_round_trip(tmp_path, fitted_power):
    path = tmp_path / "power.json"
    fitted_power.save(path)
    back = load(path)
    assert back.law is POWER and back.params == fitted_power.params
    for name in POWER.param_names:
        np.testing.assert_array_equal(back.samples[name], fitted_power.samples[name])
        assert back.interval(name) == fitted_power.interval(name)
    assert back.standard_errors == fitted_power.standard_errors
    np.testing.assert_array_equal(back.residuals, fitted_power.residuals)
    assert back.data == fitted_power.data and back.fit["objective"] == "mse"
    assert back.fit["bootstrap"]["resamples"] == 50 and back.provenance["notes"] == "test"
    x = np.geomspace(*fitted_power.data["ranges"]["x"], 5)
    np.testing.assert_array_equal(back.predict(x=x), fitted_power.predict(x=x))
    on_disk = json.loads(path.read_text())
    assert on_disk["schema"] == "scaling.fitted_law" and on_disk["schema_version"] == 4
    assert on_disk["intervals"]["alpha"] == list(fitted_power.interval("alpha"))
    assert [p.name for p in tmp_path.iterdir()] == ["power.json"]       # no temporary files left
    fitted_power.save(path)                                                # overwrite in place
    assert load(path).params == fitted_power.params


def test_user_defined_law_loads_when_given(tmp_path):
    law = dataclasses.replace(POWER, name="my_unregistered_power_law")
    path = tmp_path / "mine.json"
    FittedLaw(law, POWER.reference).save(path)
    with pytest.raises(ValueError, match="unknown law 'my_unregistered_power_law'.*pass law="):
        load(path)
    assert load(path, law=law).params == POWER.reference


def _mutate(d, path, value):
    d = copy.deepcopy(d)
    *parents, last = path
    target = d
    for p in parents:
        target = target[p]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return d


_DELETE = object()


@pytest.mark.parametrize("path, value, message", [
    (("schema",), "something.else", r"schema must be 'scaling.fitted_law'"),
    (("schema_version",), 5, r"schema_version must be one of \(1, 2, 3, 4\)"),
    (("schema_version",), "1", r"schema_version must be one of"),
    (("schema_version",), True, r"schema_version must be one of"),
    (("acceleration",), {"gamma": 0.1}, r"acceleration must map a subset of"),
    (("law",), "no_such_law", r"law: unknown law 'no_such_law'"),
    (("law",), 7, r"law must be a law name"),
    (("params",), _DELETE, r"missing fields \['params'\]"),
    (("params", "alpha"), _DELETE, r"params must be exactly"),
    (("params", "gamma"), 1.0, r"params must be exactly"),
    (("params", "alpha"), "0.15", r"params\['alpha'\] must be a number"),
    (("params", "alpha"), None, r"params\['alpha'\] must be a number"),
    (("params", "E"), -1.0, r"params\['E'\] = -1.0 is outside"),
    (("samples",), [1, 2], r"samples must be an object"),
    (("samples", "alpha"), _DELETE, r"samples must give exactly the parameters"),
    (("samples", "alpha"), [0.1, 0.2], r"samples must be non-empty arrays of one common length"),
    (("samples", "alpha"), ["x"] * 50, r"samples\['alpha'\] must hold only numbers"),
    (("samples", "alpha"), [[0.1]] * 50, r"samples\['alpha'\] must hold only numbers"),
    (("standard_errors", "alpha"), -0.1, r"standard_errors\['alpha'\] must be >= 0"),
    (("standard_errors", "gamma"), 0.1, r"standard_errors must map a subset"),
    (("intervals", "alpha"), [0.1], r"intervals\['alpha'\] must be \[lo, hi\]"),
    (("intervals", "gamma"), [0.1, 0.2], r"intervals must map parameters"),
    (("flop_convention",), "6XD", r"unknown flop_convention"),
    (("flop_convention",), 6, r"flop_convention must be a string"),
    (("data",), "all of it", r"data must be an object"),
    (("data", "ranges", "x"), [10.0], r"data.ranges\['x'\] must be \[min, max\]"),
    (("data", "ranges", "x"), [10.0, 1.0], r"data.ranges\['x'\] has min > max"),
    (("data", "ranges", "z"), [1.0, 2.0], r"data.ranges must map covariates"),
    (("data", "n_points"), 2.5, r"data.n_points must be a non-negative integer"),
    (("data", "sha256"), "abc", r"data.sha256 must be 64 lowercase hex digits"),
    (("data", "target"), ["y"], r"data.target must be a column name"),
    (("fit",), [1], r"fit must be an object"),
    (("provenance",), "me", r"provenance must be an object"),
    (("residuals",), {"a": 1}, r"residuals must be a list"),
    (("residuals",), ["a"], r"residuals must hold only numbers"),
    (("extra_field",), 1, r"unknown fields \['extra_field'\]"),
])
def test_load_rejects_malformed_files(tmp_path, fitted_power, path, value, message):
    bad = _mutate(fitted_power.to_dict(), path, value)
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=message):
        load(file)


@pytest.mark.parametrize("text, message", [
    ("{not json", r"not valid JSON"),
    ("[1, 2]", r"must hold a JSON object"),
    ('{"schema": "scaling.fitted_law", "schema_version": 1, "law": "power_law", '
     '"params": {"E": NaN, "A": 1.0, "alpha": 0.1}}', r"non-finite number NaN"),
    ('{"schema": "scaling.fitted_law", "schema_version": 1, "law": "power_law", '
     '"params": {"E": Infinity, "A": 1.0, "alpha": 0.1}}', r"non-finite number Infinity"),
])
def test_load_rejects_non_json_and_non_finite_numbers(tmp_path, text, message):
    file = tmp_path / "bad.json"
    file.write_text(text)
    with pytest.raises(ValueError, match=message):
        load(file)


def test_load_is_exposed_as_scaling_load(tmp_path):
    path = os.fspath(tmp_path / "e.json")
    fl = FittedLaw("chinchilla", EPOCH, standard_errors=EPOCH_SE, provenance={"citation": "Besiroglu et al. 2024"})
    fl.save(path)
    back = scaling.load(path)
    assert isinstance(back, scaling.FittedLaw) and back.standard_errors == EPOCH_SE and back.samples is None


def test_compute_optimal_warns_when_the_optimum_is_outside_the_fitted_range():
    fitted = FittedLaw("chinchilla", EPOCH, data={"n_points": 10, "ranges": {"N": [1e8, 1e10], "D": [1e9, 1e11]}})
    budget_inside = 6 * 1e9 * 2e10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inside = fitted.compute_optimal(budget_inside)
    assert 1e8 <= inside["N"] <= 1e10 and 1e9 <= inside["D"] <= 1e11
    with pytest.warns(UserWarning, match="outside the fitted range"):
        fitted.compute_optimal(1e25)
    with pytest.warns(UserWarning, match="outside the fitted range"):
        fitted.compute_for_loss(EPOCH["E"] + 0.05)
