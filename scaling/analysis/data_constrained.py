"""Data-constrained scaling (Muennighoff et al. 2023): fit, held-out checks, what repeating buys.

One analysis for the bundled published runs and for a study's own runs::

    from scaling import published
    from scaling.analysis import data_constrained as dc
    df = published.dataset("data_constrained_muennighoff2023")
    out = dc.analyze(df, columns=dc.PUBLISHED_COLUMNS, target="val_loss", bootstrap=200)
    out["params"]["R_D_star"]       # {"value", "interval", "published"}

The law is `scaling.laws` ``data_constrained``: L = E + A/N'^alpha + B/D'^beta with the effective
data D' = U + U R*_D (1 - exp(-R_D/R*_D)), R_D = D/U - 1, and the effective parameters N' alike
(R*_N). Two procedures (``procedure``):

- ``"two_stage"`` (the authors' two stages, but neither their stage-1 data nor their alpha = beta
  tie: see ``"muennighoff2023"``): E, A, B, alpha, beta from the single-epoch runs (Chinchilla's law, D <= U),
  then R*_D and R*_N from every run with those five held fixed. Each stage is bootstrapped by
  the engine (``bootstrap`` resamples); the law's draws pair stage-1 draw i with stage-2 draw i,
  and stage 2's own resamples are refitted at the stage-1 point estimate, so its intervals are
  conditional on stage 1 (narrower than a bootstrap of the whole procedure would be).
- ``"joint"``: all seven parameters at once from every run (one engine fit, its bootstrap).
- ``"muennighoff2023"``: the authors' fit as their code does it (datablations
  ``utils/parametric_fit.ipynb``, cells "FIT CHINCHILLA C4 ISOFLOP DOTS" and "Fit default", which
  the README names as the code of the paper's parametric fit and its Table 1; the paper's own text
  was not available here to check section numbers). Both stages minimize the sum of Huber
  (delta = 1e-3) losses of log-loss residuals with the law in log-sum-exp form (their loss:
  ``huber_loss(logsumexp(...), log(loss), delta=1e-3)``, L-BFGS from a grid of starts, best kept;
  here the engine, from the same grids). Stage 1: E, A, B and alpha = beta TIED (one exponent),
  from starts log A, log B in linspace(0, 25, 5), log E in linspace(-1, 1, 4), alpha in
  linspace(0, 2, 4). The authors fitted stage 1 on 54 points of Hoffmann et al.'s C4 isoFLOP
  curves (not their own runs; not bundled here), giving the published E, A, B, alpha = beta; pass
  ``base=`` (e.g. ``scaling.published.get("muennighoff2023").params``) to use given constants,
  else stage 1 is fitted on the table's single-epoch runs. Stage 2: R*_D and R*_N with the base
  fixed, from starts linspace(0, 20, 4) each without the 0 (a 0 start is NaN in their code), on
  the runs marked in the column ``in_authors_fit`` when the table has it (the bundled data set
  marks the 182 runs of the notebook's "outliers removed" dictionary), else on every run.

The held-out checks refit on part of the runs and predict the rest: without the highest-epoch
runs (``epochs >= held_out_epochs``), and without the largest unique-token budget. Each reports
the mean and largest relative error of the predicted loss and the fraction of held-out runs whose
loss lies inside the ``level`` band of the refit's draws (the band is the law's uncertainty only:
it holds no run-to-run noise, so coverage below ``level`` is expected for noisy runs).

What repeating buys: a repeated token's marginal worth relative to a fresh one is
exp(-R_D/R*_D) (the derivative of D' in D), so repeating pays half as much as fresh data after
``1 + R*_D ln 2`` epochs and a tenth after ``1 + R*_D ln 10``; D' never exceeds U (1 + R*_D).
`compute_optimal_for_u` gives the loss-minimizing (N, D, epochs = D/U) for budgets C at a fixed U.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import pandas as pd

from scaling.fitting import FittedLaw, fit
from scaling.laws import get
from scaling.laws.law import Law
from scaling.laws.loss import effective_sizes

PUBLISHED = {"R_D_star": 15.387756, "R_N_star": 5.309743}  # datablations README; paper App. A
PUBLISHED_DATASET = "data_constrained_muennighoff2023"
PUBLISHED_COLUMNS = {"N": "N", "D": "D_tokens", "U": "U_unique_tokens"}
BASE = ("E", "A", "B", "alpha", "beta")
DECAY = ("R_D_star", "R_N_star")
PROCEDURES = ("two_stage", "joint", "muennighoff2023")
# Stage 1's single-epoch runs: epochs = D/U up to 1.05, since a grid's whole steps read a little
# more or less than U (a study's 1-epoch runs measured 0.99 and 1.01)
SINGLE_EPOCH = 1.05
AUTHORS_COLUMN = "in_authors_fit"  # bundled data: 1 for the runs of the authors' stage 2
# The authors' starting grids (datablations utils/parametric_fit.ipynb; see the module docstring)
AUTHORS_STAGE1_STARTS = np.array([(math.exp(e), math.exp(a), math.exp(b), alpha)
                                  for a in np.linspace(0, 25, 5) for b in np.linspace(0, 25, 5)
                                  for e in np.linspace(-1, 1, 4) for alpha in np.linspace(0, 2, 4)])  # E, A, B, alpha
AUTHORS_STAGE2_STARTS = np.array([(rd, rn) for rd in np.linspace(0, 20, 4)[1:] for rn in np.linspace(0, 20, 4)[1:]])


def _columns(columns: Mapping[str, str] | None) -> dict:
    return {"N": "N", "D": "D", "U": "U", **dict(columns or {})}


def _table(df: pd.DataFrame, columns: Mapping[str, str] | None, target: str) -> pd.DataFrame:
    cols = _columns(columns)
    missing = [c for c in (*cols.values(), target) if c not in df]
    if missing:
        raise ValueError(f"data-constrained analysis: missing column(s) {missing}; have {list(df)}")
    out = pd.DataFrame({k: df[v].to_numpy(np.float64) for k, v in cols.items()})
    out["loss"] = df[target].to_numpy(np.float64)
    out["epochs"] = out["D"] / out["U"]
    return out


def _decay_law(base: Mapping[str, float]) -> Law:
    """The data-constrained law with E, A, B, alpha, beta fixed at ``base``: R*_D, R*_N free."""
    law = get("data_constrained")
    fixed = {k: float(base[k]) for k in BASE}

    def full(p):
        return {**{k: jnp.asarray(v) for k, v in fixed.items()}, **p}

    return Law(
        name="data_constrained_decay", params=tuple(p for p in law.params if p.name in DECAY),
        covariates=law.covariates, target=law.target,
        fn=lambda p, x: law.fn(full(p), x), log_fn=lambda p, x: law.log_fn(full(p), x),
        formula=law.formula + " (E, A, B, alpha, beta fixed)", citation=law.citation)


def _tied_chinchilla() -> Law:
    """Chinchilla's law with beta = alpha (the authors' stage 1): E, A, B, alpha free."""
    law = get("chinchilla")

    def full(p):
        return {**p, "beta": p["alpha"]}

    return Law(
        name="chinchilla_tied", params=tuple(p for p in law.params if p.name != "beta"),
        covariates=law.covariates, target=law.target,
        fn=lambda p, x: law.fn(full(p), x), log_fn=lambda p, x: law.log_fn(full(p), x),
        formula=law.formula + " with beta = alpha", citation=law.citation)


def huber_log_objective(params: Mapping[str, float], df: pd.DataFrame, *, target: str = "loss",
                        columns: Mapping[str, str] | None = None, delta: float = 1e-3) -> float:
    """Sum over runs of Huber_delta(log L_law - log L): the objective of both the engine's
    ``huber_log`` and the authors' code, at ``params`` (to compare optima of one objective)."""
    t = _table(df, columns, target)
    law = get("data_constrained")
    x = {c: jnp.asarray(t[c].to_numpy(np.float64)) for c in "NDU"}
    r = np.asarray(law.log_fn({k: jnp.asarray(float(v)) for k, v in params.items()}, x)) - np.log(t["loss"].to_numpy())
    a = np.abs(r)
    return float(np.sum(np.where(a < delta, 0.5 * r * r, delta * (a - 0.5 * delta))))


def _authors_fit(t: pd.DataFrame, base: Mapping[str, float] | None, args: dict) -> FittedLaw:
    """The ``"muennighoff2023"`` procedure (module docstring) on the table ``t``."""
    stage1 = None
    if base is None:
        single = t[t["epochs"] <= SINGLE_EPOCH]
        if len(single) < 5:
            raise ValueError(f"muennighoff2023 fit: {len(single)} single-epoch run(s); stage 1 (E, A, B, "
                             "alpha = beta) needs at least 5, or pass base=")
        stage1 = fit(_tied_chinchilla(), single[["N", "D", "loss"]], target="loss",
                     starts=AUTHORS_STAGE1_STARTS, **args)
        base = {**stage1.params, "beta": stage1.params["alpha"]}
    missing = [k for k in BASE if k not in base]
    if missing:
        raise ValueError(f"muennighoff2023 fit: base lacks {missing}")
    runs = t[t[AUTHORS_COLUMN] > 0] if AUTHORS_COLUMN in t else t
    if not (runs["epochs"] > SINGLE_EPOCH).any():
        raise ValueError("muennighoff2023 fit: no run repeats its data (every run has epochs <= 1)")
    stage2 = fit(_decay_law(base), runs[["N", "D", "U", "loss"]], target="loss", starts=AUTHORS_STAGE2_STARTS, **args)
    params = {**{k: float(base[k]) for k in BASE}, **{k: stage2.params[k] for k in DECAY}}
    samples = None
    if stage2.samples is not None:
        n = len(stage2.samples["R_D_star"])
        s1 = stage1.samples if stage1 is not None and stage1.samples is not None else None
        if s1 is not None:
            n = min(n, len(s1["alpha"]))
        samples = {k: (np.asarray(s1["alpha" if k == "beta" else k])[:n] if s1 is not None
                       else np.full(n, params[k])) for k in BASE}
        samples.update({k: np.asarray(stage2.samples[k])[:n] for k in DECAY})
    return FittedLaw("data_constrained", params, samples=samples, flop_convention="6N",
                     data={"ranges": {c: [float(runs[c].min()), float(runs[c].max())] for c in "NDU"},
                           "n_points": len(runs), "n_points_table": len(t)},
                     fit={"procedure": "muennighoff2023", "base": "fitted (stage 1)" if stage1 else "given",
                          "stage1": stage1.fit if stage1 else None, "stage2": stage2.fit,
                          "runs": f"column {AUTHORS_COLUMN}" if AUTHORS_COLUMN in t else "all"},
                     provenance={"analysis": "scaling.analysis.data_constrained",
                                 "procedure_source": "huggingface/datablations utils/parametric_fit.ipynb"})


def local_optimum(df: pd.DataFrame, base: Mapping[str, float], start: Mapping[str, float], *,
                  target: str = "loss", columns: Mapping[str, str] | None = None) -> dict:
    """Stage 2 of ``"muennighoff2023"`` solved locally from one ``start`` (R*_D, R*_N; no
    continuation, one start): the optimum of the basin the start lies in, and its objective.
    From the published point on the authors' runs it stays there: the published R*_D, R*_N are a
    local minimum of the authors' objective (see docs/studies/data_constrained.md)."""
    t = _table(df, columns, target)
    if AUTHORS_COLUMN in df:
        t = t[df[AUTHORS_COLUMN].to_numpy(np.float64) > 0]
    f = fit(_decay_law(base), t[["N", "D", "U", "loss"]], target="loss", continuation=False, refine_starts=0,
            starts=np.array([[float(start["R_D_star"]), float(start["R_N_star"])]]), threads=1)
    return {"R_D_star": float(f.params["R_D_star"]), "R_N_star": float(f.params["R_N_star"]),
            "objective": float(f.fit["objective_value"]), "n_points": len(t)}


def fit_law(df: pd.DataFrame, *, target: str = "loss", columns: Mapping[str, str] | None = None,
            procedure: str = "two_stage", bootstrap: int = 200, seed: int = 0,
            threads: int | None = None, base: Mapping[str, float] | None = None) -> FittedLaw:
    """The ``data_constrained`` law fitted to the runs of ``df`` (see the module docstring);
    ``base``: fixed E, A, B, alpha, beta for the ``"muennighoff2023"`` procedure only."""
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure={procedure!r}: one of {PROCEDURES}")
    if base is not None and procedure != "muennighoff2023":
        raise ValueError(f"base= is for procedure='muennighoff2023', not {procedure!r}")
    t = _table(df, columns, target)
    if AUTHORS_COLUMN in df:
        t[AUTHORS_COLUMN] = df[AUTHORS_COLUMN].to_numpy(np.float64)
    args = dict(bootstrap=bootstrap, seed=seed, threads=threads)
    if procedure == "joint":
        return fit("data_constrained", t[["N", "D", "U", "loss"]], target="loss", **args)
    if procedure == "muennighoff2023":
        return _authors_fit(t, base, args)
    single = t[t["epochs"] <= SINGLE_EPOCH]
    if len(single) < len(BASE) + 1:
        raise ValueError(f"two-stage fit: {len(single)} single-epoch run(s); stage 1 (E, A, B, alpha, "
                         f"beta) needs at least {len(BASE) + 1}")
    if len(t) == len(single):
        raise ValueError("two-stage fit: no run repeats its data (every run has epochs <= 1)")
    stage1 = fit("chinchilla", single[["N", "D", "loss"]], target="loss", **args)
    stage2 = fit(_decay_law(stage1.params), t[["N", "D", "U", "loss"]], target="loss", **args)
    params = {**{k: stage1.params[k] for k in BASE}, **{k: stage2.params[k] for k in DECAY}}
    samples = None
    if stage1.samples is not None and stage2.samples is not None:
        n = min(len(stage1.samples["E"]), len(stage2.samples["R_D_star"]))
        samples = {**{k: np.asarray(stage1.samples[k])[:n] for k in BASE},
                   **{k: np.asarray(stage2.samples[k])[:n] for k in DECAY}}
    return FittedLaw("data_constrained", params, samples=samples, flop_convention="6N",
                     data={"ranges": {c: [float(t[c].min()), float(t[c].max())] for c in "NDU"},
                           "n_points": len(t), "n_single_epoch": len(single)},
                     fit={"procedure": "two_stage", "stage1": stage1.fit, "stage2": stage2.fit},
                     provenance={"analysis": "scaling.analysis.data_constrained"})


def predict(fitted: FittedLaw, t: pd.DataFrame, level: float = 0.95) -> tuple[np.ndarray, ...]:
    """(prediction, band low, band high) of the loss at the rows of ``t`` (columns N, D, U)."""
    x = {c: jnp.asarray(t[c].to_numpy(np.float64)) for c in "NDU"}
    point = np.asarray(fitted.law.fn({k: jnp.asarray(v) for k, v in fitted.params.items()}, x))
    draws, _ = fitted.draws()
    if draws is None:
        return point, np.full_like(point, np.nan), np.full_like(point, np.nan)
    ys = np.asarray(fitted.law.fn({k: jnp.asarray(v)[:, None] for k, v in draws.items()},
                                  {c: v[None, :] for c, v in x.items()}))
    lo, hi = np.nanpercentile(ys, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return point, lo, hi


def interval(fitted: FittedLaw, name: str, level: float = 0.95) -> tuple[float, float] | None:
    """The percentile interval of a parameter over the fit's draws (None without draws)."""
    draws, _ = fitted.draws()
    if draws is None:
        return None
    v = np.asarray(draws[name], np.float64)
    lo, hi = np.nanpercentile(v, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def repetition_value(fitted: FittedLaw, level: float = 0.95) -> dict:
    """Epochs after which a repeated token is worth 1/2 and 1/10 of a fresh one, and the most
    effective data U of unique tokens can give (as a multiple of U), with intervals."""
    out = {}
    draws, _ = fitted.draws()
    for key, f in (("epochs_half_value", lambda r: 1 + r * math.log(2)),
                   ("epochs_tenth_value", lambda r: 1 + r * math.log(10)),
                   ("max_effective_data_over_u", lambda r: 1 + r)):
        value = f(fitted.params["R_D_star"])
        band = None
        if draws is not None:
            v = f(np.asarray(draws["R_D_star"], np.float64))
            band = tuple(float(b) for b in np.nanpercentile(v, [50 * (1 - level), 50 * (1 + level)]))
        out[key] = {"value": float(value), "interval": band}
    return out


def effective_data(fitted: FittedLaw, D, U) -> np.ndarray:
    """D' (effective tokens) for total tokens D and unique tokens U (broadcast), at the point fit."""
    D, U = np.broadcast_arrays(np.asarray(D, np.float64), np.asarray(U, np.float64))
    p = {k: jnp.asarray(v) for k, v in fitted.params.items()}
    _, d_eff = effective_sizes(p, {"N": jnp.ones_like(jnp.asarray(D)), "D": jnp.asarray(D),
                                   "U": jnp.asarray(U)})
    return np.asarray(d_eff)


def compute_optimal_for_u(fitted: FittedLaw, C: Sequence[float], U: float, level: float = 0.95) -> list[dict]:
    """Loss-minimizing N, D and epochs D/U for budgets ``C`` (C = 6 N D) at U unique tokens."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # outside the fitted range: said in the report
        opt = fitted.compute_optimal(np.asarray(C, np.float64), level=level, U=float(U))
    rows = []
    for i, c in enumerate(np.atleast_1d(opt["C"])):
        row = {"C": float(c), "U": float(U)}
        for key in ("N", "D", "loss"):
            row[key] = float(np.atleast_1d(opt[key])[i])
            band = opt.get(f"{key}_interval")
            row[f"{key}_interval"] = (None if band is None else
                                      (float(np.atleast_1d(band[0])[i]), float(np.atleast_1d(band[1])[i])))
        row["epochs"] = row["D"] / U
        row["epochs_interval"] = (None if row["D_interval"] is None else
                                  (row["D_interval"][0] / U, row["D_interval"][1] / U))
        rows.append(row)
    return rows


def held_out(df: pd.DataFrame, train: np.ndarray, *, name: str, level: float = 0.95, **fit_args) -> dict:
    """Refit on the rows where ``train`` is True, predict the others: errors and band coverage."""
    train = np.asarray(train, bool)
    target, columns = fit_args.pop("target", "loss"), fit_args.pop("columns", None)
    fitted = fit_law(df[train], target=target, columns=columns, **fit_args)
    t = _table(df[~train], columns, target)
    pred, lo, hi = predict(fitted, t, level)
    rel = (pred - t["loss"].to_numpy()) / t["loss"].to_numpy()
    inside = (t["loss"].to_numpy() >= lo) & (t["loss"].to_numpy() <= hi)
    return {"name": name, "n_fit": int(train.sum()), "n_held_out": int((~train).sum()),
            "mean_abs_rel_error": float(np.mean(np.abs(rel))),
            "max_abs_rel_error": float(np.max(np.abs(rel))),
            "coverage": float(np.mean(inside)) if np.isfinite(lo).all() else None, "level": level,
            "params": {k: float(fitted.params[k]) for k in DECAY},
            "rows": [{"N": float(r.N), "D": float(r.D), "U": float(r.U), "epochs": float(r.epochs),
                      "loss": float(r.loss), "predicted": float(p), "band": (float(a), float(b))}
                     for r, p, a, b in zip(t.itertuples(), pred, lo, hi)]}


def analyze(df: pd.DataFrame, *, target: str = "loss", columns: Mapping[str, str] | None = None,
            procedure: str = "two_stage", bootstrap: int = 200, seed: int = 0, level: float = 0.95,
            held_out_epochs: float | None = None, budgets: Sequence[float] = (), budget_u: float | None = None,
            threads: int | None = None, base: Mapping[str, float] | None = None) -> dict:
    """Fit, parameters beside the published ones, the two held-out checks, what repeating buys.

    With ``procedure="muennighoff2023"`` and a column ``in_authors_fit``, only the marked runs
    are analyzed (fitted, held out, counted); ``base`` as in `fit_law`.
    A held-out check whose refit fails (too few runs left) holds ``"error"`` instead of numbers.
    ``held_out_epochs``: runs with at least this many epochs are held out in the first check
    (default: 95% of the largest epoch count when the grid has at most 12 distinct counts, so
    runs a step short of it count too, else the 90th percentile). ``budgets`` and ``budget_u``: compute budgets (C = 6 N D) and the unique
    tokens at which `compute_optimal_for_u` is reported (default U: the largest of the runs).
    Returns plain JSON-ready values plus ``"fitted"`` (the `FittedLaw`).
    """
    if procedure == "muennighoff2023" and AUTHORS_COLUMN in df:
        df = df[df[AUTHORS_COLUMN].to_numpy(np.float64) > 0]
    args = dict(target=target, columns=columns, procedure=procedure, bootstrap=bootstrap, seed=seed,
                threads=threads, base=base)
    fitted = fit_law(df, **args)
    t = _table(df, columns, target)
    params = {}
    for k in fitted.params:
        params[k] = {"value": float(fitted.params[k]), "interval": interval(fitted, k, level)}
        if k in PUBLISHED:
            params[k]["published"] = PUBLISHED[k]
    epochs = t["epochs"].to_numpy()
    if held_out_epochs is None:
        distinct = np.unique(np.round(epochs, 1))  # a grid's epochs, up to the rounding of steps
        held_out_epochs = float(0.95 * distinct[-1] if len(distinct) <= 12 else np.quantile(epochs, 0.9))
    u = t["U"].to_numpy()
    checks = []
    for name, train in ((f"epochs >= {held_out_epochs:.3g} held out", epochs < held_out_epochs),
                        (f"largest unique-token budget ({u.max():.3g}) held out", u < u.max())):
        if not train.any() or train.all():
            continue
        try:
            checks.append(held_out(df, train, name=name, level=level, **args))
        except ValueError as err:  # too few runs left to refit: said, not raised
            checks.append({"name": name, "n_fit": int(train.sum()), "n_held_out": int((~train).sum()),
                           "error": str(err)})
    out = {"procedure": procedure, "n_runs": len(t), "level": level, "params": params,
           "objective": huber_log_objective(fitted.params, df, target=target, columns=columns),
           "held_out": checks, "repetition": repetition_value(fitted, level), "fitted": fitted}
    if len(budgets):
        out["compute_optimal"] = compute_optimal_for_u(fitted, budgets, budget_u or float(u.max()), level)
    return out
