"""The isoFLOP analysis: compute-optimal N_opt(C), D_opt(C), L_opt(C) by Hoffmann et al.'s three approaches.

Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", Sec. 3 (text checked
against the paper, arXiv:2203.15556 v1):

- Approach 1 (Sec. 3.1, "minimum over training curves"): smooth and interpolate each run's loss
  curve against cumulative FLOPs; on 1500 log-spaced FLOP values take the run with the lowest loss;
  fit ``N_opt ∝ C^a`` and ``D_opt ∝ C^b`` to that envelope. `approach1`.
- Approach 2 (Sec. 3.2, "IsoFLOP profiles"): per budget, fit a parabola to the final loss against
  log N and take its minimum; fit the same power laws to the minima. `approach2`.
- Approach 3 (Sec. 3.3, Eq. 2 and Eq. 4): fit ``L(N, D) = E + A/N^alpha + B/D^beta`` to all final
  losses (Huber, delta = 1e-3, on log loss); minimizing it under ``C = k N D`` gives
  ``N_opt = G (C/k)^a``, ``D_opt = G^-1 (C/k)^b`` with ``G = (alpha A / (beta B))^(1/(alpha+beta))``,
  ``a = beta/(alpha+beta)``, ``b = alpha/(alpha+beta)`` (Eq. 4), and on the frontier
  ``L_opt = E + (A G^-alpha + B G^beta) (C/k)^-gamma``, ``gamma = alpha beta/(alpha+beta)``. `approach3`.

Published (Table 2, 10th-90th percentiles of 100 bootstraps of 80% of the data):
a = 0.50 (0.488, 0.502), b = 0.50 (0.501, 0.512) for Approach 1; a = 0.49 (0.462, 0.534),
b = 0.51 (0.483, 0.529) for Approach 2; a = 0.46 (0.454, 0.455), b = 0.54 (0.542, 0.543) for
Approach 3. The intervals of exponents, frontiers and Approaches 1-2 here are central ``level``
(default 95%) bootstrap percentiles; the L(N, D) parameters of Approach 3 get `scaling.fit`'s
default (BCa, `scaling.intervals`).

Choices this module makes (not fixed by the paper):
- the parabola is ``loss = c0 + c1 x + c2 x^2`` with ``x = ln(N / N_ref)``, ``N_ref`` the geometric
  mean of the budget's sizes, fitted by (weighted) least squares; weights ``1/sem^2`` when an
  ``eval_loss_sem`` column is given. A minimum counts (``minimum_inside``) only when the parabola is
  convex and its vertex lies within the sampled N range; only such budgets enter the power laws.
- ``D_opt = C / (k_b N_opt)`` with ``k_b = median(C / (N D))`` over the budget's runs (equal to the
  convention's k when runs lie exactly on the isoFLOP, e.g. k = 6 for C = 6 N D).
- N_opt(C) and D_opt(C) are `pure_power_law` fits (``y = A x^b``, x = C) by least squares on
  log y; L_opt(C) is `power_law` (``y = E + A x^-alpha``) when at least `MIN_BUDGETS_OFFSET`
  budgets have an inside minimum, else `pure_power_law` (with b < 0; an offset cannot be
  determined from fewer points).
- Approach 2 intervals propagate per-budget uncertainty: each bootstrap draw resamples the runs
  within every budget, refits every parabola, and refits the power laws to the new minima (a draw
  whose parabola at some budget is not convex or has its vertex outside the sampled range leaves
  that budget out of that draw's power-law fits).
- Approach 1 bootstraps whole runs (the envelope is recomputed on the resampled set); envelope
  points where the winning run is the smallest or largest model size among the runs reaching that
  FLOP count are left out of the fits (``exclude_boundary``): there the optimum may lie beyond them.
- Every fit uses the engine's solver (`scaling.fitting.run_solver`, the solver of `scaling.fit`);
  the many small fits are batched so that they share one compiled executable (`_batched_fit`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import scaling.laws  # noqa: F401  (registers chinchilla, power_law, pure_power_law)
from scaling import fitting
from scaling.fitted import FittedLaw, flop_k
from scaling.law import Law, Param, get, register

HOFFMANN_CITATION = ("Hoffmann et al. 2022, 'Training Compute-Optimal Large Language Models', "
                     "arXiv:2203.15556, Sec. 3")
RUN_COLUMNS = ("budget", "n_params", "tokens", "flops", "eval_loss", "eval_loss_sem", "status", "run_id")
CURVE_COLUMNS = ("run_id", "n_params", "flops", "loss", "tokens")
MIN_SIZES = 3            # distinct model sizes a parabola needs
# Budgets needed to fit L_opt(C) with an offset E (3 parameters + 1 degree of freedom). On the
# frontier of L(N, D) = E + A/N^alpha + B/D^beta, L_opt = E + A' C^-gamma exactly (Hoffmann et al.
# 2022, Eq. 4), so a pure power law fitted instead bends down too fast when extrapolated: on the
# cpu preset's held-out budget it predicted -5.3% (and -2.2% on a re-centred grid) where the
# offset form predicts +0.85% (and about -0.4%).
MIN_BUDGETS_OFFSET = 4
APPROACH_NAMES = {1: "minimum over training curves", 2: "isoFLOP profiles",
                  3: "parametric loss L(N, D)"}
_ROWS, _COLS = 64, 2048  # shape of one batched solver call: starts x points


# ----------------------------------------------------------------------------- the parabola law

def _parabola(p, x):
    u = x["x"]
    return p["c0"] + p["c1"] * u + p["c2"] * u * u


PARABOLA = register(Law(
    name="isoflop_parabola",
    params=(Param("c0", doc="loss at N = N_ref"), Param("c1", doc="slope in ln N"),
            Param("c2", doc="curvature in ln N (> 0 for a minimum)")),
    covariates=("x",),
    target="loss",
    fn=_parabola,
    objective="mse",
    positive=(),
    formula="loss = c0 + c1 x + c2 x^2,  x = ln(N / N_ref);  N_opt = N_ref exp(-c1 / (2 c2)),  "
            "L_opt = c0 - c1^2 / (4 c2)",
    citation=HOFFMANN_CITATION + ".2 ('We fit a parabola to each IsoFLOPs curve')",
), overwrite=True)


# ----------------------------------------------------------------------------- batched fits

def _bucket(n: int) -> int:
    return max(32, 1 << max(0, int(n) - 1).bit_length())


def _batched_fit(law: Law, objective: str, x: Mapping[str, np.ndarray], y: np.ndarray, w: np.ndarray,
                 z0: np.ndarray, *, max_iter: int = 1000):
    """Fit ``law`` to R weighted datasets, each from its own starts, with the engine's solver.

    ``x`` maps covariates to [n] (shared) or [R, n]; ``y`` [R, n] natural targets; ``w`` [R, n]
    weights (0 = point absent, its values are ignored); ``z0`` internal starts, [R, P] (one per
    dataset) or [R, S, P]. `scaling.fitting.run_solver` minimizes from many starts with per-start
    weights over one shared set of points, so each call takes `_ROWS` (dataset, start) pairs, pools
    the distinct points of their datasets, and gives each start its dataset's weights on the pool
    (bootstrap resamples and multistarts share most points, so the pool stays small). The pool is
    padded to at least `_COLS` points, so one law compiles once for every call whose pool fits.
    Datasets without any positive weight are not fitted. Returns ``(z [R, P], objective [R],
    ok [R], objective per start [R, S])``.
    """
    y = np.atleast_2d(np.asarray(y, np.float64))
    w = np.atleast_2d(np.asarray(w, np.float64))
    R, n = y.shape
    P = len(law.params)
    z0 = np.asarray(z0, np.float64).reshape(R, -1, P)
    S = z0.shape[1]
    present = w > 0
    cols = [np.broadcast_to(np.asarray(x[c], np.float64), (R, n)) for c in law.covariates] + [y]
    f_all = np.full((R, S), np.inf)
    z_all = np.zeros((R, S, P))
    pairs = [(i, s) for i in np.flatnonzero(present.any(axis=1)) for s in range(S)]
    for c in range(0, len(pairs), _ROWS):
        call = pairs[c:c + _ROWS]
        call = call + [call[0]] * (_ROWS - len(call))        # filled with copies (discarded)
        reps = np.array([i for i, _ in call])
        row, col = np.nonzero(present[reps])
        keys = np.stack([v[reps[row], col] for v in cols], axis=1)
        pool, inverse = np.unique(keys, axis=0, return_inverse=True)
        size = max(_COLS, _bucket(len(pool)))
        W = np.zeros((_ROWS, size))
        np.add.at(W, (row, inverse.reshape(-1)), w[reps[row], col])
        padded = np.ones((size, len(cols)))
        padded[:len(pool)] = pool
        target = np.log(padded[:, -1]) if objective in fitting.LOG_OBJECTIVES else padded[:, -1]
        out = fitting.run_solver(
            law, objective, 1e-3, np.stack([z0[i, s] for i, s in call]), W,
            {cv: padded[:, j] for j, cv in enumerate(law.covariates)}, target, max_iter=max_iter, chunk=_ROWS)
        f = np.where(out["failed"] | ~np.isfinite(out["f"]) | ~np.isfinite(out["z"]).all(axis=1), np.inf, out["f"])
        for b, (i, s) in enumerate(call[:len(pairs[c:c + _ROWS])]):
            f_all[i, s], z_all[i, s] = f[b], out["z"][b]
    best = np.argmin(f_all, axis=1)
    f_best = f_all[np.arange(R), best]
    ok = np.isfinite(f_best) & present.any(axis=1)
    return z_all[np.arange(R), best], f_best, ok, f_all


def _natural(law: Law, z: np.ndarray) -> dict:
    """Internal -> natural parameters in numpy (the transforms of `scaling.law.Param`)."""
    z = np.asarray(z, np.float64)
    return {p.name: p.to_natural_numpy(z[..., i]) for i, p in enumerate(law.params)}


_EVALUATORS: dict = {}


def _evaluate(law: Law, params: Mapping[str, np.ndarray], x: Mapping[str, np.ndarray]) -> np.ndarray:
    """``law.fn`` on broadcast numpy inputs, in float64, through one jitted function per law.

    Inputs are flattened and padded to a power-of-two length so that few shapes get compiled.
    """
    names_p, names_x = list(params), list(x)
    arrays = np.broadcast_arrays(*[np.asarray(params[k], np.float64) for k in names_p],
                                 *[np.asarray(x[k], np.float64) for k in names_x])
    shape, size = arrays[0].shape, arrays[0].size
    m = _bucket(size)
    flat = [np.pad(a.reshape(-1), (0, m - size), constant_values=1.0) for a in arrays]
    hit = _EVALUATORS.get(law.name)
    if hit is None or hit[0] is not law:
        hit = (law, jax.jit(law.fn))
        _EVALUATORS[law.name] = hit
    with jax.enable_x64(True):
        out = hit[1]({k: jnp.asarray(v) for k, v in zip(names_p, flat[:len(names_p)])},
                     {k: jnp.asarray(v) for k, v in zip(names_x, flat[len(names_p):])})
        out = np.asarray(out, np.float64)
    return out[:size].reshape(shape)


def _fit_law(law: Law, objective: str, x: Mapping[str, np.ndarray], y: np.ndarray, *,
             weights: np.ndarray | None = None, y_draws: np.ndarray | None = None,
             w_draws: np.ndarray | None = None, flop_convention: str = "6ND", k: float | None = None,
             bootstrap_info: Mapping | None = None, provenance: Mapping | None = None) -> FittedLaw:
    """Multistart fit (the law's default grid) plus refits on given draws; returns a FittedLaw.

    ``y_draws``/``w_draws`` [B, n] are bootstrap datasets on the same covariates (weights 0 leave
    points out); each is refitted from the full-data optimum and gives one sample of the params.
    """
    y = np.asarray(y, np.float64)
    n = len(y)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    grid = law.default_grid()
    S = len(grid)
    z, f, ok, f_all = _batched_fit(law, objective, x, y[None], w[None], grid[None])
    if not ok[0]:
        raise ValueError(f"law {law.name!r}: the fit failed from every start (x = {dict(x)}, y = {y})")
    z_best, f_best = z[0], float(f[0])
    at_best = f_all[0] <= f_best + 1e-6 * abs(f_best)
    params = {kk: float(v) for kk, v in _natural(law, z_best).items()}
    samples = None
    boot = None
    if y_draws is not None and len(y_draws):
        B = len(y_draws)
        zb, _, okb, _ = _batched_fit(law, objective, x, y_draws, w_draws, np.broadcast_to(z_best, (B, len(z_best))))
        if okb.any():
            samples = {kk: v for kk, v in _natural(law, zb[okb]).items()}
        boot = dict(bootstrap_info or {})
        boot.update(draws=int(B), failed=int((~okb).sum()))
    pred = _evaluate(law, params, x)
    residuals = (np.log(y) - np.log(pred)) if objective in fitting.LOG_OBJECTIVES else (y - pred)
    fit_info = {
        "objective": objective, "objective_value": f_best, "normalisation": "weighted sum over points",
        "weighted": weights is not None, "n_starts": int(S), "n_failed": int((~np.isfinite(f_all[0])).sum()),
        "n_starts_at_best": int(at_best.sum()), "bootstrap": boot,
        "solver": "scaling.fitting.run_solver (batched by scaling.isoflop)",
        "residual_space": "log" if objective in fitting.LOG_OBJECTIVES else "linear",
    }
    data_info = {"n_points": int(n), "sha256": fitting.data_sha256(dict(x), y, law.target), "target": law.target,
                 "ranges": {c: [float(np.min(v)), float(np.max(v))] for c, v in x.items()}}
    prov = {"citation": law.citation, "equation": law.formula}
    prov.update(provenance or {})
    fitted = FittedLaw(law, params, samples=samples, flop_convention=flop_convention, k=k, data=data_info,
                       fit=fit_info, provenance=prov, residuals=residuals)
    fitted.draw_index = np.flatnonzero(okb) if samples is not None else None  # which draws the samples are
    return fitted


def predict_band(fitted: FittedLaw, x, level: float = 0.95):
    """Point prediction and central ``level`` band over the bootstrap samples of a 1-covariate law.

    Returns ``(y, lo, hi)`` arrays shaped like x; lo/hi are None without samples.
    """
    cov = fitted.law.covariates[0]
    xs = np.asarray(x, np.float64)
    y = _evaluate(fitted.law, fitted.params, {cov: xs})
    if fitted.samples is None:
        return y, None, None
    s = {kk: v[:, None] for kk, v in fitted.samples.items()}
    draws = _evaluate(fitted.law, s, {cov: xs.reshape(1, -1)})
    lo, hi = np.nanpercentile(draws, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return y, lo.reshape(xs.shape), hi.reshape(xs.shape)


# ----------------------------------------------------------------------------- results

def _jsonable(obj):
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, FittedLaw):
        return _law_summary(obj)
    if dataclasses.is_dataclass(obj):
        return obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(kk): _jsonable(v) for kk, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    raise ValueError(f"cannot convert a {type(obj).__name__} to JSON")


def _law_summary(f: FittedLaw | None) -> dict | None:
    if f is None:
        return None
    intervals = {n: (list(f.interval(n)) if f.samples is not None else None) for n in f.params}
    return {"law": f.law.name, "formula": f.law.formula, "params": dict(f.params), "intervals_95": intervals,
            "n_samples": None if f.samples is None else len(next(iter(f.samples.values()))),
            "flop_convention": f.flop_convention, "covariate_ranges": (f.data or {}).get("ranges"),
            "notes": (f.provenance or {}).get("notes")}


def _interval(samples, level):
    samples = np.asarray(samples, np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size < 2:
        return None
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))


@dataclasses.dataclass
class Exponents:
    """``N_opt ∝ C^a`` and ``D_opt ∝ C^b`` with central ``level`` bootstrap intervals (None without)."""

    a: float
    a_interval: tuple[float, float] | None
    b: float
    b_interval: tuple[float, float] | None
    level: float = 0.95
    extra: dict = dataclasses.field(default_factory=dict)  # e.g. alpha, beta (Approach 3), loss exponent

    def to_dict(self) -> dict:
        return _jsonable(dataclasses.asdict(self))


@dataclasses.dataclass
class BudgetMinimum:
    """The parabola fit of one isoFLOP curve (Approach 2) and its minimum."""

    budget: float
    n_runs: int
    n_sizes: int
    n_range: tuple[float, float]          # sampled model sizes (min, max)
    n_ref: float                          # x = ln(N / n_ref) in the parabola
    coefficients: dict                    # c0, c1, c2
    convex: bool                          # c2 > 0
    minimum_inside: bool                  # convex and n_range[0] <= n_opt <= n_range[1]
    n_opt: float                          # vertex (extrapolated when not inside; nan when not convex)
    n_opt_interval: tuple[float, float] | None
    d_opt: float
    loss_opt: float
    loss_opt_interval: tuple[float, float] | None
    tokens_per_param: float
    k_effective: float                    # median(C / (N D)) over the budget's runs
    best_run: dict                        # n_params, tokens, eval_loss of the lowest measured loss
    weighted: bool                        # parabola weighted by 1/sem^2
    used_in_fit: bool                     # entered the power-law fits
    suggestion: dict                      # {"direction": None | "smaller" | "larger", "n_center": float}
    bootstrap_valid_fraction: float | None
    residual_rms: float
    sizes: list = dataclasses.field(default_factory=list, repr=False)    # the runs' n_params
    losses: list = dataclasses.field(default_factory=list, repr=False)   # the runs' eval_loss
    parabola: FittedLaw | None = dataclasses.field(default=None, repr=False)

    def predict_loss(self, N) -> np.ndarray:
        """The fitted parabola's loss at model sizes N."""
        x = np.log(np.asarray(N, np.float64) / self.n_ref)
        c = self.coefficients
        return c["c0"] + c["c1"] * x + c["c2"] * x * x

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "parabola"}
        return _jsonable(d)


@dataclasses.dataclass
class ApproachResult:
    """One approach's compute-optimal laws: N_opt(C), D_opt(C), L_opt(C) as FittedLaws (x = C)."""

    approach: int
    name: str
    flop_convention: str
    n_opt_law: FittedLaw | None
    d_opt_law: FittedLaw | None
    loss_opt_law: FittedLaw | None
    exponents: Exponents | None
    points: dict                          # the (C, N_opt, D_opt, loss_opt) the laws were fitted to
    tokens_per_param: list                # [{"C", "value", "interval"}] at the reference budgets
    budgets: list = dataclasses.field(default_factory=list)   # BudgetMinimum (Approach 2)
    parametric: FittedLaw | None = None                      # L(N, D) (Approach 3)
    notes: list = dataclasses.field(default_factory=list)
    bootstrap: dict | None = None

    def predict(self, C, level: float = 0.95) -> dict:
        """N_opt, D_opt, loss_opt at budgets C with bands (None where a law is missing)."""
        out = {"C": np.asarray(C, np.float64)}
        for key, law in (("N_opt", self.n_opt_law), ("D_opt", self.d_opt_law), ("loss_opt", self.loss_opt_law)):
            if law is None:
                out[key], out[key + "_interval"] = None, None
                continue
            y, lo, hi = predict_band(law, C, level)
            out[key] = y
            out[key + "_interval"] = None if lo is None else (lo, hi)
        return out

    def fitted_laws(self) -> dict:
        """``{"approach2_n_opt": FittedLaw, ...}`` for saving (``fits/<name>.json``)."""
        out = {}
        for key, law in (("n_opt", self.n_opt_law), ("d_opt", self.d_opt_law), ("loss_opt", self.loss_opt_law),
                         ("parametric", self.parametric)):
            if law is not None:
                out[f"approach{self.approach}_{key}"] = law
        return out

    def to_dict(self) -> dict:
        return _jsonable({
            "approach": self.approach, "name": self.name, "flop_convention": self.flop_convention,
            "n_opt_law": self.n_opt_law, "d_opt_law": self.d_opt_law, "loss_opt_law": self.loss_opt_law,
            "parametric": self.parametric, "exponents": self.exponents, "points": self.points,
            "tokens_per_param": self.tokens_per_param, "budgets": self.budgets, "notes": self.notes,
            "bootstrap": self.bootstrap})


@dataclasses.dataclass
class ExtrapolationCheck:
    """Each approach refitted without the largest budget, predicting that budget's optimum."""

    held_out_budget: float
    fitted_budgets: list
    reference: dict      # {"source": "parabola_minimum" | "best_run", "loss", "n_opt"}
    predictions: dict    # approach -> {"loss", "n_opt", "loss_rel_error", "n_opt_rel_error"} or {"skipped": why}

    def to_dict(self) -> dict:
        return _jsonable(dataclasses.asdict(self))


@dataclasses.dataclass
class IsoFlopAnalysis:
    """All approaches on one grid, the extrapolation check, and the runs that were left out."""

    approaches: dict                      # {1: ApproachResult, 2: ..., 3: ...} (those that ran)
    extrapolation: ExtrapolationCheck | None
    excluded_runs: list
    flop_convention: str
    notes: list = dataclasses.field(default_factory=list)

    def fitted_laws(self) -> dict:
        out = {}
        for res in self.approaches.values():
            out.update(res.fitted_laws())
        return out

    def exponents_table(self) -> list:
        """One row per approach: a, b with intervals (for a report)."""
        rows = []
        for i, res in sorted(self.approaches.items()):
            e = res.exponents
            rows.append({"approach": i, "name": res.name, "a": None if e is None else e.a,
                         "a_interval": None if e is None else e.a_interval,
                         "b": None if e is None else e.b, "b_interval": None if e is None else e.b_interval})
        return _jsonable(rows)

    def to_dict(self) -> dict:
        return _jsonable({"approaches": {str(i): r for i, r in self.approaches.items()},
                          "exponents": self.exponents_table(), "extrapolation": self.extrapolation,
                          "excluded_runs": self.excluded_runs, "flop_convention": self.flop_convention,
                          "notes": self.notes})


# ----------------------------------------------------------------------------- input checking

def _frame(data, what: str) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, Mapping):
        try:
            return pd.DataFrame(dict(data))
        except ValueError as e:
            raise ValueError(f"{what}: cannot make a table of the given columns ({e})") from None
    raise ValueError(f"{what} must be a pandas DataFrame or a dict of columns, got {type(data).__name__}")


def _rows(mask, index) -> str:
    rows = list(np.asarray(index)[np.asarray(mask)])
    return "rows [" + ", ".join(str(r) for r in rows[:10]) + (", ..." if len(rows) > 10 else "") + "]"


def _numeric(df: pd.DataFrame, col: str, what: str, *, positive: bool = True, allow_nan: bool = False):
    try:
        v = pd.to_numeric(df[col], errors="raise").to_numpy(np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: column {col!r} is not numeric ({e})") from None
    bad = ~np.isfinite(v) if not allow_nan else np.isinf(v)
    if bad.any():
        raise ValueError(f"{what}: column {col!r} has {bad.sum()} non-finite values (NaN/inf) at "
                         f"{_rows(bad, df.index)}")
    if positive:
        bad = v <= 0
        if bad.any():
            raise ValueError(f"{what}: column {col!r} must be > 0 (logs of it are taken) but has "
                             f"{bad.sum()} non-positive values at {_rows(bad, df.index)}")
    return v


def _column_map(columns: Mapping[str, str] | None, known: Sequence[str], what: str) -> dict:
    columns = dict(columns or {})
    unknown = set(columns) - set(known)
    if unknown:
        raise ValueError(f"{what}: columns= maps unknown names {sorted(unknown)}; known: {list(known)}")
    return {c: columns.get(c, c) for c in known}


@dataclasses.dataclass
class _Runs:
    df: pd.DataFrame          # canonical columns, completed rows only, float values
    excluded: list
    has_sem: bool


def _prepare_runs(runs, columns=None, *, need_budget: bool = True, min_sizes: int = MIN_SIZES,
                  drop_small_budgets: bool = False) -> _Runs:
    """Validate the runs table: returns the completed rows under canonical column names."""
    df = _frame(runs, "runs")
    cmap = _column_map(columns, RUN_COLUMNS, "runs")
    required = (["budget"] if need_budget else []) + ["n_params", "tokens", "eval_loss"]
    missing = [cmap[c] for c in required if cmap[c] not in df.columns]
    if missing:
        raise ValueError(f"runs: missing columns {missing} (available: {list(df.columns)}); "
                         "map names with columns={'eval_loss': 'my_loss', ...}")
    excluded = []
    if cmap["status"] in df.columns:
        status = df[cmap["status"]].astype(str)
        keep = (status == "completed").to_numpy()
        for i in np.flatnonzero(~keep):
            row = df.iloc[i]
            excluded.append({"row": _jsonable(df.index[i]), "status": str(status.iloc[i]),
                             **{c: _jsonable(row[cmap[c]]) for c in ("run_id", "budget", "n_params", "tokens")
                                if cmap[c] in df.columns},
                             "reason": "status is not 'completed'"})
        df = df[keep]
    if len(df) == 0:
        raise ValueError("runs: no completed runs")
    out = pd.DataFrame(index=df.index)
    for c in required:
        out[c] = _numeric(df, cmap[c], "runs")
    for c in ("budget", "flops"):
        if c not in out and cmap[c] in df.columns:
            out[c] = _numeric(df, cmap[c], "runs")
    if cmap["run_id"] in df.columns:
        out["run_id"] = df[cmap["run_id"]].astype(str).to_numpy()
    has_sem = cmap["eval_loss_sem"] in df.columns
    if has_sem:
        sem = _numeric(df, cmap["eval_loss_sem"], "runs", positive=False, allow_nan=True)
        bad = np.isfinite(sem) & (sem <= 0)
        if bad.any():
            raise ValueError(f"runs: column {cmap['eval_loss_sem']!r} must be > 0 where given (it weights the "
                             f"parabola fits by 1/sem^2) but has non-positive values at {_rows(bad, df.index)}")
        out["eval_loss_sem"] = sem
    if need_budget:
        keep_rows = np.ones(len(out), bool)
        for b, g in out.groupby("budget"):
            sizes = np.unique(g["n_params"])
            if len(sizes) < min_sizes:
                msg = (f"budget {b:.4g} has {len(sizes)} distinct model sizes {sizes.tolist()}; a parabola "
                       f"needs at least {min_sizes}")
                if not drop_small_budgets:
                    raise ValueError(f"runs: {msg} (pass drop_small_budgets=True to leave such budgets out)")
                keep_rows &= ~(out["budget"] == b).to_numpy()
                for idx, row in g.iterrows():
                    excluded.append({"row": _jsonable(idx), "budget": float(b), "n_params": float(row["n_params"]),
                                     "tokens": float(row["tokens"]), "reason": msg})
        out = out[keep_rows]
        n_budgets = out["budget"].nunique()
        if n_budgets < 2:
            raise ValueError(f"runs: {n_budgets} budget(s) with at least {min_sizes} sizes; the power laws "
                             "N_opt(C), D_opt(C) need at least 2 (3 or more recommended)")
    return _Runs(out, excluded, has_sem)


def assign_budgets(flops, step_dex: float = 0.25, tolerance_dex: float | None = None) -> np.ndarray:
    """Nominal isoFLOP budgets for runs whose FLOPs are only near a grid (e.g. extracted points).

    Rounds log10(flops) to the nearest multiple of ``step_dex`` and returns ``10**rounded``; a run
    farther than ``tolerance_dex`` (in log10 units) from its grid value gets NaN (not on an isoFLOP).
    """
    f = np.asarray(flops, np.float64)
    if not np.isfinite(f).all() or (f <= 0).any():
        raise ValueError("assign_budgets: flops must be finite and > 0")
    if not step_dex > 0:
        raise ValueError(f"assign_budgets: step_dex must be > 0, got {step_dex}")
    lg = np.log10(f)
    centre = np.round(lg / step_dex) * step_dex
    out = 10.0 ** centre
    if tolerance_dex is not None:
        out = np.where(np.abs(lg - centre) <= tolerance_dex, out, np.nan)
    return out


def effective_k(runs, columns: Mapping[str, str] | None = None) -> float:
    """``median(C / (N D))`` over the completed runs: the k of ``C = k N D`` that the data imply.

    With C counted as 6 N D this is 6; with an exact FLOP count (attention included) it is larger
    and varies with the model size. Pass it as ``k=`` so that D_opt = C / (k N_opt) and the
    parametric frontier use the compute the runs actually spent per parameter and token.
    """
    df = _prepare_runs(runs, columns, need_budget=False).df
    c = df["budget"] if "budget" in df else df["flops"] if "flops" in df else None
    if c is None:
        raise ValueError("effective_k: runs need a 'budget' or a 'flops' column")
    return float(np.median(c.to_numpy() / (df["n_params"].to_numpy() * df["tokens"].to_numpy())))


# ----------------------------------------------------------------------------- Approach 2

def _minima(prep: _Runs, k: float, bootstrap: int, seed: int, level: float):
    """Per-budget parabolas on the data and on ``bootstrap`` within-budget resamples.

    Returns (budgets, per-budget dicts, log N_opt [J, 1+B], L_opt [J, 1+B], valid [J, 1+B]).
    """
    df = prep.df
    budgets = np.sort(df["budget"].unique())
    J, B = len(budgets), int(bootstrap)
    groups = [df[df["budget"] == b] for b in budgets]
    n_max = max(len(g) for g in groups)
    rng = np.random.default_rng(seed)
    X = np.zeros((J, n_max))
    Y = np.ones((J, n_max))
    W = np.zeros((J, 1 + B, n_max))
    info = []
    for j, g in enumerate(groups):
        N = g["n_params"].to_numpy()
        n_ref = float(np.exp(np.mean(np.log(np.unique(N)))))
        m = len(g)
        X[j, :m] = np.log(N / n_ref)
        Y[j, :m] = g["eval_loss"].to_numpy()
        base = np.ones(m)
        weighted = False
        if prep.has_sem:
            sem = g["eval_loss_sem"].to_numpy()
            if np.isfinite(sem).all():
                base = 1.0 / sem ** 2
                base = base / base.mean()
                weighted = True
        counts = np.ones((1 + B, m))
        if B:
            counts[1:] = rng.multinomial(m, np.full(m, 1.0 / m), size=B)
        W[j, :, :m] = counts * base
        info.append({"n_ref": n_ref, "m": m, "weighted": weighted, "N": N, "sizes": np.unique(N)})
    Xr = np.repeat(X[:, None, :], 1 + B, axis=1).reshape(-1, n_max)
    Yr = np.repeat(Y[:, None, :], 1 + B, axis=1).reshape(-1, n_max)
    z0 = np.zeros((J * (1 + B), 3))
    z0[:, 0] = np.repeat([np.mean(Y[j, :info[j]["m"]]) for j in range(J)], 1 + B)
    z, _, ok, _ = _batched_fit(PARABOLA, "mse", {"x": Xr}, Yr, W.reshape(-1, n_max), z0)
    c = _natural(PARABOLA, z)
    c0, c1, c2 = (c[n].reshape(J, 1 + B) for n in ("c0", "c1", "c2"))
    ok = ok.reshape(J, 1 + B)
    # distinct sizes with positive weight in each resample (a parabola needs three)
    distinct = np.zeros((J, 1 + B), int)
    for j, inf in enumerate(info):
        m = inf["m"]
        size_of = np.searchsorted(inf["sizes"], inf["N"])
        per_size = np.zeros((1 + B, len(inf["sizes"])))
        np.add.at(per_size.T, size_of, W[j, :, :m].T)
        distinct[j] = (per_size > 0).sum(axis=1)
    convex = ok & (c2 > 0) & (distinct >= MIN_SIZES)
    with np.errstate(divide="ignore", invalid="ignore"):
        xv = np.where(convex, -c1 / (2 * c2), np.nan)
        lv = np.where(convex, c0 - c1 * c1 / (4 * c2), np.nan)
    lo = np.array([X[j, :inf["m"]].min() for j, inf in enumerate(info)])[:, None]
    hi = np.array([X[j, :inf["m"]].max() for j, inf in enumerate(info)])[:, None]
    inside = convex & (xv >= lo - 1e-9) & (xv <= hi + 1e-9)
    log_n = xv + np.log([inf["n_ref"] for inf in info])[:, None]
    results = []
    for j, (b, g, inf) in enumerate(zip(budgets, groups, info)):
        N, D, L = g["n_params"].to_numpy(), g["tokens"].to_numpy(), g["eval_loss"].to_numpy()
        k_eff = float(np.median(b / (N * D)))
        best = int(np.argmin(L))
        params = {"c0": float(c0[j, 0]), "c1": float(c1[j, 0]), "c2": float(c2[j, 0])}
        samples = None
        if B and ok[j, 1:].any():
            samples = {n: arr[j, 1:][ok[j, 1:]] for n, arr in (("c0", c0), ("c1", c1), ("c2", c2))}
        x_j = X[j, :inf["m"]]
        resid = L - (params["c0"] + params["c1"] * x_j + params["c2"] * x_j ** 2)
        parabola = FittedLaw(
            PARABOLA, params, samples=samples, flop_convention="6ND", k=k,
            data={"n_points": int(inf["m"]), "target": "eval_loss", "ranges": {"x": [float(x_j.min()), float(x_j.max())]}},
            fit={"objective": "mse", "weighted": inf["weighted"],
                 "bootstrap": {"draws": B, "method": "runs resampled within the budget", "seed": int(seed)} if B else None},
            provenance={"citation": PARABOLA.citation, "equation": PARABOLA.formula,
                        "notes": f"budget C = {b:.6g} FLOPs; x = ln(N / {inf['n_ref']:.6g})"},
            residuals=resid)
        n_opt = float(np.exp(log_n[j, 0])) if convex[j, 0] else float("nan")
        loss_opt = float(lv[j, 0]) if convex[j, 0] else float("nan")
        d_opt = b / (k_eff * n_opt) if convex[j, 0] else float("nan")
        valid_b = inside[j, 1:]
        span = float(np.log(N.max() / N.min()))
        if inside[j, 0]:
            suggestion = {"direction": None, "n_center": n_opt}
        else:
            toward_small = (convex[j, 0] and n_opt < N.min()) or (not convex[j, 0] and N[best] == N.min())
            edge = N.min() if toward_small else N.max()
            guess = n_opt if convex[j, 0] else float("nan")
            limit = edge * math.exp((-1 if toward_small else 1) * span / 2)
            if not np.isfinite(guess) or (toward_small and guess < limit) or (not toward_small and guess > limit):
                guess = limit
            suggestion = {"direction": "smaller" if toward_small else "larger", "n_center": float(guess)}
        results.append(dict(
            budget=float(b), n_runs=int(len(g)), n_sizes=int(len(inf["sizes"])),
            n_range=(float(N.min()), float(N.max())), n_ref=inf["n_ref"], coefficients=params,
            convex=bool(convex[j, 0]), minimum_inside=bool(inside[j, 0]), n_opt=n_opt,
            n_opt_interval=_interval(np.exp(log_n[j, 1:][valid_b]), level) if B else None,
            d_opt=float(d_opt), loss_opt=loss_opt,
            loss_opt_interval=_interval(lv[j, 1:][valid_b], level) if B else None,
            tokens_per_param=float(d_opt / n_opt) if convex[j, 0] else float("nan"), k_effective=k_eff,
            best_run={"n_params": float(N[best]), "tokens": float(D[best]), "eval_loss": float(L[best])},
            weighted=inf["weighted"], used_in_fit=False, suggestion=suggestion,
            bootstrap_valid_fraction=float(valid_b.mean()) if B else None,
            residual_rms=float(np.sqrt(np.mean(resid ** 2))), sizes=N.tolist(), losses=L.tolist(),
            parabola=parabola))
    return budgets, results, log_n, lv, inside


def isoflop_minima(runs, *, columns: Mapping[str, str] | None = None, flop_convention: str = "6ND",
                   k: float | None = None, bootstrap: int = 0, seed: int = 0, level: float = 0.95,
                   drop_small_budgets: bool = False) -> list[BudgetMinimum]:
    """The per-budget parabola minima only (cheap): what a grid harness needs to re-centre budgets.

    Each `BudgetMinimum` says whether its minimum lies inside the sampled sizes
    (``minimum_inside``) and, when not, which way to move the grid (``suggestion``).
    """
    k_val, _ = flop_k(flop_convention, k)
    prep = _prepare_runs(runs, columns, drop_small_budgets=drop_small_budgets)
    _, results, _, _, _ = _minima(prep, k_val, bootstrap, seed, level)
    return [BudgetMinimum(**r) for r in results]


def _check_common(bootstrap, level):
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative int, got {bootstrap!r}")
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _power_laws(C: np.ndarray, N: np.ndarray, D: np.ndarray, L: np.ndarray, w: np.ndarray | None,
                C_draws_w: np.ndarray | None, N_draws, D_draws, L_draws, *, conv: str, k: float | None,
                approach: int, boot_info: dict | None, offset: bool, notes_extra: str = ""):
    """Fit N_opt(C), D_opt(C) (pure power laws) and L_opt(C) (with offset or pure) plus draws."""
    prov = {"notes": f"Approach {approach} ({APPROACH_NAMES[approach]}): x = compute C in FLOPs "
                     f"({conv}); {notes_extra}".strip()}
    pure = get("pure_power_law")
    laws = []
    for what, y, draws in (("N_opt", N, N_draws), ("D_opt", D, D_draws)):
        laws.append(_fit_law(pure, "mse_log", {"x": C}, y, weights=w, y_draws=draws, w_draws=C_draws_w,
                             flop_convention=conv, k=k, bootstrap_info=boot_info,
                             provenance={**prov, "target": f"{what} (y)", "citation": HOFFMANN_CITATION}))
    loss_law = get("power_law") if offset else pure
    laws.append(_fit_law(loss_law, "mse_log", {"x": C}, L, weights=w, y_draws=L_draws, w_draws=C_draws_w,
                         flop_convention=conv, k=k, bootstrap_info=boot_info,
                         provenance={**prov, "target": "loss_opt (y)", "citation": HOFFMANN_CITATION}))
    return laws


def _exponents(n_law: FittedLaw, d_law: FittedLaw, loss_law: FittedLaw, level: float) -> Exponents:
    iv = lambda f, name: f.interval(name, level) if f.samples is not None else None  # noqa: E731
    extra = {}
    if loss_law is not None:
        name = "alpha" if "alpha" in loss_law.params else "b"
        extra["loss_exponent"] = {"law": loss_law.law.name, "param": name, "value": loss_law.params[name],
                                  "interval": iv(loss_law, name)}
    return Exponents(a=n_law.params["b"], a_interval=iv(n_law, "b"), b=d_law.params["b"],
                     b_interval=iv(d_law, "b"), level=level, extra=extra)


def _tokens_per_param(n_law, d_law, Cs, level) -> list:
    out = []
    for C in np.atleast_1d(Cs):
        value = float(predict_band(d_law, C, level)[0] / predict_band(n_law, C, level)[0])
        interval = None
        if n_law.samples is not None and d_law.samples is not None:
            # pair the draws of the two laws (a draw whose refit failed has no sample)
            n_idx = getattr(n_law, "draw_index", None)
            d_idx = getattr(d_law, "draw_index", None)
            if n_idx is None or d_idx is None:
                n_idx = d_idx = np.arange(min(len(n_law.samples["b"]), len(d_law.samples["b"])))
            common, ni, di = np.intersect1d(n_idx, d_idx, return_indices=True)
            ns = n_law.samples["A"][ni] * C ** n_law.samples["b"][ni]
            ds = d_law.samples["A"][di] * C ** d_law.samples["b"][di]
            interval = _interval(ds / ns, level)
        out.append({"C": float(C), "value": value, "interval": interval})
    return out


def approach2(runs, *, columns: Mapping[str, str] | None = None, flop_convention: str = "6ND",
              k: float | None = None, bootstrap: int = 1000, seed: int = 0, level: float = 0.95,
              use_outside: bool = False, drop_small_budgets: bool = False,
              min_budgets_offset: int = MIN_BUDGETS_OFFSET) -> ApproachResult:
    """Approach 2 (isoFLOP profiles): a parabola per budget, then power laws in C of its minima.

    Args:
      runs: one row per run: ``budget`` (nominal C of the isoFLOP), ``n_params``, ``tokens``,
        ``eval_loss``; optional ``eval_loss_sem`` (weights), ``flops``, ``status`` (only
        "completed" rows are used), ``run_id``. ``columns`` maps these names to yours.
      flop_convention, k: how C relates to N and D (``C = k N D``), stored on the fitted laws.
      bootstrap: draws that resample runs within every budget (0: no intervals).
      use_outside: also fit budgets whose (convex) minimum lies outside the sampled sizes.
      drop_small_budgets: leave out budgets with fewer than 3 sizes instead of raising.
      min_budgets_offset: L_opt(C) gets an offset E (`power_law`) from this many budgets on,
        else it is a `pure_power_law`.
    """
    _check_common(bootstrap, level)
    k_val, conv = flop_k(flop_convention, k)
    prep = _prepare_runs(runs, columns, drop_small_budgets=drop_small_budgets)
    budgets, res, log_n, lv, inside = _minima(prep, k_val, bootstrap, seed, level)
    notes = []
    usable = np.array([r["minimum_inside"] or (use_outside and r["convex"]) for r in res])
    for r, u in zip(res, usable):
        r["used_in_fit"] = bool(u)
        if not r["minimum_inside"]:
            notes.append(f"budget {r['budget']:.4g}: minimum {'outside the sampled sizes' if r['convex'] else 'not found (parabola not convex)'}"
                         f" -> {'used' if u else 'left out of the power laws'}; suggestion: {r['suggestion']}")
    minima = [BudgetMinimum(**r) for r in res]
    C = budgets[usable]
    points = {"C": C, "N_opt": np.array([r["n_opt"] for r in res])[usable],
              "D_opt": np.array([r["d_opt"] for r in res])[usable],
              "loss_opt": np.array([r["loss_opt"] for r in res])[usable]}
    if usable.sum() < 2:
        notes.append(f"only {int(usable.sum())} budget(s) with a usable minimum: no power laws fitted; "
                     "widen or re-centre the grids (see each budget's suggestion)")
        return ApproachResult(2, APPROACH_NAMES[2], conv, None, None, None, None, points, [],
                              budgets=minima, notes=notes)
    if usable.sum() == 2:
        notes.append("only 2 budgets: the power laws pass exactly through both minima")
    offset = usable.sum() >= min_budgets_offset
    if not offset:
        notes.append(f"L_opt(C) is a pure power law (A C^b): {int(usable.sum())} budgets are too few to "
                     f"determine an offset (needs {min_budgets_offset})")
    k_eff = np.array([r["k_effective"] for r in res])[usable]
    draws = {}
    boot_info = None
    if bootstrap:
        valid = inside[usable][:, 1:].T if not use_outside else np.isfinite(log_n[usable][:, 1:]).T
        valid = valid & (valid.sum(axis=1, keepdims=True) >= 2)
        Nd = np.exp(np.where(valid, log_n[usable][:, 1:].T, 0.0))
        draws = {"w": valid.astype(float), "N": Nd, "D": C / (k_eff * Nd),
                 "L": np.where(valid, lv[usable][:, 1:].T, 1.0)}
        boot_info = {"method": "runs resampled within each budget; parabolas and power laws refitted",
                     "seed": int(seed), "draws_with_2plus_budgets": int(valid.any(axis=1).sum())}
    n_law, d_law, l_law = _power_laws(
        C, points["N_opt"], points["D_opt"], points["loss_opt"], None, draws.get("w"), draws.get("N"),
        draws.get("D"), draws.get("L"), conv=conv, k=k, approach=2, boot_info=boot_info, offset=offset,
        notes_extra="points: parabola minima of the isoFLOP curves")
    return ApproachResult(
        2, APPROACH_NAMES[2], conv, n_law, d_law, l_law, _exponents(n_law, d_law, l_law, level),
        points, _tokens_per_param(n_law, d_law, budgets, level), budgets=minima, notes=notes,
        bootstrap=boot_info)


# ----------------------------------------------------------------------------- Approach 3

def approach3(runs, *, columns: Mapping[str, str] | None = None, flop_convention: str = "6ND",
              k: float | None = None, bootstrap: int = 1000, seed: int = 0, level: float = 0.95,
              starts=None, delta: float = 1e-3) -> ApproachResult:
    """Approach 3: fit Chinchilla's L(N, D) to every completed run with `scaling.fit`, then its frontier.

    Huber (``delta``) on log loss from ``starts`` (default: the law's 4,500-start grid, Epoch AI's
    protocol; pass a smaller grid for speed). The frontier is exact (Hoffmann et al. Eq. 4):
    ``N_opt = G k^-a C^a``, ``D_opt = G^-1 k^-b C^b``, ``L_opt = E + (A G^-alpha + B G^beta) k^gamma C^-gamma``
    with a = beta/(alpha+beta), b = alpha/(alpha+beta), gamma = alpha beta/(alpha+beta); these are
    returned as `pure_power_law` / `power_law` FittedLaws whose samples are the transformed
    bootstrap draws of the parametric fit. A ``budget`` column is optional (it sets the C range).
    """
    _check_common(bootstrap, level)
    import scaling  # the public fit
    k_val, conv = flop_k(flop_convention, k)
    prep = _prepare_runs(runs, columns, need_budget=False)
    df = prep.df
    data = {"N": df["n_params"].to_numpy(), "D": df["tokens"].to_numpy(), "loss": df["eval_loss"].to_numpy()}
    param = scaling.fit("chinchilla", data, bootstrap=int(bootstrap), seed=seed, starts=starts, delta=delta,
                        flop_convention=flop_convention, k=k,
                        provenance={"notes": "Approach 3 of the isoFLOP analysis (scaling.isoflop)"})
    if "budget" in df:
        budgets = np.sort(df["budget"].unique())
    else:  # the runs' compute, C = flops or k N D, to 6 significant digits
        c = df["flops"].to_numpy() if "flops" in df else k_val * data["N"] * data["D"]
        budgets = np.unique(10 ** np.round(np.log10(c), 6))
    c_range = [float(budgets.min()), float(budgets.max())]

    def frontier(p):
        al, be = p["alpha"], p["beta"]
        a, b = be / (al + be), al / (al + be)
        g = (al * p["A"] / (be * p["B"])) ** (1.0 / (al + be))
        gamma = al * be / (al + be)
        return ({"A": g * k_val ** -a, "b": a}, {"A": k_val ** -b / g, "b": b},
                {"E": p["E"], "A": (p["A"] * g ** -al + p["B"] * g ** be) * k_val ** gamma, "alpha": gamma})

    if not (param.params["alpha"] > 0 and param.params["beta"] > 0):
        raise ValueError(f"Approach 3: the fitted exponents alpha = {param.params['alpha']:.4g}, beta = "
                         f"{param.params['beta']:.4g} are not both > 0, so L(N, D) has no compute-optimal "
                         "frontier; the grid does not constrain the parametric law (add budgets or sizes)")
    point = frontier(param.params)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):   # bad draws are dropped below
        sampled = frontier(param.samples) if param.samples is not None else (None, None, None)
    laws = []
    for name, law_name, pp, ss, eq in (
            ("N_opt", "pure_power_law", point[0], sampled[0], "N_opt = G (C/k)^a, a = beta/(alpha+beta)"),
            ("D_opt", "pure_power_law", point[1], sampled[1], "D_opt = G^-1 (C/k)^b, b = alpha/(alpha+beta)"),
            ("loss_opt", "power_law", point[2], sampled[2],
             "L_opt = E + (A G^-alpha + B G^beta) (C/k)^-gamma, gamma = alpha beta/(alpha+beta)")):
        if ss is not None:
            keep = np.all([np.isfinite(v) for v in ss.values()], axis=0)
            keep &= ss["A"] > 0
            ss = {n: v[keep] for n, v in ss.items()}
        laws.append(FittedLaw(
            law_name, {n: float(v) for n, v in pp.items()}, samples=ss, flop_convention=flop_convention, k=k,
            data={"n_points": int(len(df)), "ranges": {"x": c_range}, "target": name},
            fit={"objective": "derived from the chinchilla fit", "bootstrap": (param.fit or {}).get("bootstrap")},
            provenance={"citation": HOFFMANN_CITATION + ".3, Eq. 4", "equation": eq,
                        "notes": f"Approach 3 frontier of the fitted L(N, D) (G = (alpha A / (beta B))^(1/(alpha+beta))); "
                                 f"x = compute C in FLOPs ({conv})"}))
    n_law, d_law, l_law = laws
    ex = _exponents(n_law, d_law, None, level)
    for name in ("alpha", "beta", "E"):
        ex.extra[name] = {"value": param.params[name],
                          "interval": param.interval(name, level) if param.samples is not None else None}
    ex.extra["loss_exponent"] = {"law": "power_law", "param": "alpha", "value": l_law.params["alpha"],
                                 "interval": l_law.interval("alpha", level) if l_law.samples is not None else None}
    ex.extra["relations"] = "a = beta/(alpha+beta), b = alpha/(alpha+beta) (Hoffmann et al. 2022, Eq. 4)"
    points = {"C": budgets, "N_opt": predict_band(n_law, budgets)[0], "D_opt": predict_band(d_law, budgets)[0],
              "loss_opt": predict_band(l_law, budgets)[0]}
    tpp = _tokens_per_param(n_law, d_law, budgets, level)
    notes = []
    if param.fit and param.fit.get("n_starts_at_best", 0) < 2:
        notes.append("only one start reached the best objective: the optimum may be poorly determined")
    return ApproachResult(3, APPROACH_NAMES[3], conv, n_law, d_law, l_law, ex, points, tpp,
                          parametric=param, notes=notes, bootstrap=(param.fit or {}).get("bootstrap"))


# ----------------------------------------------------------------------------- Approach 1

def _smooth(logf: np.ndarray, y: np.ndarray, width: float) -> np.ndarray:
    """Centred moving average over a window of ``width`` in log10 FLOPs (0: no smoothing)."""
    if width <= 0 or len(y) < 3:
        return y
    lo = np.searchsorted(logf, logf - width / 2, "left")
    hi = np.searchsorted(logf, logf + width / 2, "right")
    cs = np.concatenate([[0.0], np.cumsum(y)])
    return (cs[hi] - cs[lo]) / (hi - lo)


def _prepare_curves(curves, columns, max_flops):
    df = _frame(curves, "curves")
    cmap = _column_map(columns, CURVE_COLUMNS, "curves")
    required = ["run_id", "n_params", "flops", "loss"]
    missing = [cmap[c] for c in required if cmap[c] not in df.columns]
    if missing:
        raise ValueError(f"curves: missing columns {missing} (available: {list(df.columns)}); "
                         "map names with columns={'loss': 'train_loss', ...}")
    N = _numeric(df, cmap["n_params"], "curves")
    f = _numeric(df, cmap["flops"], "curves")
    L = _numeric(df, cmap["loss"], "curves")
    T = _numeric(df, cmap["tokens"], "curves") if cmap["tokens"] in df.columns else None
    ids = df[cmap["run_id"]].astype(str).to_numpy()
    runs = []
    for rid in pd.unique(ids):
        m = ids == rid
        if np.unique(N[m]).size != 1:
            raise ValueError(f"curves: run {rid!r} has several n_params values {np.unique(N[m]).tolist()}")
        order = np.argsort(f[m], kind="stable")
        lf = np.log10(f[m][order])
        uniq, inv = np.unique(lf, return_inverse=True)
        loss = np.bincount(inv, L[m][order]) / np.bincount(inv)
        tok = None if T is None else np.bincount(inv, T[m][order]) / np.bincount(inv)
        if uniq.size < 2:
            raise ValueError(f"curves: run {rid!r} has {uniq.size} distinct FLOP value(s); a curve needs 2 or more")
        runs.append({"run_id": rid, "N": float(N[m][0]), "logf": uniq, "loss": loss, "tokens": tok})
    if max_flops is not None:
        runs = [r for r in runs if 10 ** r["logf"][-1] <= max_flops]
    if len({r["N"] for r in runs}) < 3:
        raise ValueError(f"curves: runs of {len({r['N'] for r in runs})} model size(s); the envelope needs at least 3")
    return runs


def approach1(curves, *, columns: Mapping[str, str] | None = None, flop_convention: str = "6ND",
              k: float | None = None, n_grid: int = 1500, smooth_dex: float = 0.05,
              exclude_boundary: bool = True, bootstrap: int = 200, seed: int = 0, level: float = 0.95,
              max_flops: float | None = None) -> ApproachResult:
    """Approach 1: the lower envelope of the loss-vs-FLOPs training curves, then power laws in C.

    Args:
      curves: one row per logged point: ``run_id``, ``n_params``, ``flops`` (cumulative training
        FLOPs), ``loss``; optional ``tokens`` (cumulative tokens; else D = C / (k N)).
      n_grid: log-spaced FLOP values of the envelope (Hoffmann et al.: 1500).
      smooth_dex: width of the centred moving average applied to each curve, in log10 FLOPs.
      exclude_boundary: leave out envelope points won by the smallest or the largest model size
        among the runs that reach that FLOP count (the optimum may lie beyond them).
      bootstrap: draws resampling whole runs with replacement (the envelope is recomputed).
      max_flops: use only runs whose last point is at most this many FLOPs (for held-out checks).
    """
    _check_common(bootstrap, level)
    if int(n_grid) < 10:
        raise ValueError(f"n_grid must be >= 10, got {n_grid}")
    k_val, conv = flop_k(flop_convention, k)
    runs = _prepare_curves(curves, columns, max_flops)
    R = len(runs)
    lo = min(r["logf"][0] for r in runs)
    hi = max(r["logf"][-1] for r in runs)
    grid = np.linspace(lo, hi, int(n_grid))
    Lmat = np.full((R, grid.size), np.inf)
    Tmat = np.full((R, grid.size), np.nan)
    sizes = np.array([r["N"] for r in runs])
    for i, r in enumerate(runs):
        inside = (grid >= r["logf"][0]) & (grid <= r["logf"][-1])
        Lmat[i, inside] = np.interp(grid[inside], r["logf"], _smooth(r["logf"], r["loss"], smooth_dex))
        if r["tokens"] is not None:
            Tmat[i, inside] = 10 ** np.interp(grid[inside], r["logf"], np.log10(r["tokens"]))
        else:
            Tmat[i, inside] = 10 ** grid[inside] / (k_val * r["N"])
    rng = np.random.default_rng(seed)
    B = int(bootstrap)
    include = np.ones((1 + B, R), bool)
    if B:
        include[1:] = rng.multinomial(R, np.full(R, 1.0 / R), size=B) > 0
    Nw = np.full((1 + B, grid.size), np.nan)
    Dw = np.full_like(Nw, np.nan)
    Lw = np.full_like(Nw, np.nan)
    valid = np.zeros_like(Nw, bool)
    for s in range(0, 1 + B, 16):
        inc = include[s:s + 16]
        Ls = np.where(inc[:, :, None], Lmat[None], np.inf)
        win = np.argmin(Ls, axis=1)
        lmin = np.take_along_axis(Ls, win[:, None, :], 1)[:, 0]
        ok = np.isfinite(lmin)
        n_win = sizes[win]
        if exclude_boundary:  # the winner must have a smaller and a larger competitor at that C
            cand = np.isfinite(Ls)
            smin = np.where(cand, sizes[None, :, None], np.inf).min(axis=1)
            smax = np.where(cand, sizes[None, :, None], -np.inf).max(axis=1)
            ok &= (n_win > smin) & (n_win < smax)
        Nw[s:s + 16] = n_win
        Dw[s:s + 16] = Tmat[win, np.arange(grid.size)[None, :]]
        Lw[s:s + 16] = lmin
        valid[s:s + 16] = ok
    distinct = np.array([np.unique(Nw[i][valid[i]]).size for i in range(1 + B)])
    if distinct[0] < 2:
        raise ValueError(f"curves: the envelope (away from the smallest and largest sizes) is won by "
                         f"{distinct[0]} model size(s); it needs at least 2 (add sizes or runs)")
    valid &= (distinct >= 2)[:, None]
    C = 10 ** grid
    v0 = valid[0]
    points = {"C": C[v0], "N_opt": Nw[0, v0], "D_opt": Dw[0, v0], "loss_opt": Lw[0, v0]}
    boot_info = None
    dw = dN = dD = dL = None
    # fit on grid points valid in the full data or in any draw (zero weight elsewhere)
    cols = v0 | valid[1:].any(axis=0) if B else v0
    w0 = v0[cols].astype(float)
    fill = lambda a, v: np.where(v, a, 1.0)  # noqa: E731
    if B:
        dw = valid[1:, cols].astype(float)
        dN, dD, dL = (fill(a[1:, cols], valid[1:, cols]) for a in (Nw, Dw, Lw))
        boot_info = {"method": "runs resampled with replacement; envelope and power laws recomputed",
                     "seed": int(seed)}
    n_law, d_law, l_law = _power_laws(
        C[cols], fill(Nw[0, cols], v0[cols]), fill(Dw[0, cols], v0[cols]), fill(Lw[0, cols], v0[cols]), w0,
        dw, dN, dD, dL, conv=conv, k=k, approach=1, boot_info=boot_info, offset=True,
        notes_extra=f"points: lower envelope of {R} training curves on {int(n_grid)} log-spaced FLOP values"
                    f"{', boundary sizes excluded' if exclude_boundary else ''}")
    for f in (n_law, d_law, l_law):  # the ranges the laws were fitted on: the envelope's valid points
        f.data["ranges"] = {"x": [float(points["C"].min()), float(points["C"].max())]}
        f.data["n_points"] = int(v0.sum())
    notes = [f"{int(v0.sum())} of {int(n_grid)} envelope points used; winning sizes: "
             f"{sorted({float(n) for n in points['N_opt']})}"]
    ref = np.unique(np.geomspace(points["C"].min(), points["C"].max(), 5))
    return ApproachResult(1, APPROACH_NAMES[1], conv, n_law, d_law, l_law, _exponents(n_law, d_law, l_law, level),
                          points, _tokens_per_param(n_law, d_law, ref, level), notes=notes,
                          bootstrap=boot_info)


# ----------------------------------------------------------------------------- extrapolation

def extrapolation_check(runs, curves=None, *, columns=None, curve_columns=None, flop_convention: str = "6ND",
                        k: float | None = None, approach3_starts=None, n_grid: int = 1500,
                        smooth_dex: float = 0.05, drop_small_budgets: bool = False,
                        approaches: Sequence[int] = (1, 2, 3)) -> ExtrapolationCheck:
    """Refit each approach without the largest budget and predict that budget's optimum.

    The reference is the held-out budget's parabola minimum when it lies inside its sampled sizes
    (``source = "parabola_minimum"``), else its best measured run (``"best_run"``). Errors are
    relative: ``prediction / reference - 1``. Approach 1 is refitted on the curves of the runs that
    end at or below the geometric mean of the two largest budgets (needs ``curves``).
    """
    prep = _prepare_runs(runs, columns, drop_small_budgets=drop_small_budgets)
    k_val, _ = flop_k(flop_convention, k)
    budgets = np.sort(prep.df["budget"].unique())
    if len(budgets) < 3:
        raise ValueError(f"extrapolation_check needs at least 3 budgets (fit on 2, hold out 1); got {len(budgets)}")
    held = float(budgets[-1])
    df_in = prep.df[prep.df["budget"] < held]
    df_out = prep.df[prep.df["budget"] == held]
    out_prep = _Runs(df_out, [], prep.has_sem)
    _, res_out, _, _, _ = _minima(out_prep, k_val, 0, 0, 0.95)
    r_out = res_out[0]
    if r_out["minimum_inside"]:
        reference = {"source": "parabola_minimum", "loss": r_out["loss_opt"], "n_opt": r_out["n_opt"]}
    else:
        reference = {"source": "best_run", "loss": r_out["best_run"]["eval_loss"],
                     "n_opt": r_out["best_run"]["n_params"]}
    predictions = {}

    def record(i, res):
        if res.n_opt_law is None or res.loss_opt_law is None:
            predictions[i] = {"skipped": "; ".join(res.notes) or "no power laws"}
            return
        n = float(predict_band(res.n_opt_law, held)[0])
        loss = float(predict_band(res.loss_opt_law, held)[0])
        predictions[i] = {"loss": loss, "n_opt": n, "loss_rel_error": loss / reference["loss"] - 1,
                          "n_opt_rel_error": n / reference["n_opt"] - 1}

    in_runs = df_in
    if 2 in approaches:
        try:
            record(2, approach2(in_runs, flop_convention=flop_convention, k=k, bootstrap=0))
        except ValueError as e:
            predictions[2] = {"skipped": str(e)}
    if 3 in approaches:
        try:
            record(3, approach3(in_runs, flop_convention=flop_convention, k=k, bootstrap=0,
                                starts=approach3_starts))
        except ValueError as e:
            predictions[3] = {"skipped": str(e)}
    if 1 in approaches:
        if curves is None:
            predictions[1] = {"skipped": "no training curves given"}
        else:
            try:
                record(1, approach1(curves, columns=curve_columns, flop_convention=flop_convention, k=k,
                                    n_grid=n_grid, smooth_dex=smooth_dex, bootstrap=0,
                                    max_flops=math.sqrt(held * budgets[-2])))
            except ValueError as e:
                predictions[1] = {"skipped": str(e)}
    return ExtrapolationCheck(held, [float(b) for b in budgets[:-1]], reference, predictions)


# ----------------------------------------------------------------------------- everything

def analyze(runs, curves=None, *, columns: Mapping[str, str] | None = None,
            curve_columns: Mapping[str, str] | None = None, flop_convention: str = "6ND",
            k: float | None = None, bootstrap: int = 1000, bootstrap_approach1: int = 200, seed: int = 0,
            level: float = 0.95, approach3_starts=None, n_grid: int = 1500, smooth_dex: float = 0.05,
            drop_small_budgets: bool = False, extrapolation: bool = True,
            approaches: Sequence[int] = (1, 2, 3)) -> IsoFlopAnalysis:
    """Run Approaches 1 (when ``curves`` are given), 2 and 3 and the extrapolation check.

    See `approach1`, `approach2`, `approach3` and `extrapolation_check` for the arguments.
    """
    _check_common(bootstrap, level)
    _, conv = flop_k(flop_convention, k)
    prep = _prepare_runs(runs, columns, drop_small_budgets=drop_small_budgets)
    clean = prep.df
    results = {}
    notes = []
    if 1 in approaches and curves is not None:
        results[1] = approach1(curves, columns=curve_columns, flop_convention=flop_convention, k=k, n_grid=n_grid,
                               smooth_dex=smooth_dex, bootstrap=bootstrap_approach1, seed=seed, level=level)
    elif 1 in approaches:
        notes.append("Approach 1 skipped: no training curves given")
    if 2 in approaches:
        results[2] = approach2(clean, flop_convention=flop_convention, k=k, bootstrap=bootstrap, seed=seed,
                               level=level)
    if 3 in approaches:
        results[3] = approach3(clean, flop_convention=flop_convention, k=k, bootstrap=bootstrap, seed=seed,
                               level=level, starts=approach3_starts)
    check = None
    if extrapolation:
        if clean["budget"].nunique() >= 3:
            check = extrapolation_check(clean, curves, curve_columns=curve_columns, flop_convention=flop_convention,
                                        k=k, approach3_starts=approach3_starts, n_grid=n_grid,
                                        smooth_dex=smooth_dex, approaches=approaches)
        else:
            notes.append("extrapolation check skipped: fewer than 3 budgets")
    return IsoFlopAnalysis(results, check, prep.excluded, conv, notes)
