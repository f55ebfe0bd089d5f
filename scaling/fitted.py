"""`FittedLaw`: a law with fitted parameters, uncertainty, provenance, and its JSON file.

A fitted law predicts, gives intervals, and for loss laws with an ``allocation = ("N", "D")``
answers compute-optimal questions under a stated FLOP convention ``C = k N D``:

- `FittedLaw.compute_optimal(C)`: minimize ``L(N, C / (k N))`` over N. For Chinchilla's form
  ``L = E + A N^-alpha + B D^-beta`` the optimum is closed-form (Hoffmann et al. 2022,
  "Training Compute-Optimal Large Language Models", Eq. 4; re-derived by setting dL/dN = 0)::

      N_opt = G (C/k)^(beta/(alpha+beta)),  D_opt = G^-1 (C/k)^(alpha/(alpha+beta)),
      G = (alpha A / (beta B))^(1/(alpha+beta)),
      L_opt = E + (A G^-alpha + B G^beta) (C/k)^(-alpha beta/(alpha+beta)).

  Any other law is minimized numerically: a 257-point grid in log N over ``1 <= N, D``, then
  golden-section search in the best grid cell, vectorized over budgets and bootstrap draws.
- `FittedLaw.compute_for_loss(loss)`: the budget whose optimum reaches ``loss`` (closed-form for
  Chinchilla, else bisection in log C).

Parameter intervals are bootstrap percentile, BC or BCa intervals (`scaling.intervals`; BCa uses the
jackknife acceleration per parameter that `scaling.fit` stores in ``acceleration``), or, for a
maximum-likelihood fit, profile-likelihood intervals (`scaling.profile`, from the signed root
deviance curves that `scaling.fit` stores in ``profile``; the default there).
Intervals of derived quantities are percentiles over the bootstrap draws, or, for a law that only
has standard errors (a paper's table), over 4,000 draws from independent normals with those SEs
(truncated to the parameters' domains; this ignores the correlations a paper does not report).

File format (JSON, validated by `load`; no pickle, no eval)::

    {"schema": "scaling.fitted_law", "schema_version": 3, "law": name,
     "params": {name: float}, "standard_errors": {name: float} | null,
     "samples": {name: [float, ...]} | null, "intervals": {name: [lo, hi]} | null  (95%, default method),
     "acceleration": {name: float} | null  (BCa's jackknife a; new in version 2, version 1 files load),
     "profile": {name: {"values": [...], "signed_root": [...]}} | null  (new in version 3),
     "flop_convention": "6ND", "data": {...} | null, "fit": {...} | null,
     "provenance": {...} | null, "residuals": [float, ...] | null}
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import tempfile
import warnings
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from scaling import intervals as intervals_lib
from scaling import law as law_lib
from scaling import profile as profile_lib

SCHEMA = "scaling.fitted_law"
SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)   # version 1: no "acceleration"; versions 1-2: no "profile"
FIELDS = ("schema", "schema_version", "law", "params", "standard_errors", "samples", "intervals",
          "acceleration", "profile", "flop_convention", "data", "fit", "provenance", "residuals")
INTERVAL_METHODS = intervals_lib.METHODS + ("profile",)

# FLOPs per parameter per token, C = k * N * D.
FLOP_CONVENTIONS = {
    "6ND": 6.0,  # training, forward + backward (Kaplan et al. 2020, Sec. 2.1; Hoffmann et al. 2022)
    "8ND": 8.0,  # training with full activation recomputation (one extra forward pass)
    "2ND": 2.0,  # forward pass only (inference, evaluation)
}
_KND = re.compile(r"^([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)ND$")
_SE_DRAWS = 4000
# FittedLaw.interval's default: the profile likelihood where the fit has one (maximum-likelihood fits),
# else BCa where the fit has the jackknife acceleration, else the percentile interval. Each is the
# closest to 95% coverage where it applies (benchmarks/README.md, "Interval coverage").
DEFAULT_INTERVAL = "bca"
_C_MAX = 1e60   # the numeric search for a budget stops here (FLOPs)


def flop_k(flop_convention: str = "6ND", k: float | None = None) -> tuple[float, str]:
    """``(k, convention)`` for ``C = k N D``: a named convention, any ``"<k>ND"``, or an explicit float k."""
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, float, np.floating, np.integer)) or not (
                np.isfinite(k) and k > 0):
            raise ValueError(f"k (FLOPs per parameter per token) must be a positive number, got {k!r}")
        return float(k), f"{float(k):g}ND"
    if not isinstance(flop_convention, str):
        raise ValueError(f"flop_convention must be a string like '6ND', got {flop_convention!r}")
    if flop_convention in FLOP_CONVENTIONS:
        return FLOP_CONVENTIONS[flop_convention], flop_convention
    m = _KND.match(flop_convention)
    if not m or not float(m.group(1)) > 0:
        raise ValueError(f"unknown flop_convention {flop_convention!r}; use one of {sorted(FLOP_CONVENTIONS)} "
                         "or '<k>ND' with k > 0, or pass k=")
    return float(m.group(1)), flop_convention


def _law(law) -> law_lib.Law:
    if isinstance(law, law_lib.Law):
        return law
    import scaling.laws  # noqa: F401  (registers the shipped laws)
    return law_lib.get(law)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _finite_float(v, field: str) -> float:
    if not _is_number(v) or not math.isfinite(float(v)):
        raise ValueError(f"{field} must be a finite number, got {v!r}")
    return float(v)


def _float_array(v, field: str) -> np.ndarray:
    if isinstance(v, (list, tuple)) and not all(_is_number(e) for e in v):
        raise ValueError(f"{field} must hold only numbers")
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be an array of numbers") from None
    if arr.ndim != 1 or not np.isfinite(arr).all():
        raise ValueError(f"{field} must be a 1-D array of finite numbers")
    return arr


def _optional_dict(v, field: str) -> dict | None:
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise ValueError(f"{field} must be an object (dict) or null, got {type(v).__name__}")
    return dict(v)


class FittedLaw:
    """A law with fitted parameters (natural units), uncertainty, data and fit information."""

    def __init__(self, law: law_lib.Law | str, params: Mapping[str, float], *,
                 samples: Mapping[str, np.ndarray] | None = None,
                 standard_errors: Mapping[str, float] | None = None,
                 acceleration: Mapping[str, float] | None = None,
                 profile: Mapping[str, Mapping] | None = None,
                 flop_convention: str = "6ND", k: float | None = None,
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
        self.k, self.flop_convention = flop_k(flop_convention, k)
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
        """Parameter draws for intervals of derived quantities, and how they were made."""
        if self.samples is not None:
            return self.samples, "bootstrap_percentile"
        se = self.standard_errors or {}
        if not se:
            return None, None
        rng = np.random.default_rng(0)
        draws = {n: v + se.get(n, 0.0) * rng.standard_normal(_SE_DRAWS) for n, v in self.params.items()}
        ok = np.ones(_SE_DRAWS, bool)
        for p in self.law.params:
            ok &= np.array([p.contains(v) for v in draws[p.name]])
        return {n: v[ok] for n, v in draws.items()}, "normal_independent_se"

    # ------------------------------------------------------------------ prediction
    def predict(self, df=None, **covariates) -> np.ndarray:
        """Predict the target. Covariates from ``df`` columns or keywords; numpy in, numpy out (broadcast).

        Warns (UserWarning) when a covariate lies outside the range the law was fitted on.
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
        self._warn_range(x)
        with jax.enable_x64(True):
            out = self.law.fn({n: jnp.asarray(v) for n, v in self.params.items()},
                              {c: jnp.asarray(v) for c, v in x.items()})
            return np.asarray(out, dtype=np.float64)

    def _warn_range(self, x: Mapping[str, np.ndarray]):
        ranges = (self.data or {}).get("ranges") or {}
        for c, v in x.items():
            if c in ranges and np.size(v):
                lo, hi = ranges[c]
                if np.nanmin(v) < lo or np.nanmax(v) > hi:
                    warnings.warn(f"{c} outside the fitted range [{lo:.4g}, {hi:.4g}] "
                                  f"(got [{np.nanmin(v):.4g}, {np.nanmax(v):.4g}]): extrapolating",
                                  UserWarning, stacklevel=3)

    # ------------------------------------------------------------------ compute-optimal allocation
    def _allocation(self) -> tuple[str, str]:
        if self.law.allocation is None:
            raise ValueError(f"law {self.law.name!r} has no allocation (N, D); compute-optimal helpers need one")
        return self.law.allocation

    def _closed_form(self) -> bool:
        return (self.law.name == "chinchilla" and set(self.law.param_names) == {"E", "A", "B", "alpha", "beta"}
                and tuple(self.law.covariates) == ("N", "D") and self.law.allocation == ("N", "D"))

    def _optimum(self, params: Mapping[str, np.ndarray], C: np.ndarray, fixed: Mapping[str, float]):
        """(N, D, loss) at the compute optimum; params arrays [S], C [M] -> arrays [S, M]."""
        n_name, d_name = self._allocation()
        k = self.k
        with jax.enable_x64(True):
            p = {n: jnp.asarray(v, jnp.float64)[:, None] for n, v in params.items()}
            c = jnp.asarray(C, jnp.float64)[None, :] / k
            if self._closed_form():
                a_, b_, al, be, e_ = p["A"], p["B"], p["alpha"], p["beta"], p["E"]
                g = (al * a_ / (be * b_)) ** (1.0 / (al + be))
                n = g * c ** (be / (al + be))
                d = c / n
                loss = e_ + a_ * n ** -al + b_ * d ** -be
                return np.asarray(n), np.asarray(d), np.asarray(loss)
            optimum, _ = _numeric_fns(self.law, n_name, d_name, tuple(sorted(fixed)))
            logn, loss = optimum(p, jnp.log(c), {k_: jnp.asarray(v, jnp.float64) for k_, v in fixed.items()})
            n = jnp.exp(logn)
            return np.asarray(n), np.asarray(c / n), np.asarray(loss)

    def _fixed(self, fixed: Mapping[str, float]) -> dict:
        n_name, d_name = self._allocation()
        others = [c for c in self.law.covariates if c not in (n_name, d_name)]
        missing = [c for c in others if c not in fixed]
        if missing:
            raise ValueError(f"law {self.law.name!r} also needs covariates {missing} held fixed, e.g. "
                             f"compute_optimal(C, {missing[0]}=...)")
        unknown = set(fixed) - set(others)
        if unknown:
            raise ValueError(f"unknown fixed covariates {sorted(unknown)}; law takes {others}")
        return {c: _finite_float(fixed[c], c) for c in others}

    def compute_optimal(self, C, level: float = 0.95, **fixed) -> dict:
        """Loss-minimizing N and D for compute budgets ``C = k N D`` (vectorized over C).

        Returns ``{"C", "N", "D", "loss", "tokens_per_param"}`` (arrays shaped like C, floats for a
        scalar C), each with an ``*_interval`` ``(lo, hi)`` when draws exist (else None), plus
        ``"k"``, ``"flop_convention"``, ``"method"`` ("closed_form"/"numeric") and
        ``"interval_method"``. Other covariates of the law (if any) are held fixed via keywords.
        Warns (UserWarning) when the optimal N or D lies outside the range the law was fitted on.
        """
        fixed = self._fixed(fixed)
        C_arr = np.asarray(C, dtype=np.float64)
        if not np.isfinite(C_arr).all() or (C_arr <= 0).any():
            raise ValueError(f"compute budgets C must be finite and > 0, got {C!r}")
        flat = C_arr.reshape(-1)
        point = {n: np.asarray([v]) for n, v in self.params.items()}
        n, d, loss = (a[0] for a in self._optimum(point, flat, fixed))
        self._warn_range({**dict(zip(self._allocation(), (n, d))), **fixed})
        shape = C_arr.shape
        out = {"C": C_arr, "N": n, "D": d, "loss": loss, "tokens_per_param": d / n}
        draws, how = self._draws()
        for key in ("N", "D", "loss", "tokens_per_param"):
            out[f"{key}_interval"] = None
        if draws is not None and len(next(iter(draws.values()))):
            nd, dd, ld = self._optimum(draws, flat, fixed)
            for key, arr in (("N", nd), ("D", dd), ("loss", ld), ("tokens_per_param", dd / nd)):
                lo, hi = np.nanpercentile(arr, [50 * (1 - level), 50 * (1 + level)], axis=0)
                out[f"{key}_interval"] = (_shaped(lo, shape), _shaped(hi, shape))
        for key in ("N", "D", "loss", "tokens_per_param"):
            out[key] = _shaped(out[key], shape)
        out["C"] = _shaped(flat, shape)
        out.update(k=self.k, flop_convention=self.flop_convention,
                   method="closed_form" if self._closed_form() else "numeric", interval_method=how)
        return out

    def _budget_for_loss(self, params, target: np.ndarray, fixed) -> np.ndarray:
        """Compute C [S, M] at which the optimal loss equals target [M]; inf where unreachable."""
        k = self.k
        if self._closed_form():
            p = {n: np.asarray(v, np.float64)[:, None] for n, v in params.items()}
            al, be = p["alpha"], p["beta"]
            g = (al * p["A"] / (be * p["B"])) ** (1.0 / (al + be))
            coef = p["A"] * g ** -al + p["B"] * g ** be
            gamma = al * be / (al + be)
            excess = target[None, :] - p["E"]
            with np.errstate(divide="ignore", invalid="ignore"):
                c = np.where(excess > 0, (excess / coef) ** (-1.0 / gamma), np.inf)
            return k * c
        n_name, d_name = self._allocation()
        _, _, l_hi = self._optimum(params, np.array([_C_MAX]), fixed)
        reachable = target[None, :] > l_hi
        _, budget = _numeric_fns(self.law, n_name, d_name, tuple(sorted(fixed)))
        with jax.enable_x64(True):
            p = {n: jnp.asarray(v, jnp.float64)[:, None] for n, v in params.items()}
            log_c = budget(p, jnp.asarray(target, jnp.float64)[None, :], 0.0, np.log(_C_MAX / k),
                           {k_: jnp.asarray(v, jnp.float64) for k_, v in fixed.items()})
            c = k * np.exp(np.asarray(log_c))
        return np.where(reachable, c, np.inf)

    def compute_for_loss(self, loss, level: float = 0.95, **fixed) -> dict:
        """The compute budget C whose optimal allocation reaches ``loss`` (vectorized), with interval.

        Returns ``{"loss", "C", "C_interval", "N", "D", "tokens_per_param", "k", "flop_convention",
        "interval_method"}``; N, D are the optimal allocation at that C. Raises ValueError when the
        loss is at or below what the law can reach (the irreducible term E for Chinchilla).
        """
        fixed = self._fixed(fixed)
        target = np.asarray(loss, dtype=np.float64)
        if not np.isfinite(target).all():
            raise ValueError(f"loss must be finite, got {loss!r}")
        flat = target.reshape(-1)
        point = {n: np.asarray([v]) for n, v in self.params.items()}
        c = self._budget_for_loss(point, flat, fixed)[0]
        if not np.isfinite(c).all():
            if self._closed_form():
                what, floor = "the irreducible loss E", self.params["E"]
            else:
                what = f"the optimal loss at C = {_C_MAX:g} FLOPs"
                floor = float(self._optimum(point, np.array([_C_MAX]), fixed)[2][0, 0])
            raise ValueError(f"loss {flat[~np.isfinite(c)].tolist()} is not reachable: it must exceed "
                             f"{what} = {floor:.6g}")
        n, d, _ = (a[0] for a in self._optimum(point, c, fixed))
        self._warn_range({**dict(zip(self._allocation(), (n, d))), **fixed})
        out = {"loss": _shaped(flat, target.shape), "C": _shaped(c, target.shape), "C_interval": None,
               "N": _shaped(n, target.shape), "D": _shaped(d, target.shape),
               "tokens_per_param": _shaped(d / n, target.shape)}
        draws, how = self._draws()
        if draws is not None and len(next(iter(draws.values()))):
            cd = self._budget_for_loss(draws, flat, fixed)
            lo, hi = np.percentile(cd, [50 * (1 - level), 50 * (1 + level)], axis=0)
            out["C_interval"] = (_shaped(lo, target.shape), _shaped(hi, target.shape))
            out["fraction_reachable"] = _shaped(np.isfinite(cd).mean(axis=0), target.shape)
        out.update(k=self.k, flop_convention=self.flop_convention, interval_method=how)
        return out

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        """The JSON-ready dict of the file format (samples included when present)."""
        intervals = None
        if self.samples is not None or self.standard_errors:
            intervals = {}
            for n in self.params:
                try:
                    intervals[n] = list(self.interval(n, 0.95))
                except ValueError:
                    intervals[n] = None
        return {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "law": self.law.name,
            "params": dict(self.params),
            "standard_errors": None if self.standard_errors is None else dict(self.standard_errors),
            "samples": None if self.samples is None else {n: v.tolist() for n, v in self.samples.items()},
            "intervals": intervals,
            "acceleration": None if self.acceleration is None else dict(self.acceleration),
            "profile": None if self.profile is None else dict(self.profile),
            "flop_convention": self.flop_convention,
            "data": _jsonable(self.data), "fit": _jsonable(self.fit), "provenance": _jsonable(self.provenance),
            "residuals": None if self.residuals is None else self.residuals.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping, law: law_lib.Law | None = None) -> "FittedLaw":
        """Validate a file dict and build the FittedLaw; ValueError names the offending field.

        ``law`` supplies the Law object for a user-defined law that is not registered.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"a fitted-law file must hold a JSON object, got {type(d).__name__}")
        unknown = set(d) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)} in fitted-law file")
        missing = [f for f in ("schema", "schema_version", "law", "params") if f not in d]
        if missing:
            raise ValueError(f"fitted-law file is missing fields {missing}")
        if d["schema"] != SCHEMA:
            raise ValueError(f"schema must be {SCHEMA!r}, got {d['schema']!r}")
        v = d["schema_version"]
        if not isinstance(v, int) or isinstance(v, bool) or v not in READABLE_VERSIONS:
            raise ValueError(f"schema_version must be one of {READABLE_VERSIONS}, got {v!r}")
        if v == 1 and d.get("acceleration") is not None:
            raise ValueError("acceleration is not a field of schema_version 1 files (it is new in version 2)")
        if v < 3 and d.get("profile") is not None:
            raise ValueError(f"profile is not a field of schema_version {v} files (it is new in version 3)")
        if not isinstance(d["law"], str):
            raise ValueError(f"law must be a law name (string), got {d['law']!r}")
        if law is not None and law.name != d["law"]:
            raise ValueError(f"law: the file is for {d['law']!r} but law={law.name!r} was given")
        try:
            the_law = law if law is not None else _law(d["law"])
        except ValueError as e:
            raise ValueError(f"law: {e} (for a user-defined law pass law=...)") from None
        samples = d.get("samples")
        if samples is not None and not isinstance(samples, Mapping):
            raise ValueError(f"samples must be an object of lists or null, got {type(samples).__name__}")
        residuals = d.get("residuals")
        if residuals is not None and not isinstance(residuals, list):
            raise ValueError(f"residuals must be a list of numbers or null, got {type(residuals).__name__}")
        intervals = d.get("intervals")
        if intervals is not None:
            if not isinstance(intervals, Mapping) or not set(intervals) <= set(the_law.param_names):
                raise ValueError(f"intervals must map parameters of {list(the_law.param_names)} to [lo, hi]")
            for n, iv in intervals.items():
                if iv is not None and not (isinstance(iv, list) and len(iv) == 2
                                           and all(_is_number(x) and math.isfinite(x) for x in iv)):
                    raise ValueError(f"intervals[{n!r}] must be [lo, hi] of finite numbers or null, got {iv!r}")
        conv = d.get("flop_convention", "6ND")
        if not isinstance(conv, str):
            raise ValueError(f"flop_convention must be a string like '6ND', got {conv!r}")
        params = d["params"]
        if not isinstance(params, Mapping):
            raise ValueError(f"params must be an object, got {type(params).__name__}")
        for name, value in params.items():
            if not _is_number(value):
                raise ValueError(f"params[{name!r}] must be a number, got {value!r}")
        try:
            return cls(the_law, params, samples=samples, standard_errors=d.get("standard_errors"),
                       acceleration=d.get("acceleration"), profile=d.get("profile"), flop_convention=conv, data=d.get("data"), fit=d.get("fit"),
                       provenance=d.get("provenance"), residuals=residuals)
        except ValueError as e:
            raise ValueError(f"invalid fitted-law file: {e}") from None

    def save(self, path) -> None:
        """Write the JSON file atomically (temporary file in the same folder, then os.replace)."""
        path = os.fspath(path)
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def __repr__(self) -> str:
        ps = ", ".join(f"{n}={v:.4g}" for n, v in self.params.items())
        return f"FittedLaw({self.law.name}: {ps})"


def load(path, law: law_lib.Law | None = None) -> FittedLaw:
    """Read and validate a fitted-law JSON file (`scaling.load`); ValueError on anything malformed."""
    with open(path) as fh:
        text = fh.read()
    try:
        d = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return FittedLaw.from_dict(d, law=law)


def _reject_constant(name):
    raise ValueError(f"non-finite number {name} in fitted-law file")


def _shaped(arr, shape):
    arr = np.asarray(arr, dtype=np.float64).reshape(shape)
    return float(arr) if arr.ndim == 0 else arr


def _jsonable(obj):
    """Convert numpy scalars/arrays inside dicts/lists to plain JSON types; non-finite -> None."""
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    raise ValueError(f"cannot store a {type(obj).__name__} in a fitted-law file")


# ---------------------------------------------------------------------- numeric optimum

_GRID = 129
_GOLDEN_ITERS = 64
_BISECTION_ITERS = 100
_NUMERIC: dict = {}


def _numeric_fns(law: law_lib.Law, n_name: str, d_name: str, fixed_names: tuple[str, ...]):
    """Jit-compiled ``optimum(p, log_c, fixed)`` and ``budget(p, target, lo, hi, fixed)``, cached per law."""
    key = (id(law), n_name, d_name, fixed_names)
    hit = _NUMERIC.get(key)
    if hit is not None and hit[0] is law:
        return hit[1]

    def optimum(p, log_c, fixed):
        """Minimize L(N, c/N) over log N in [0, log c] (N >= 1, D >= 1) for every element.

        ``p`` maps names to arrays broadcastable with ``log_c`` (c = C/k): a `_GRID`-point grid in
        log N, then golden-section search in the best cell. Returns (log N_opt, L_opt).
        """
        shape = jnp.broadcast_shapes(log_c.shape, *[v.shape for v in p.values()])
        log_c = jnp.broadcast_to(log_c, shape)

        def loss(log_n):
            x = {n_name: jnp.exp(log_n), d_name: jnp.exp(log_c - log_n)}
            x.update({c: jnp.full(log_n.shape, v) for c, v in fixed.items()})
            out = law.fn(p, x)
            return jnp.where(jnp.isfinite(out), out, jnp.inf)

        grid = log_c[..., None] * jnp.linspace(0.0, 1.0, _GRID)
        vals = jax.vmap(loss, in_axes=-1, out_axes=-1)(grid)
        i = jnp.clip(jnp.argmin(vals, axis=-1), 1, _GRID - 2)
        lo = jnp.take_along_axis(grid, (i - 1)[..., None], -1)[..., 0]
        hi = jnp.take_along_axis(grid, (i + 1)[..., None], -1)[..., 0]
        ratio = (math.sqrt(5) - 1) / 2

        def golden(_, bracket):
            lo, hi = bracket
            x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
            left = loss(x1) < loss(x2)
            return jnp.where(left, lo, x1), jnp.where(left, x2, hi)

        lo, hi = jax.lax.fori_loop(0, _GOLDEN_ITERS, golden, (lo, hi))
        log_n = 0.5 * (lo + hi)
        return log_n, loss(log_n)

    def budget(p, target, log_c_lo, log_c_hi, fixed):
        """Bisection in log c for L_opt(c) = target (L_opt decreases with c)."""
        def step(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            above = optimum(p, mid, fixed)[1] > target
            return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

        shape = jnp.broadcast_shapes(target.shape, *[v.shape for v in p.values()])
        lo, hi = jax.lax.fori_loop(0, _BISECTION_ITERS, step, (jnp.full(shape, log_c_lo), jnp.full(shape, log_c_hi)))
        return 0.5 * (lo + hi)

    fns = (jax.jit(optimum), jax.jit(budget))
    _NUMERIC[key] = (law, fns)
    return fns
