"""Input checking of `scaling.fit`: the data table, weights and starts, validated into float64 arrays.

Bad input raises ValueError saying what and where (column, rows).
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np

from scaling.fitting.objectives import LOG_OBJECTIVES
from scaling.laws import law as law_lib

def _column(data, name: str, where: str) -> np.ndarray:
    try:
        values = np.asarray(data[name], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: column {name!r} is not numeric ({e})") from None
    if values.ndim != 1:
        raise ValueError(f"{where}: column {name!r} must be 1-D, got shape {values.shape}")
    return values


def _rows(mask) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:10])
    return f"rows [{shown}{', ...' if len(rows) > 10 else ''}]"


def prepare_data(law: law_lib.Law, data, target: str | None, columns: Mapping[str, str] | None,
                 objective: str):
    """Validate ``data`` and return ``(x {covariate: array}, y, target column name)`` in float64."""
    if not hasattr(data, "__getitem__") or isinstance(data, (str, bytes, np.ndarray)):
        raise ValueError(f"data must be a pandas DataFrame or a dict of arrays, got {type(data).__name__}")
    columns = dict(columns or {})
    unknown = set(columns) - set(law.covariates) - {law.target}
    if unknown:
        raise ValueError(f"columns maps unknown names {sorted(unknown)}; law {law.name!r} has covariates "
                         f"{list(law.covariates)} and target {law.target!r}")
    target_col = target or columns.get(law.target, law.target)
    wanted = {c: columns.get(c, c) for c in law.covariates}
    available = list(data.keys()) if hasattr(data, "keys") else list(data.columns)
    missing = [col for col in [*wanted.values(), target_col] if col not in available]
    if missing:
        raise ValueError(f"data is missing columns {missing} needed by law {law.name!r} "
                         f"(available: {available}); map names with columns={{...}} or target=...")
    x = {c: _column(data, col, "data") for c, col in wanted.items()}
    y = _column(data, target_col, "data")
    lengths = {col: len(v) for col, v in zip([*wanted.values(), target_col], [*x.values(), y])}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"data columns have different lengths: {lengths}")
    # the positivity rule follows the objective: the target must be > 0 only where logs of it are
    # taken (a log objective) or where the law says so (an explicit ``positive`` naming it)
    positive = set(law.positive_columns)
    if objective in LOG_OBJECTIVES:
        positive.add(law.target)
    elif law.positive is None:
        positive.discard(law.target)
    for name, values in [*x.items(), (law.target, y)]:
        col = wanted.get(name, target_col)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"data column {col!r} has {bad.sum()} non-finite values (NaN/inf) at {_rows(bad)}")
        if name in positive and (values <= 0).any():
            if name == law.target:
                why = (f"logs of it are taken by the {objective!r} objective; fit with objective='mse' or "
                       "'huber' for a target of any sign")
            else:
                why = (f"law {law.name!r} takes logs of its covariates by default; if it does not, build it "
                       f"with positive=() (or name the columns that must be > 0)")
            raise ValueError(f"data column {col!r} must be > 0 ({why}) but has "
                             f"{(values <= 0).sum()} non-positive values at {_rows(values <= 0)}")
    if len(y) < len(law.params):
        raise ValueError(f"law {law.name!r} has {len(law.params)} parameters but data has only {len(y)} points")
    return x, y, target_col


def point_weights(weights, data, n: int) -> np.ndarray:
    """Per-point weights [n] from None (ones), an array, or a column name of ``data``; validated."""
    if weights is None:
        return np.ones(n)
    if isinstance(weights, str):
        if weights not in data:
            raise ValueError(f"weights column {weights!r} is not in data")
        weights = data[weights]
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"weights must be numeric ({e})") from None
    if w.shape != (n,):
        raise ValueError(f"weights must have one value per point, shape ({n},), got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"weights have non-finite values at {_rows(~np.isfinite(w))}")
    if (w < 0).any():
        raise ValueError(f"weights must be >= 0, negative at {_rows(w < 0)}")
    if not (w > 0).any():
        raise ValueError("weights are all zero")
    return w


def starts_to_internal(law: law_lib.Law, starts) -> np.ndarray:
    """User starts (DataFrame, dict of arrays, or array [S, P] in law order; natural units) -> [S, P]."""
    names = law.param_names
    if hasattr(starts, "keys") or hasattr(starts, "columns"):
        keys = list(starts.columns) if hasattr(starts, "columns") else list(starts.keys())
        if set(keys) != set(names):
            raise ValueError(f"starts must give exactly the parameters {list(names)}, got {keys}")
        cols = [np.atleast_1d(np.asarray(starts[k], dtype=np.float64)) for k in names]
        try:
            arr = np.stack(np.broadcast_arrays(*cols), axis=-1)
        except ValueError:
            raise ValueError(f"starts columns have incompatible lengths {[len(c) for c in cols]}") from None
    else:
        arr = np.atleast_2d(np.asarray(starts, dtype=np.float64))
        if arr.ndim != 2 or arr.shape[1] != len(names):
            raise ValueError(f"starts array must have shape [starts, {len(names)}] (order {list(names)}), "
                             f"got {np.shape(starts)}")
    if arr.shape[0] == 0:
        raise ValueError("starts is empty")
    for j, p in enumerate(law.params):
        bad = [v for v in arr[:, j] if not p.contains(v)]
        if bad:
            raise ValueError(f"starts for {p.name!r} ({p.transform}) are outside its domain: {bad[:5]}")
    return np.stack([p.to_internal(arr[:, j]) for j, p in enumerate(law.params)], axis=-1)


def data_sha256(x: Mapping[str, np.ndarray], y: np.ndarray, target: str) -> str:
    """SHA-256 over the column names and float64 little-endian bytes, in sorted covariate order."""
    h = hashlib.sha256()
    for name in sorted(x):
        h.update(name.encode())
        h.update(np.ascontiguousarray(x[name], dtype="<f8").tobytes())
    h.update(target.encode())
    h.update(np.ascontiguousarray(y, dtype="<f8").tobytes())
    return h.hexdigest()


