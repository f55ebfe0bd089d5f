"""`FittedLaw`: a law with fitted parameters, uncertainty and provenance: predictions with bands.

A fitted law predicts (`FittedLaw.predict`; with ``level=`` the point and its band, a `Band` that
says where the band comes from), gives parameter intervals (`FittedLaw.interval`), says what its
fit is unsure about (`FittedLaw.diagnostics`), and for loss laws with an ``allocation = ("N", "D")``
answers compute-optimal questions under a stated FLOP convention ``C = k N D`` (a name of
`scaling.flops.FIT_CONVENTIONS` and its k; files of older versions that say "6ND" read as "6N"):
`FittedLaw.compute_optimal(C)` and `FittedLaw.compute_for_loss(loss)` (`scaling.fitting.allocation`;
the numerics in `scaling.fitting.optimum`, Chinchilla's frontier closed-form, Hoffmann et al. 2022,
"Training Compute-Optimal Large Language Models", Eq. 4).

Parameter intervals are bootstrap percentile, BC or BCa intervals (`scaling.fitting.intervals`; BCa
uses the jackknife acceleration per parameter that `scaling.fit` stores in ``acceleration``), or,
for a maximum-likelihood fit, profile-likelihood intervals (`scaling.fitting.profile`, from the
signed root deviance curves that `scaling.fit` stores in ``profile``; the default there).
Bands of predictions and derived quantities are central percentile bands over the parameter draws
the fit carries (`FittedLaw.draws`, which says how they were made): the bootstrap draws; for a
maximum-likelihood fit without a bootstrap, 4,000 draws whose margins follow the profile
likelihoods and whose correlation is the inverse Hessian's ("profile_t"); for a law that only has
standard errors (a paper's table), 4,000 draws from independent normals with those SEs (truncated
to the parameters' domains; this ignores the correlations a paper does not report).

The file (JSON, validated on load, no pickle) is `scaling.fitting.fitted_file`: `FittedLaw.save`,
`load`.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import warnings
from typing import Callable, Mapping

import numpy as np

from scaling import flops
from scaling.fitting import allocation as allocation_lib
from scaling.fitting import diagnostics as diagnostics_lib
from scaling.fitting import fitted_file
from scaling.fitting import intervals as intervals_lib
from scaling.fitting import profile as profile_lib
from scaling.fitting.allocation import FRONTIER_TARGETS  # noqa: F401  (its old home)
from scaling.fitting.evaluate import evaluate
from scaling.fitting.fitted_file import (FIELDS, READABLE_VERSIONS, SCHEMA, SCHEMA_VERSION,  # noqa: F401
                                         _finite_float, _float_array, _is_number, _optional_dict)
from scaling.laws import law as law_lib

INTERVAL_METHODS = intervals_lib.METHODS + ("profile",)

# The FLOP-convention vocabulary of scaling.flops (kept here under its old names).
FLOP_CONVENTIONS = flops.FIT_CONVENTIONS
flop_k = flops.convention_k
_SE_DRAWS = 4000
# FittedLaw.interval's default: the profile likelihood where the fit has one (maximum-likelihood fits),
# else BCa where the fit has the jackknife acceleration, else the percentile interval. Each is the
# closest to 95% coverage where it applies (benchmarks/README.md, "Interval coverage").
DEFAULT_INTERVAL = "bca"


def _law(law) -> law_lib.Law:
    return law_lib.get(law)


@dataclasses.dataclass(frozen=True)
class Band:
    """A prediction and its central ``level`` band: ``value``, ``lower``, ``upper`` (arrays shaped
    like the inputs, or floats), and ``method``: where the band comes from (`FittedLaw.draws`:
    ``"bootstrap_percentile"``, ``"profile_t"``, ``"normal_internal_hessian"``,
    ``"normal_independent_se"``), or None, with ``lower`` and ``upper`` None, for a fit that carries
    no uncertainty. Unpacks as ``value, lower, upper = fitted.predict(..., level=0.95)``."""

    value: np.ndarray | float
    lower: np.ndarray | float | None
    upper: np.ndarray | float | None
    level: float
    method: str | None

    def __iter__(self):
        return iter((self.value, self.lower, self.upper))


class FittedLaw:
    """A law with fitted parameters (natural units), uncertainty, data and fit information."""

    def __init__(self, law: law_lib.Law | str, params: Mapping[str, float], *,
                 samples: Mapping[str, np.ndarray] | None = None,
                 standard_errors: Mapping[str, float] | None = None,
                 acceleration: Mapping[str, float] | None = None,
                 profile: Mapping[str, Mapping] | None = None,
                 covariance=None,
                 flop_convention: str | None = None, k: float | None = None,
                 data: dict | None = None, fit: dict | None = None, provenance: dict | None = None,
                 residuals: np.ndarray | None = None):
        self.law = _law(law)
        names = self.law.param_names
        if not isinstance(params, Mapping):
            raise ValueError(f"params must be a dict of {list(names)}, got {type(params).__name__}")
        if set(params) != set(names):
            raise ValueError(f"params must be exactly {list(names)} for law {self.law.name!r}, got {sorted(params)}")
        self.params = {n: _finite_float(params[n], f"params[{n!r}]") for n in names}
        for p in self.law.params:
            if not p.contains(self.params[p.name]):
                raise ValueError(f"params[{p.name!r}] = {self.params[p.name]} is outside its {p.transform} domain")
        self.samples = None
        if samples is not None:
            if not isinstance(samples, Mapping) or set(samples) != set(names):
                raise ValueError(f"samples must give exactly the parameters {list(names)}")
            arrays = {n: _float_array(samples[n], f"samples[{n!r}]") for n in names}
            lengths = {len(a) for a in arrays.values()}
            if len(lengths) != 1 or 0 in lengths:
                raise ValueError(f"samples must be non-empty arrays of one common length, got lengths "
                                 f"{ {n: len(a) for n, a in arrays.items()} }")
            self.samples = arrays
        self.standard_errors = None
        if standard_errors is not None:
            if not isinstance(standard_errors, Mapping) or not set(standard_errors) <= set(names):
                raise ValueError(f"standard_errors must map a subset of {list(names)} to numbers")
            self.standard_errors = {}
            for n, v in standard_errors.items():
                se = _finite_float(v, f"standard_errors[{n!r}]")
                if se < 0:
                    raise ValueError(f"standard_errors[{n!r}] must be >= 0, got {se}")
                self.standard_errors[n] = se
        self.acceleration = None
        if acceleration is not None:
            if not isinstance(acceleration, Mapping) or not set(acceleration) <= set(names):
                raise ValueError(f"acceleration must map a subset of {list(names)} to numbers")
            self.acceleration = {n: _finite_float(v, f"acceleration[{n!r}]") for n, v in acceleration.items()}
        self.profile = profile_lib.validate(None if profile is None else dict(profile), names)
        self.covariance = None
        if covariance is not None:
            try:
                cov = np.asarray(covariance, np.float64)
            except (TypeError, ValueError):
                raise ValueError("covariance must be a square array of numbers") from None
            if cov.shape != (len(names), len(names)) or not np.isfinite(cov).all():
                raise ValueError(f"covariance must be a finite {len(names)} x {len(names)} array "
                                 f"(law order {list(names)}), got shape {cov.shape}")
            eig = np.linalg.eigvalsh(0.5 * (cov + cov.T)) if np.allclose(cov, cov.T, rtol=1e-8, atol=0) else None
            if eig is None or eig[0] < -1e-8 * max(abs(eig[-1]), 1e-300) or eig[-1] <= 0:
                raise ValueError("covariance must be symmetric positive semi-definite (and not zero)")
            self.covariance = cov
        self.k, self.flop_convention = flops.convention_k(flop_convention, k)
        self.data = _optional_dict(data, "data")
        if self.data is not None:
            n_points = self.data.get("n_points")
            if n_points is not None and (not isinstance(n_points, (int, np.integer)) or isinstance(n_points, bool)
                                         or n_points < 0):
                raise ValueError(f"data.n_points must be a non-negative integer, got {n_points!r}")
            sha = self.data.get("sha256")
            if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
                raise ValueError(f"data.sha256 must be 64 lowercase hex digits, got {sha!r}")
            if self.data.get("target") is not None and not isinstance(self.data["target"], str):
                raise ValueError(f"data.target must be a column name, got {self.data['target']!r}")
        if self.data is not None and self.data.get("ranges") is not None:
            ranges = self.data["ranges"]
            if not isinstance(ranges, Mapping) or not set(ranges) <= set(self.law.covariates):
                raise ValueError(f"data.ranges must map covariates of {list(self.law.covariates)} to [min, max]")
            clean = {}
            for c, r in ranges.items():
                if not isinstance(r, (list, tuple)) or len(r) != 2:
                    raise ValueError(f"data.ranges[{c!r}] must be [min, max], got {r!r}")
                lo, hi = (_finite_float(v, f"data.ranges[{c!r}]") for v in r)
                if lo > hi:
                    raise ValueError(f"data.ranges[{c!r}] has min > max: {r!r}")
                clean[c] = [lo, hi]
            self.data["ranges"] = clean
        self.fit = _optional_dict(fit, "fit")
        self.provenance = _optional_dict(provenance, "provenance")
        self.residuals = None if residuals is None else _float_array(residuals, "residuals")
        self.multistart = None  # per-start results of scaling.fit (not saved to the file)

    # ------------------------------------------------------------------ uncertainty
    def interval(self, name: str, level: float = 0.95, method: str | None = None) -> tuple[float, float]:
        """Central ``level`` interval of a parameter: profile likelihood, bootstrap, or ``value +- z * SE``.

        ``method``: ``"profile"`` (profile likelihood, `scaling.profile`; maximum-likelihood fits),
        or from the bootstrap draws (see `scaling.intervals`) ``"percentile"``, ``"bc"``
        (bias-corrected) or ``"bca"`` (bias-corrected and accelerated; needs the jackknife
        ``acceleration`` that `scaling.fit` stores). Default: ``"profile"`` where the fit has a
        profile for the parameter, else `DEFAULT_INTERVAL` where the fit has what it needs, else
        ``"percentile"``. A law with standard errors only (a paper's table) gets the normal interval.
        """
        if name not in self.params:
            raise ValueError(f"unknown parameter {name!r}; law {self.law.name!r} has {list(self.params)}")
        if not (_is_number(level) and 0 < level < 1):
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        if method is not None and method not in INTERVAL_METHODS:
            raise ValueError(f"unknown interval method {method!r}; choose one of {INTERVAL_METHODS}")
        has_profile = self.profile is not None and name in self.profile
        if method == "profile" or (method is None and has_profile):
            if not has_profile:
                raise ValueError(f"no profile-likelihood interval for {name!r}: only maximum-likelihood fits "
                                 "(objective='nll') carry a profile")
            param = self.law.params[self.law.param_names.index(name)]
            return profile_lib.interval(param, self.params[name], self.profile[name], level)
        has_a = self.acceleration is not None and name in self.acceleration
        if self.samples is not None:
            if method is None:
                method = DEFAULT_INTERVAL if DEFAULT_INTERVAL != "bca" or has_a else "percentile"
            if method == "percentile":
                return intervals_lib.percentile(self.samples[name], level)
            if method == "bca" and not has_a:
                raise ValueError(f"no BCa interval for {name!r}: this fit has no jackknife acceleration for it "
                                 "(refit with scaling.fit, or add it with scaling.intervals.add_acceleration)")
            return intervals_lib.bca(self.samples[name], self.params[name],
                                     self.acceleration[name] if method == "bca" else 0.0, level)
        if method in ("bc", "bca"):
            raise ValueError(f"no {method} interval for {name!r}: it needs bootstrap samples (fit with bootstrap=...)")
        if self.standard_errors is not None and name in self.standard_errors:
            z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
            se = self.standard_errors[name]
            return self.params[name] - z * se, self.params[name] + z * se
        raise ValueError(f"no interval for {name!r}: this fit has neither bootstrap samples nor a standard error "
                         "(fit with bootstrap=...)")

    def _draws(self) -> tuple[dict | None, str | None]:
        """Parameter draws for bands of derived quantities, and how they were made.

        In order of preference: the bootstrap draws (``"bootstrap_percentile"``); for a
        maximum-likelihood fit (covariance of the internal parameters from the inverse Hessian),
        `_SE_DRAWS` draws whose margins follow each parameter's profile likelihood where the fit has
        one (``"profile_t"``: the signed root r_j ~ N(0, 1), mapped to the parameter through its
        profile curve, Bates & Watts 1988 "profile t"; correlated as the inverse Hessian says),
        else normal draws on the internal scale (``"normal_internal_hessian"``); for a table's
        standard errors, independent normals (``"normal_independent_se"``). Seeded: deterministic.
        """
        if self.samples is not None:
            return self.samples, "bootstrap_percentile"
        rng = np.random.default_rng(0)
        if self.covariance is not None:
            sd = np.sqrt(np.maximum(np.diag(self.covariance), 0.0))
            scale = np.where(sd > 0, sd, 1.0)
            eig, vecs = np.linalg.eigh(self.covariance / np.outer(scale, scale))   # the correlation (PSD)
            r = (rng.standard_normal((_SE_DRAWS, len(sd))) * np.sqrt(np.maximum(eig, 0.0))) @ vecs.T
            z_hat = self.law.internal(self.params)
            z = z_hat + r * sd
            profiled = self.profile is not None and set(self.profile) == set(self.params)
            if profiled:
                for j, p in enumerate(self.law.params):
                    if sd[j] == 0:
                        continue
                    curve = self.profile[p.name]
                    root = np.maximum.accumulate(np.asarray(curve["signed_root"], np.float64))
                    t = p.to_internal(np.asarray(curve["values"], np.float64))
                    # beyond the grid: continue at the outermost slope (the Hessian's scale)
                    z[:, j] = np.interp(r[:, j], root, t, left=np.nan, right=np.nan)
                    out = ~np.isfinite(z[:, j])
                    z[out, j] = z_hat[j] + r[out, j] * sd[j]
            draws = {p.name: p.to_natural_numpy(z[:, j]) for j, p in enumerate(self.law.params)}
            ok = np.all([np.isfinite(v) for v in draws.values()], axis=0)
            return {n: v[ok] for n, v in draws.items()}, "profile_t" if profiled else "normal_internal_hessian"
        se = self.standard_errors or {}
        if not se:
            return None, None
        draws = {n: v + se.get(n, 0.0) * rng.standard_normal(_SE_DRAWS) for n, v in self.params.items()}
        ok = np.ones(_SE_DRAWS, bool)
        for p in self.law.params:
            ok &= np.array([p.contains(v) for v in draws[p.name]])
        return {n: v[ok] for n, v in draws.items()}, "normal_independent_se"

    def draws(self) -> tuple[dict | None, str | None]:
        """``({param: array}, method)``: the parameter draws behind every band (see `_draws`)."""
        return self._draws()

    def band(self, fn: Callable[[Mapping[str, np.ndarray]], np.ndarray], level: float = 0.95,
             point=None) -> Band:
        """The central ``level`` band of any function of the parameters over the fit's draws.

        ``fn(params) -> array``: ``params`` maps names to numpy arrays, scalars for the point and
        shaped ``[S, 1, ...]`` (one row per draw, broadcasting against the function's other inputs)
        for the draws; the output's first axis is the draws'. Draws where ``fn`` is not finite are
        left out per value. ``point``: the value at the fitted parameters when already computed.
        """
        if not (_is_number(level) and 0 < level < 1):
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        value = np.asarray(fn(dict(self.params)) if point is None else point, np.float64)
        draws, method = self._draws()
        if draws is None or not len(next(iter(draws.values()))):
            return Band(_shaped(value), None, None, float(level), None)
        extra = (1,) * value.ndim
        values = np.asarray(fn({n: np.asarray(v, np.float64).reshape((-1,) + extra) for n, v in draws.items()}),
                            np.float64)
        values = np.broadcast_to(values, (values.shape[0],) + value.shape)
        values = np.where(np.isfinite(values), values, np.nan)
        if np.isnan(values).all(axis=0).any():
            return Band(_shaped(value), None, None, float(level), None)
        lo, hi = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)], axis=0)
        return Band(_shaped(value), _shaped(lo), _shaped(hi), float(level), method)

    def diagnostics(self) -> list[dict]:
        """What this fit is unsure about (`scaling.fitting.diagnostics`): parameters at a bound or a
        domain edge, 95% intervals spanning orders of magnitude, continuation beaten by a direct
        solve. The fit record's entries (``fit["diagnostics"]``) when `scaling.fit` made it, else
        computed now from the parameters and intervals (a published table, an older file)."""
        recorded = (self.fit or {}).get("diagnostics")
        if recorded is not None:
            return [dict(e) for e in recorded]
        found = diagnostics_lib.at_edges(self.law, self.params)
        if self.samples is not None or self.profile is not None or self.standard_errors:
            ivs = {}
            for name in self.params:
                try:
                    ivs[name] = self.interval(name, 0.95)
                except ValueError:
                    ivs[name] = None
            found += diagnostics_lib.wide_intervals(ivs)
        return found

    def diagnostics_markdown(self, name: str | None = None) -> str:
        """One markdown line for a report: ``""`` when the fit has nothing to flag, else a bold
        warning listing `diagnostics` and marking what is derived from the fit as unreliable."""
        return diagnostics_lib.markdown(name or self.law.name, self.diagnostics())

    # ------------------------------------------------------------------ prediction
    def predict(self, df=None, *, level: float | None = None, extrapolate: bool = False, **covariates):
        """Predict the target. Covariates from ``df`` columns or keywords; numpy in, numpy out (broadcast).

        With ``level`` (e.g. 0.95), returns a `Band`: the prediction, the central ``level`` band
        over the fit's parameter draws and the band's ``method`` (`draws`); without, the
        prediction (an array). Warns (UserWarning, once per call) when a covariate lies outside the
        range the law was fitted on, unless ``extrapolate=True`` says that is the point (held-out
        predictions, a study's next rung).
        """
        values = {}
        for c in self.law.covariates:
            if c in covariates:
                values[c] = covariates[c]
            elif df is not None and c in df:
                values[c] = df[c]
            else:
                raise ValueError(f"predict needs covariate {c!r} for law {self.law.name!r} "
                                 f"(give it as a keyword or a column of df)")
        unknown = set(covariates) - set(self.law.covariates)
        if unknown:
            raise ValueError(f"unknown covariates {sorted(unknown)}; law {self.law.name!r} takes "
                             f"{list(self.law.covariates)}")
        arrays = np.broadcast_arrays(*[np.asarray(values[c], dtype=np.float64) for c in self.law.covariates])
        x = dict(zip(self.law.covariates, arrays))
        if not extrapolate:
            self._warn_range(x)
        point = evaluate(self.law, self.params, x) if arrays[0].size else np.zeros(arrays[0].shape)
        if level is None:
            return np.asarray(point, dtype=np.float64)
        return self.band(lambda p: evaluate(self.law, p, x), level, point=point)

    def _warn_range(self, x: Mapping[str, np.ndarray]):
        """One UserWarning (per call) naming every covariate outside the range the law was fitted on."""
        ranges = (self.data or {}).get("ranges") or {}
        outside = []
        for c, v in x.items():
            if c in ranges and np.size(v):
                lo, hi = ranges[c]
                if np.nanmin(v) < lo or np.nanmax(v) > hi:
                    outside.append(f"{c} outside the fitted range [{lo:.4g}, {hi:.4g}] "
                                   f"(got [{np.nanmin(v):.4g}, {np.nanmax(v):.4g}])")
        if outside:
            warnings.warn("; ".join(outside) + ": extrapolating (pass extrapolate=True to predict where that "
                          "is the point)", UserWarning, stacklevel=3)

    # ------------------------------------------------------------------ compute-optimal allocation
    def compute_optimal(self, C, level: float = 0.95, **fixed) -> dict:
        """Loss-minimizing N and D for compute budgets ``C = k N D``: `scaling.fitting.allocation.compute_optimal`."""
        return allocation_lib.compute_optimal(self, C, level, **fixed)

    def compute_for_loss(self, loss, level: float = 0.95, **fixed) -> dict:
        """The budget whose optimal allocation reaches ``loss``: `scaling.fitting.allocation.compute_for_loss`."""
        return allocation_lib.compute_for_loss(self, loss, level, **fixed)

    def _optimum(self, params, C, fixed):
        return allocation_lib._optimum(self, params, C, fixed)

    def _closed_form(self) -> bool:
        return allocation_lib._closed_form(self)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        """The JSON-ready dict of the file format (`scaling.fitting.fitted_file`)."""
        return fitted_file.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping, law: law_lib.Law | None = None) -> "FittedLaw":
        """Validate a file dict and build the FittedLaw; ValueError names the offending field.

        ``law`` supplies the Law object for a user-defined law that is not registered.
        """
        return fitted_file.from_dict(cls, d, law)

    def save(self, path) -> None:
        """Write the JSON file atomically (temporary file in the same folder, then os.replace)."""
        fitted_file.save(self, path)

    def __repr__(self) -> str:
        ps = ", ".join(f"{n}={v:.4g}" for n, v in self.params.items())
        return f"FittedLaw({self.law.name}: {ps})"


def load(path, law: law_lib.Law | None = None) -> FittedLaw:
    """Read and validate a fitted-law JSON file (`scaling.load`); ValueError on anything malformed."""
    return FittedLaw.from_dict(fitted_file.read(path), law=law)


def _shaped(arr):
    arr = np.asarray(arr, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr
