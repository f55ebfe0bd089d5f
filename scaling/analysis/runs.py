"""Input tables of the isoFLOP analysis, validated: runs (one row per trained model) and curves.

Bad input raises ValueError naming the column and rows. Also `assign_budgets` (nominal isoFLOP
budgets for runs near a grid) and `effective_k` (the k of ``C = k N D`` the runs imply).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from scaling import io

RUN_COLUMNS = ("budget", "n_params", "tokens", "flops", "eval_loss", "eval_loss_sem", "status", "run_id")
CURVE_COLUMNS = ("run_id", "n_params", "flops", "loss", "tokens")
MIN_SIZES = 3            # distinct model sizes a parabola needs


def frame(data, what: str) -> pd.DataFrame:
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


def numeric(df: pd.DataFrame, col: str, what: str, *, positive: bool = True, allow_nan: bool = False):
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


def column_map(columns: Mapping[str, str] | None, known: Sequence[str], what: str) -> dict:
    columns = dict(columns or {})
    unknown = set(columns) - set(known)
    if unknown:
        raise ValueError(f"{what}: columns= maps unknown names {sorted(unknown)}; known: {list(known)}")
    return {c: columns.get(c, c) for c in known}


@dataclasses.dataclass
class Runs:
    df: pd.DataFrame          # canonical columns, completed rows only, float values
    excluded: list
    has_sem: bool


def prepare_runs(runs, columns=None, *, need_budget: bool = True, min_sizes: int = MIN_SIZES,
                  drop_small_budgets: bool = False) -> Runs:
    """Validate the runs table: returns the completed rows under canonical column names."""
    df = frame(runs, "runs")
    cmap = column_map(columns, RUN_COLUMNS, "runs")
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
            excluded.append({"row": io.jsonable(df.index[i]), "status": str(status.iloc[i]),
                             **{c: io.jsonable(row[cmap[c]]) for c in ("run_id", "budget", "n_params", "tokens")
                                if cmap[c] in df.columns},
                             "reason": "status is not 'completed'"})
        df = df[keep]
    if len(df) == 0:
        raise ValueError("runs: no completed runs")
    out = pd.DataFrame(index=df.index)
    for c in required:
        out[c] = numeric(df, cmap[c], "runs")
    for c in ("budget", "flops"):
        if c not in out and cmap[c] in df.columns:
            out[c] = numeric(df, cmap[c], "runs")
    if cmap["run_id"] in df.columns:
        out["run_id"] = df[cmap["run_id"]].astype(str).to_numpy()
    has_sem = cmap["eval_loss_sem"] in df.columns
    if has_sem:
        sem = numeric(df, cmap["eval_loss_sem"], "runs", positive=False, allow_nan=True)
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
                    excluded.append({"row": io.jsonable(idx), "budget": float(b), "n_params": float(row["n_params"]),
                                     "tokens": float(row["tokens"]), "reason": msg})
        out = out[keep_rows]
        n_budgets = out["budget"].nunique()
        if n_budgets < 2:
            raise ValueError(f"runs: {n_budgets} budget(s) with at least {min_sizes} sizes; the power laws "
                             "N_opt(C), D_opt(C) need at least 2 (3 or more recommended)")
    return Runs(out, excluded, has_sem)


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
    df = prepare_runs(runs, columns, need_budget=False).df
    c = df["budget"] if "budget" in df else df["flops"] if "flops" in df else None
    if c is None:
        raise ValueError("effective_k: runs need a 'budget' or a 'flops' column")
    return float(np.median(c.to_numpy() / (df["n_params"].to_numpy() * df["tokens"].to_numpy())))




def check_common(bootstrap, level):
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative int, got {bootstrap!r}")
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
