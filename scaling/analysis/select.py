"""Choose among candidate laws by how well each extrapolates (`select`).

A law that fits the runs it was given can still extrapolate badly, and how badly is what a
scaling study needs to know. `select` refits every candidate on splits that each hold out one of
the largest levels of a covariate (budget, model size or token count) and train on every smaller
level, predicts the held-out rows, and ranks the candidates by extrapolation error:

- levels: the distinct values of the holdout covariate (``"budget"``: C, from a ``C`` column or
  ``k N D``; ``"size"``: N; ``"tokens"``: D; or any column name), grouped to 3 significant digits;
- splits: for each of the ``splits`` largest levels, train on all rows of smaller levels (so
  every prediction is an extrapolation, as the rung of a ladder is), test on the level's rows;
- error per split: the median absolute relative error ``|pred - y| / |y|`` on the held-out rows
  (``metric="median_abs_rel"``; ``"mean_abs_rel"`` and ``"rms_log"`` also exist);
- score: the median of the per-split errors, with their min and max (the spread across splits)
  and the median signed relative error (bias: > 0 over-predicts). Ties go to fewer parameters.

Li et al. 2025 ("(Mis)Fitting: A Survey of Scaling Laws"; arXiv number not verified here) show how much fitted
laws move with such choices; this makes the choice a measurement.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Mapping, Sequence

import numpy as np

from scaling.fitting.fitter import fit
from scaling.laws import law as law_lib

HOLDOUTS = {"budget": "C", "size": "N", "tokens": "D"}
METRICS = ("median_abs_rel", "mean_abs_rel", "rms_log")


@dataclasses.dataclass
class Selection:
    """What `select` found: the ranking ``table`` (a DataFrame), the ``chosen`` candidate's label,
    every split's errors (``splits``), and the candidates themselves (``candidates``: label ->
    (law, fit kwargs))."""

    table: "pandas.DataFrame"  # noqa: F821
    chosen: str
    splits: list
    candidates: dict
    holdout: str
    metric: str

    @property
    def chosen_law(self) -> law_lib.Law:
        return self.candidates[self.chosen][0]

    def fit_chosen(self, data, **kwargs):
        """The chosen law fitted on all of ``data`` (its own fit kwargs, then ``kwargs``)."""
        law, kw = self.candidates[self.chosen]
        return fit(law, data, **{**kw, **kwargs})

    def to_dict(self) -> dict:
        return {"holdout": self.holdout, "metric": self.metric, "chosen": self.chosen,
                "table": self.table.to_dict(orient="records"), "splits": self.splits}

    def markdown(self) -> str:
        """The ranking as a markdown table (for a study's report)."""
        lines = [f"| rank | law | params | {self.metric} (median over splits) | min | max | bias | failed |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in self.table.itertuples():
            lines.append(f"| {r.rank} | {r.law} | {r.n_params} | {r.score:.4g} | {r.split_min:.4g} | "
                         f"{r.split_max:.4g} | {r.bias:+.4g} | {r.failed} |")
        return "\n".join(lines) + f"\n\nChosen: **{self.chosen}** (held out: {self.holdout})."


def _candidates(candidates) -> dict:
    """label -> (Law, fit kwargs) from a list of laws/names/(law, kwargs), or a mapping."""
    items = candidates.items() if isinstance(candidates, Mapping) else [(None, c) for c in candidates]
    out = {}
    for label, spec in items:
        kwargs = {}
        if isinstance(spec, tuple):
            spec, kwargs = spec
        elif isinstance(spec, Mapping):
            kwargs = {k: v for k, v in spec.items() if k != "law"}
            spec = spec["law"]
        law = law_lib.get(spec)
        label = label or law.name
        if label in out:
            raise ValueError(f"select: two candidates named {label!r}; give a mapping label -> law")
        out[label] = (law, dict(kwargs))
    if len(out) < 1:
        raise ValueError("select: no candidates")
    return out


def _levels(data, holdout: str, columns: Mapping[str, str], k: float) -> tuple[np.ndarray, str]:
    name = HOLDOUTS.get(holdout, holdout)
    col = columns.get(name, name)
    available = list(data.keys()) if hasattr(data, "keys") else []
    if col in available:
        values = np.asarray(data[col], np.float64)
    elif name == "C" and all(columns.get(c, c) in available for c in ("N", "D")):
        values = k * np.asarray(data[columns.get("N", "N")], np.float64) * np.asarray(data[columns.get("D", "D")], np.float64)
        col = f"{k:g} N D"
    else:
        raise ValueError(f"select: holdout={holdout!r} needs a column {col!r} (or N and D for the budget); "
                         f"available: {available}")
    if not np.isfinite(values).all():
        raise ValueError(f"select: the holdout column {col!r} has non-finite values")
    # group to 3 significant digits (budgets computed as k N D are not exactly equal)
    with np.errstate(divide="ignore"):
        mag = np.where(values != 0, np.floor(np.log10(np.abs(values))), 0.0)
    return np.round(values / 10 ** mag, 2) * 10 ** mag, col


def _rows(data, mask):
    if hasattr(data, "iloc"):
        return data[mask].reset_index(drop=True)
    return {c: np.asarray(v)[mask] for c, v in data.items()}


def _target(law, kwargs, data):
    cols = kwargs.get("columns") or {}
    return np.asarray(data[kwargs.get("target") or cols.get(law.target, law.target)], np.float64)


def _error(pred, y, metric):
    with np.errstate(all="ignore"):
        rel = (pred - y) / np.abs(y)
        if metric == "median_abs_rel":
            e = np.median(np.abs(rel))
        elif metric == "mean_abs_rel":
            e = np.mean(np.abs(rel))
        else:
            e = np.sqrt(np.mean((np.log(pred) - np.log(y)) ** 2))
    return float(e) if np.isfinite(e) else np.inf, float(np.median(rel))


def select(candidates, data, holdout: str = "budget", *, splits: int = 3, min_train_levels: int = 3,
           metric: str = "median_abs_rel", columns: Mapping[str, str] | None = None, k: float = 6.0,
           **fit_kwargs) -> Selection:
    """Rank candidate laws by their error on held-out largest levels; see the module docstring.

    Args:
      candidates: laws (`Law` or registered names), ``(law, fit_kwargs)`` pairs, or a mapping
        label -> law / ``{"law": law, **fit_kwargs}`` (e.g. ``columns=`` for a law whose
        covariates are named differently, ``starts=`` for a faster fit).
      data: a DataFrame (or dict of arrays) of runs.
      holdout: ``"budget"`` (C, or k N D), ``"size"`` (N), ``"tokens"`` (D), or a column name.
      splits: how many of the largest levels are held out, one split each.
      min_train_levels: the fewest levels a split may train on.
      metric: the per-split error, one of `METRICS`.
      columns: maps N, D, C (and the laws' names, for every candidate) to column names.
      k: FLOPs per parameter per token, for the budget ``C = k N D`` without a C column.
      fit_kwargs: passed to every fit (a candidate's own kwargs win).

    Returns a `Selection`. Raises ValueError when the table has fewer than
    ``splits + min_train_levels`` distinct levels of the holdout covariate.
    """
    import pandas as pd
    if metric not in METRICS:
        raise ValueError(f"select: metric must be one of {METRICS}, got {metric!r}")
    if splits < 1 or min_train_levels < 1:
        raise ValueError(f"select: splits and min_train_levels must be >= 1, got {splits}, {min_train_levels}")
    columns = dict(columns or {})
    cands = _candidates(candidates)
    levels, col = _levels(data, holdout, columns, k)
    distinct = np.unique(levels)
    if len(distinct) < splits + min_train_levels:
        raise ValueError(
            f"select: holdout={holdout!r} needs at least splits + min_train_levels = {splits} + {min_train_levels} = "
            f"{splits + min_train_levels} distinct levels of {col!r}, the table has {len(distinct)} "
            f"({', '.join(f'{v:.3g}' for v in distinct)}); hold out fewer levels (splits=...) or hold out "
            "another covariate")
    held = distinct[-splits:]
    split_rows = []
    for level in held:
        train, test = levels < level, levels == level
        split_rows.append((float(level), train, test))
    records, per_split = [], []
    for label, (law, kw) in cands.items():
        kwargs = {**fit_kwargs, **kw}
        if columns and "columns" not in kw:
            kwargs["columns"] = {c: v for c, v in columns.items() if c in (*law.covariates, law.target)}
        errors, biases, failed, n_warn = [], [], 0, 0
        for level, train, test in split_rows:
            entry = {"law": label, "level": level, "n_train": int(train.sum()), "n_test": int(test.sum())}
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    fitted = fit(law, _rows(data, train), **kwargs)
                    test_data = _rows(data, test)
                    cols = kwargs.get("columns") or {}
                    x = {c: np.asarray(test_data[cols.get(c, c)], np.float64) for c in law.covariates}
                    pred = fitted.predict(**x, extrapolate=True)
                n_warn += len(caught)
                err, bias = _error(pred, _target(law, kwargs, test_data), metric)
                entry.update(error=err, bias=bias, params=dict(fitted.params), warnings=len(caught))
            except ValueError as e:
                failed += 1
                err, bias = np.inf, np.nan
                entry.update(error=None, bias=None, failure=str(e).splitlines()[0])
            errors.append(err)
            biases.append(bias)
            per_split.append(entry)
        errors = np.asarray(errors)
        records.append({"law": label, "n_params": len(law.params), "score": float(np.median(errors)),
                        "split_min": float(errors.min()), "split_max": float(errors.max()),
                        "bias": float(np.nanmedian(biases)) if np.isfinite(biases).any() else np.nan,
                        "failed": failed, "warnings": n_warn,
                        **{f"error@{level:.3g}": e for (level, _, _), e in zip(split_rows, errors)}})
    table = pd.DataFrame(records).sort_values(["score", "n_params"], kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return Selection(table=table, chosen=str(table["law"].iloc[0]), splits=per_split, candidates=cands,
                     holdout=f"{holdout} ({col}): the {splits} largest levels, one at a time", metric=metric)


__all__ = ["HOLDOUTS", "METRICS", "Selection", "select"]
