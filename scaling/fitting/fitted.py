"""`FittedLaw`: a law with fitted parameters, uncertainty, provenance, and its JSON file.

A fitted law predicts, gives intervals, and for loss laws with an ``allocation = ("N", "D")``
answers compute-optimal questions under a stated FLOP convention ``C = k N D`` (a name of
`scaling.flops.FIT_CONVENTIONS` and its k; files of older versions that say "6ND" read as "6N"):

- `FittedLaw.compute_optimal(C)`: minimize ``L(N, C / (k N))`` over N. For Chinchilla's form
  ``L = E + A N^-alpha + B D^-beta`` the optimum is closed-form (Hoffmann et al. 2022,
  "Training Compute-Optimal Large Language Models", Eq. 4; re-derived by setting dL/dN = 0)::

      N_opt = G (C/k)^(beta/(alpha+beta)),  D_opt = G^-1 (C/k)^(alpha/(alpha+beta)),
      G = (alpha A / (beta B))^(1/(alpha+beta)),
      L_opt = E + (A G^-alpha + B G^beta) (C/k)^(-alpha beta/(alpha+beta)).

  (`scaling.laws.loss.chinchilla_frontier`). Any other law is minimized numerically
  (`scaling.fitting.optimum`: a 129-point grid in log N over ``1 <= N, D``, then golden-section
  search in the best grid cell, vectorized over budgets and parameter draws). A frontier law (a
  law of C fitted to an isoFLOP approach's N_opt, D_opt or L_opt; ``data.target`` says which)
  answers with its prediction at C.
- `FittedLaw.compute_for_loss(loss)`: the budget whose optimum reaches ``loss`` (closed-form for
  Chinchilla, else bisection in log C).

Parameter intervals are bootstrap percentile, BC or BCa intervals (`scaling.fitting.intervals`; BCa uses the
jackknife acceleration per parameter that `scaling.fit` stores in ``acceleration``), or, for a
maximum-likelihood fit, profile-likelihood intervals (`scaling.fitting.profile`, from the signed root
deviance curves that `scaling.fit` stores in ``profile``; the default there).
Intervals (bands) of derived quantities are percentiles over the parameter draws the fit carries
(`FittedLaw.draws`, which says how they were made): the bootstrap draws; for a maximum-likelihood
fit without a bootstrap, 4,000 draws whose margins follow the profile likelihoods and whose
correlation is the inverse Hessian's ("profile_t"); for a law that only has standard errors (a
paper's table), 4,000 draws from independent normals with those SEs (truncated to the parameters'
domains; this ignores the correlations a paper does not report).

File format (JSON, validated by `load`; no pickle, no eval)::

    {"schema": "scaling.fitted_law", "schema_version": 4, "law": name,
     "params": {name: float}, "standard_errors": {name: float} | null,
     "samples": {name: [float, ...]} | null, "intervals": {name: [lo, hi]} | null  (95%, default method),
     "acceleration": {name: float} | null  (BCa's jackknife a; new in version 2, version 1 files load),
     "profile": {name: {"values": [...], "signed_root": [...]}} | null  (new in version 3),
     "covariance": [[float, ...], ...] | null  (new in version 4: inverse Hessian of a maximum-
       likelihood fit's NLL at the optimum, internal scale, rows/columns in the law's parameter order),
     "flop_convention": "6N", "data": {...} | null, "fit": {...} | null,
     "provenance": {...} | null, "residuals": [float, ...] | null}
"""

from __future__ import annotations

import json
import math
import re
import statistics
import warnings
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from scaling import flops, io
from scaling.fitting import intervals as intervals_lib
from scaling.fitting import optimum as optimum_lib
from scaling.fitting import profile as profile_lib
from scaling.laws import law as law_lib

SCHEMA = "scaling.fitted_law"
SCHEMA_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)   # 1: no "acceleration"; 1-2: no "profile"; 1-3: no "covariance"
FIELDS = ("schema", "schema_version", "law", "params", "standard_errors", "samples", "intervals",
          "acceleration", "profile", "covariance", "flop_convention", "data", "fit", "provenance", "residuals")
INTERVAL_METHODS = intervals_lib.METHODS + ("profile",)

# The FLOP-convention vocabulary of scaling.flops (kept here under its old names).
FLOP_CONVENTIONS = flops.FIT_CONVENTIONS
flop_k = flops.convention_k
_SE_DRAWS = 4000
# FittedLaw.interval's default: the profile likelihood where the fit has one (maximum-likelihood fits),
# else BCa where the fit has the jackknife acceleration, else the percentile interval. Each is the
# closest to 95% coverage where it applies (benchmarks/README.md, "Interval coverage").
DEFAULT_INTERVAL = "bca"
FRONTIER_TARGETS = ("N_opt", "D_opt", "loss_opt")   # data.target of a law fitted to an approach's frontier


def _law(law) -> law_lib.Law:
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
        return optimum_lib.closed_form(self.law)

    def _optimum(self, params: Mapping[str, np.ndarray], C: np.ndarray, fixed: Mapping[str, float]):
        """(N, D, loss) at the compute optimum; params arrays [S], C [M] -> arrays [S, M]."""
        self._allocation()
        return optimum_lib.optimum(self.law, self.k, params, C, fixed)

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

        A frontier law (a 1-covariate law of C whose file says ``data.target`` is ``"N_opt"``,
        ``"D_opt"`` or ``"loss_opt"``, e.g. ``fits/approach2_n_opt.json`` of an isoFLOP study)
        answers directly: ``N_opt(C)`` is its prediction at C, with ``D = C / (k N)`` (method
        ``"frontier_law"``; the quantities the file does not describe are None).
        """
        C_arr = np.asarray(C, dtype=np.float64)
        if not np.isfinite(C_arr).all() or (C_arr <= 0).any():
            raise ValueError(f"compute budgets C must be finite and > 0, got {C!r}")
        if self._frontier_target() is not None and not fixed:
            return self._frontier_optimal(C_arr, level)
        fixed = self._fixed(fixed)
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

    def _frontier_target(self) -> str | None:
        target = (self.data or {}).get("target")
        if self.law.allocation is None and len(self.law.covariates) == 1 and target in FRONTIER_TARGETS:
            return target
        return None

    def _frontier_optimal(self, C: np.ndarray, level: float) -> dict:
        """`compute_optimal` of a frontier law (N_opt(C), D_opt(C) or L_opt(C) fitted on C)."""
        target, cov = self._frontier_target(), self.law.covariates[0]
        flat = C.reshape(-1)
        self._warn_range({cov: flat})
        with jax.enable_x64(True):
            y = np.asarray(self.law.fn({n: jnp.asarray(v) for n, v in self.params.items()}, {cov: jnp.asarray(flat)}))
            draws, how = self._draws()
            band = None
            if draws is not None and len(next(iter(draws.values()))):
                ys = np.asarray(self.law.fn({n: jnp.asarray(v)[:, None] for n, v in draws.items()},
                                            {cov: jnp.asarray(flat)[None, :]}))
                band = np.nanpercentile(ys, [50 * (1 - level), 50 * (1 + level)], axis=0)
        other = {"N_opt": "D", "D_opt": "N"}.get(target)
        key = {"N_opt": "N", "D_opt": "D", "loss_opt": "loss"}[target]
        out = {k_: None for k_ in ("N", "D", "loss", "tokens_per_param", "N_interval", "D_interval", "loss_interval",
                                   "tokens_per_param_interval")}
        out[key] = _shaped(y, C.shape)
        if band is not None:
            out[f"{key}_interval"] = (_shaped(band[0], C.shape), _shaped(band[1], C.shape))
        if other is not None:
            out[other] = _shaped(flat / (self.k * y), C.shape)
            if band is not None:   # D = C / (k N): the band maps with its ends swapped
                out[f"{other}_interval"] = (_shaped(flat / (self.k * band[1]), C.shape),
                                            _shaped(flat / (self.k * band[0]), C.shape))
            n, d = (y, flat / (self.k * y)) if key == "N" else (flat / (self.k * y), y)
            out["tokens_per_param"] = _shaped(d / n, C.shape)
        out.update(C=_shaped(flat, C.shape), k=self.k, flop_convention=self.flop_convention, method="frontier_law",
                   interval_method=how if band is not None else None)
        return out

    def _budget_for_loss(self, params, target: np.ndarray, fixed) -> np.ndarray:
        """Compute C [S, M] at which the optimal loss equals target [M]; inf where unreachable."""
        return optimum_lib.budget_for_loss(self.law, self.k, params, target, fixed)

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
                what = f"the optimal loss at C = {optimum_lib.C_MAX:g} FLOPs"
                floor = float(self._optimum(point, np.array([optimum_lib.C_MAX]), fixed)[2][0, 0])
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
            "covariance": None if self.covariance is None else self.covariance.tolist(),
            "flop_convention": self.flop_convention,
            "data": io.jsonable(self.data), "fit": io.jsonable(self.fit), "provenance": io.jsonable(self.provenance),
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
        if v < 4 and d.get("covariance") is not None:
            raise ValueError(f"covariance is not a field of schema_version {v} files (it is new in version 4)")
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
        conv = d.get("flop_convention", "6N")
        if not isinstance(conv, str):
            raise ValueError(f"flop_convention must be a string (a name of scaling.flops.FIT_CONVENTIONS), got {conv!r}")
        params = d["params"]
        if not isinstance(params, Mapping):
            raise ValueError(f"params must be an object, got {type(params).__name__}")
        for name, value in params.items():
            if not _is_number(value):
                raise ValueError(f"params[{name!r}] must be a number, got {value!r}")
        try:
            return cls(the_law, params, samples=samples, standard_errors=d.get("standard_errors"),
                       acceleration=d.get("acceleration"), profile=d.get("profile"), covariance=d.get("covariance"),
                       flop_convention=conv, data=d.get("data"), fit=d.get("fit"),
                       provenance=d.get("provenance"), residuals=residuals)
        except ValueError as e:
            raise ValueError(f"invalid fitted-law file: {e}") from None

    def save(self, path) -> None:
        """Write the JSON file atomically (temporary file in the same folder, then os.replace)."""
        io.write_text_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False))

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
