"""Results of the isoFLOP analysis: per-budget minima, each approach's laws, the whole analysis.

Dataclasses with ``to_dict()`` (plain JSON via `scaling.io`), and `predict_band`: a 1-covariate
law's prediction with a band over its bootstrap samples (`FittedLaw.predict` with ``level``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scaling import io
from scaling.fitting.fitted import FittedLaw

APPROACH_NAMES = {1: "minimum over training curves", 2: "isoFLOP profiles",
                  3: "parametric loss L(N, D)"}


def predict_band(fitted: FittedLaw, x, level: float = 0.95):
    """Point prediction and central ``level`` band of a 1-covariate law (`FittedLaw.predict` with
    ``level``: over its bootstrap draws; the analysis' laws carry no other kind).

    Returns ``(y, lo, hi)`` arrays shaped like x; lo/hi are None without samples.
    """
    cov = fitted.law.covariates[0]
    xs = np.asarray(x, np.float64)
    if fitted.samples is None:
        return fitted.predict(extrapolate=True, **{cov: xs}), None, None
    band = fitted.predict(level=level, extrapolate=True, **{cov: xs})
    shaped = lambda v: None if v is None else np.asarray(v, np.float64).reshape(xs.shape)  # noqa: E731
    return shaped(band.value), shaped(band.lower), shaped(band.upper)


def _convert(obj):
    """`scaling.io.jsonable`'s hook for the analysis' objects: a FittedLaw's summary, a dataclass's dict."""
    if isinstance(obj, FittedLaw):
        return law_summary(obj)
    if dataclasses.is_dataclass(obj):
        return obj.to_dict()
    raise ValueError(f"cannot convert a {type(obj).__name__} to JSON")


def jsonable(obj):
    """Plain JSON types (`scaling.io.jsonable`) with FittedLaws summarized and dataclasses as dicts."""
    return io.jsonable(obj, _convert)


def law_summary(f: FittedLaw | None) -> dict | None:
    if f is None:
        return None
    intervals = {n: (list(f.interval(n)) if f.samples is not None else None) for n in f.params}
    return {"law": f.law.name, "formula": f.law.formula, "params": dict(f.params), "intervals_95": intervals,
            "n_samples": None if f.samples is None else len(next(iter(f.samples.values()))),
            "flop_convention": f.flop_convention, "covariate_ranges": (f.data or {}).get("ranges"),
            "notes": (f.provenance or {}).get("notes")}


def percentile_interval(samples, level):
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
        return jsonable(dataclasses.asdict(self))


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
    used: list = dataclasses.field(default_factory=list, repr=False)    # which runs the parabola used
    fit_rule: str = ""                    # the rule that chose them (`scaling.analysis.approach2.select_points`)
    flags: list = dataclasses.field(default_factory=list)   # too wide / lopsided warnings

    def predict_loss(self, N) -> np.ndarray:
        """The fitted parabola's loss at model sizes N."""
        x = np.log(np.asarray(N, np.float64) / self.n_ref)
        c = self.coefficients
        return c["c0"] + c["c1"] * x + c["c2"] * x * x

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "parabola"}
        return jsonable(d)


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
        return jsonable({
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
        return jsonable(dataclasses.asdict(self))


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
        return jsonable(rows)

    def to_dict(self) -> dict:
        return jsonable({"approaches": {str(i): r for i, r in self.approaches.items()},
                          "exponents": self.exponents_table(), "extrapolation": self.extrapolation,
                          "excluded_runs": self.excluded_runs, "flop_convention": self.flop_convention,
                          "notes": self.notes})


