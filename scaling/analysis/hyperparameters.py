"""Optimal learning rate and batch size per cell of a hyperparameter sweep, and their laws.

A sweep's table has one row per run: the cell (``N`` non-embedding parameters, ``D`` tokens, and
any further grouping column, e.g. the parameterization), its peak learning rate ``lr``, its batch
``B`` (tokens per step) and its final held-out ``loss`` with the loss's standard error ``sem``.

Per cell and batch (`cell_optima`): the loss is a parabola in u = ln(lr / lr_ref) near its minimum,

    loss = c0 + c1 u + c2 u^2,   ln eta_opt = ln lr_ref - c1 / (2 c2),   L_opt = c0 - c1^2 / (4 c2)

(`scaling.laws.parabola`, the same parabola as an isoFLOP profile's), fitted by least squares
weighted by 1 / sem^2 on the grid points within ``fit_steps`` grid steps of the best measured one,
and refitted on ``bootstrap`` resamples of those runs (all parabolas, of the data and of every
draw, in one batched call of the engine, `scaling.fitting.fit_many`). The cell's batch optimum:
the batch with the lowest fitted L_opt, a batch whose rate optimum is flagged counting with its
best measured loss (its optimum is at most that: a smaller batch that measured lower is never
skipped for a larger one with an inside rate optimum); with three or more batches, the vertex of a
parabola in ln B through the per-batch (ln B, L_opt) (draw by draw). The cell's eta_opt is that of its best
batch.

Flags (`EDGE_FLAGS`): a cell whose best measured learning rate is the grid's first or last point,
or whose vertex falls outside the fitted points, or whose parabola is not convex, is flagged
"lr_edge_low" / "lr_edge_high" / "not_convex" and never used in a law fit; a best batch at the
smallest or largest batch is flagged "batch_edge_low" / "batch_edge_high" and left out of the
batch laws only.

Laws (`fit_laws`): eta_opt(N, D) = A N^b_N D^b_D (`power_law_2d`, the form of Li et al. 2025's
Step Law), eta_opt(C) = A C^b and B_opt(C) = A C^b (`pure_power_law`, DeepSeek-AI 2024 Eq. 1), and
B_opt(D) = A D^b (`pure_power_law` with x = D, Step Law's batch form), each weighted by the inverse
variance of the cell's ln optimum over its bootstrap draws and bootstrapped over cells. Each file
says what it predicts and from what (`describe`: provenance ``quantity`` and ``x``), so that
``--set lr=<file>`` can refuse a batch law (`experiments.runner.recipe.law_rule`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from scaling.fitting.batched import fit_many, natural_numpy
from scaling.laws.parabola import PARABOLA

COLUMNS = ("N", "D", "C", "lr", "B", "loss", "sem")
EDGE_FLAGS = ("lr_edge_low", "lr_edge_high", "not_convex", "too_few_points")
QUANTITIES = {"learning_rate": "peak learning rate", "batch_tokens": "batch size in tokens per step"}


def describe(quantity: str, x: str | None = None) -> dict:
    """The provenance entries that say what a fitted hyperparameter law predicts (``quantity``, one
    of `QUANTITIES`) and, for a one-covariate law, what its x is ("N", "D" or "C")."""
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity {quantity!r}: one of {sorted(QUANTITIES)}")
    out = {"quantity": quantity}
    if x is not None:
        if x not in ("N", "D", "C"):
            raise ValueError(f"x {x!r}: 'N', 'D' or 'C'")
        out["x"] = x
    return out


def check_table(t: pd.DataFrame, cell: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in (*COLUMNS, *cell) if c not in t.columns]
    if missing:
        raise ValueError(f"hyperparameter table: missing columns {missing} (found {list(t.columns)})")
    t = t.reset_index(drop=True)
    for c in ("N", "D", "lr", "B"):
        bad = ~(t[c].to_numpy(np.float64) > 0)
        if bad.any():
            raise ValueError(f"hyperparameter table: column {c} must be positive (row {int(np.flatnonzero(bad)[0])})")
    return t


def _group_keys(cell):
    return [*cell, "B"]


def cell_optima(t: pd.DataFrame, *, cell: Sequence[str] = ("N", "D"), fit_steps: int = 2,
                bootstrap: int = 200, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per (cell, batch) parabolas and per-cell optima (see the module docstring).

    Returns ``(per_batch, cells, draws)``: ``per_batch`` one row per (cell, B): lr_opt with its
    95% interval, L_opt, best measured lr and loss, flags, the grid's range and step; ``cells``
    one row per cell: N, D, C, lr_opt (its best batch's) with interval and ``sd_log_lr``, B_opt with
    interval and ``sd_log_B``, L_best (the best measured loss), basin (the lr range within 1% of
    the best loss), flags, usable_lr / usable_batch; ``draws`` {cell key: {"log_lr": [B],
    "log_B": [B]}}."""
    cell = list(cell)
    t = check_table(t, cell)
    groups = list(t.groupby(_group_keys(cell), sort=True))
    if not np.isfinite(t["loss"].to_numpy(np.float64)).any():
        raise ValueError("hyperparameter table: no finished runs")
    rng = np.random.default_rng(seed)
    R = int(bootstrap)
    prepared = []
    for key, g in groups:
        g = g.sort_values("lr")
        lrs = np.unique(g["lr"].to_numpy(np.float64))  # the whole grid, diverged rates (NaN loss) included
        g = g[np.isfinite(g["loss"].to_numpy(np.float64))]
        if g.empty:
            continue
        # the best measured rate: the lowest mean loss over a rate's runs (seeds); NaN: diverged
        mean_loss = g.groupby("lr")["loss"].mean().reindex(lrs).to_numpy()
        best = int(np.nanargmin(mean_loss))
        near = (np.abs(np.arange(len(lrs)) - best) <= fit_steps) & np.isfinite(mean_loss)
        chosen = g[g["lr"].isin(lrs[near])]
        lr_ref = float(np.exp(np.mean(np.log(lrs[near]))))
        u = np.log(chosen["lr"].to_numpy(np.float64) / lr_ref)
        y = chosen["loss"].to_numpy(np.float64)
        sem = chosen["sem"].to_numpy(np.float64)
        base = 1.0 / sem ** 2 if np.all(np.isfinite(sem) & (sem > 0)) else np.ones(len(y))
        base = base / base.mean()
        m = len(y)
        counts = np.ones((1 + R, m))
        if R:
            counts[1:] = rng.multinomial(m, np.full(m, 1.0 / m), size=R)
        # a resample needs three distinct rates for a parabola
        rate_of = np.searchsorted(lrs[near], chosen["lr"].to_numpy(np.float64))
        prepared.append(dict(key=key, g=g, lrs=lrs, mean_loss=mean_loss, best=best, near=near, lr_ref=lr_ref,
                             u=u, y=y, w=counts * base, rate_of=rate_of, m=m))
    n_max = max(p["m"] for p in prepared)
    J = len(prepared)
    X, Y, W = np.zeros((J, n_max)), np.ones((J, n_max)), np.zeros((J, 1 + R, n_max))
    for j, p in enumerate(prepared):
        X[j, :p["m"]], Y[j, :p["m"]], W[j, :, :p["m"]] = p["u"], p["y"], p["w"]
    z0 = np.zeros((J * (1 + R), 3))
    z0[:, 0] = np.repeat([p["y"].mean() for p in prepared], 1 + R)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z, _, ok, _ = fit_many(PARABOLA, "mse", {"x": np.repeat(X[:, None], 1 + R, 1).reshape(-1, n_max)},
                               np.repeat(Y[:, None], 1 + R, 1).reshape(-1, n_max), W.reshape(-1, n_max), z0)
    c = {k: v.reshape(J, 1 + R) for k, v in natural_numpy(PARABOLA, z).items()}
    ok = ok.reshape(J, 1 + R)
    rows, log_lr_draws, lopt_draws = [], [], []
    for j, p in enumerate(prepared):
        distinct = np.array([(np.bincount(p["rate_of"], weights=p["w"][r], minlength=p["near"].sum()) > 0).sum()
                             for r in range(1 + R)])
        c0, c1, c2 = c["c0"][j], c["c1"][j], c["c2"][j]
        convex = ok[j] & (c2 > 0) & (distinct >= 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.where(convex, -c1 / (2 * c2), np.nan)
            lv = np.where(convex, c0 - c1 * c1 / (4 * c2), np.nan)
        lo, hi = p["u"].min(), p["u"].max()
        inside = convex & (uv >= lo - 1e-9) & (uv <= hi + 1e-9)
        log_lr = np.where(inside, uv + math.log(p["lr_ref"]), np.nan)
        flags = []
        if p["best"] == 0:
            flags.append("lr_edge_low")
        if p["best"] == len(p["lrs"]) - 1:
            flags.append("lr_edge_high")
        if not flags and not convex[0]:
            flags.append("not_convex" if distinct[0] >= 3 else "too_few_points")
        if not flags and not inside[0]:
            flags.append("lr_edge_low" if uv[0] < lo else "lr_edge_high")
        draws = log_lr[1:][np.isfinite(log_lr[1:])]
        interval = (float(np.exp(np.percentile(draws, 2.5))), float(np.exp(np.percentile(draws, 97.5)))) \
            if len(draws) >= 10 else None
        g = p["g"]
        best_loss = float(p["mean_loss"][p["best"]])
        with np.errstate(invalid="ignore"):
            within = p["lrs"][p["mean_loss"] <= best_loss * 1.01]
        step = float(np.exp(np.mean(np.diff(np.log(p["lrs"]))))) if len(p["lrs"]) > 1 else math.nan
        rows.append({**dict(zip(_group_keys(cell), p["key"])), "C": float(g["C"].iloc[0]),
                     "lr_opt": float(np.exp(log_lr[0])) if np.isfinite(log_lr[0]) else math.nan,
                     "lr_lo": interval[0] if interval else math.nan, "lr_hi": interval[1] if interval else math.nan,
                     "sd_log_lr": float(np.std(draws)) if len(draws) >= 10 else math.nan,
                     "L_opt": float(lv[0]) if np.isfinite(lv[0]) else math.nan,
                     "lr_best_measured": float(p["lrs"][p["best"]]), "L_best": best_loss,
                     "basin_lo": float(within.min()), "basin_hi": float(within.max()),
                     "grid_lo": float(p["lrs"][0]), "grid_hi": float(p["lrs"][-1]), "grid_step": step,
                     "n_fit": int(p["m"]), "draws_ok": int(len(draws)), "flags": ",".join(flags),
                     "c0": float(c0[0]), "c1": float(c1[0]), "c2": float(c2[0]), "lr_ref": p["lr_ref"],
                     "fit_lo": float(p["lrs"][p["near"]].min()), "fit_hi": float(p["lrs"][p["near"]].max())})
        log_lr_draws.append(log_lr[1:])
        lopt_draws.append(np.where(inside, lv, np.nan)[1:])
    per_batch = pd.DataFrame(rows)
    cells, draws = _cells(per_batch, cell, np.array(log_lr_draws), np.array(lopt_draws))
    return per_batch, cells, draws


def _cells(per_batch: pd.DataFrame, cell: list, log_lr_draws: np.ndarray, lopt_draws: np.ndarray):
    rows, draws = [], {}
    for key, g in per_batch.groupby(cell, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        idx = g.index.to_numpy()
        Bs = g["B"].to_numpy(np.float64)
        usable = g["flags"].to_numpy() == ""
        # the best batch: the lowest L_opt of a batch with an inside optimum, or the best measured loss
        # of a flagged one (its own optimum is at most that): a smaller batch whose rates ran off the
        # grid but measured lower still is the best batch (flagged), never skipped for a larger one
        score = np.where(usable, g["L_opt"].to_numpy(), g["L_best"].to_numpy())
        b = int(np.argmin(score))
        row = g.iloc[b]
        flags = [f for f in row["flags"].split(",") if f]
        log_B, log_B_draws, sd_B = math.log(Bs[b]), np.full(log_lr_draws.shape[1], math.log(Bs[b])), math.nan
        if len(Bs) >= 2 and b == 0:
            flags.append("batch_edge_low")
        elif len(Bs) >= 2 and b == len(Bs) - 1:
            flags.append("batch_edge_high")
        elif len(Bs) >= 3 and usable[b - 1:b + 2].all():
            # the vertex of the parabola in ln B through the best batch and its neighbours, per draw
            lb = np.log(Bs[b - 1:b + 2])
            log_B = _vertex(lb, g["L_opt"].to_numpy()[b - 1:b + 2][None])[0]
            lsd = lopt_draws[idx[b - 1:b + 2]].T
            log_B_draws = _vertex(lb, lsd)
            finite = log_B_draws[np.isfinite(log_B_draws)]
            sd_B = float(np.std(finite)) if len(finite) >= 10 else math.nan
        lrd = log_lr_draws[idx[b]]
        finite = lrd[np.isfinite(lrd)]
        lr_flagged = any(f in EDGE_FLAGS for f in flags)
        rows.append({**dict(zip(cell, key)), "C": float(row["C"]), "lr_opt": float(row["lr_opt"]),
                     "lr_lo": float(row["lr_lo"]), "lr_hi": float(row["lr_hi"]), "sd_log_lr": float(row["sd_log_lr"]),
                     "B_opt": float(math.exp(log_B)), "B_lo": float(np.exp(np.nanpercentile(log_B_draws, 2.5)))
                     if np.isfinite(log_B_draws).sum() >= 10 else math.nan,
                     "B_hi": float(np.exp(np.nanpercentile(log_B_draws, 97.5)))
                     if np.isfinite(log_B_draws).sum() >= 10 else math.nan, "sd_log_B": sd_B,
                     "B_best_measured": float(Bs[int(np.argmin(g["L_best"].to_numpy()))]),
                     "L_best": float(g["L_best"].min()), "basin_lo": float(row["basin_lo"]),
                     "basin_hi": float(row["basin_hi"]), "grid_lo": float(row["grid_lo"]),
                     "grid_hi": float(row["grid_hi"]), "grid_step": float(row["grid_step"]),
                     "flags": ",".join(flags), "usable_lr": not lr_flagged and np.isfinite(row["lr_opt"]),
                     "usable_batch": not flags and len(Bs) >= 3})
        draws[key] = {"log_lr": lrd, "log_B": log_B_draws}
    return pd.DataFrame(rows), draws


def _vertex(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The vertex of the parabola through three points (x [3]; y [R, 3]) per row; NaN when it is
    not convex or falls outside [x0, x2]."""
    A = np.vander(x, 3)  # columns x^2, x, 1
    coef = np.linalg.solve(A, y.T)  # [3, R]
    a, b = coef[0], coef[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(a > 0, -b / (2 * a), np.nan)
    return np.where((v >= x[0]) & (v <= x[-1]), v, np.nan)


def move_grid_hint(row) -> str:
    """How to move a flagged cell's grid (one line)."""
    flags = str(row["flags"]).split(",")
    step = row["grid_step"] if math.isfinite(row["grid_step"]) else 2.0
    if "lr_edge_high" in flags:
        return (f"the best rate is the grid's highest ({row['grid_hi']:.3g}): move the grid up, e.g. "
                f"--set lr_scale=<current x {step ** 2:.3g}>")
    if "lr_edge_low" in flags:
        return (f"the best rate is the grid's lowest ({row['grid_lo']:.3g}): move the grid down, e.g. "
                f"--set lr_scale=<current / {step ** 2:.3g}>")
    if "not_convex" in flags or "too_few_points" in flags:
        return "the losses near the best rate are not a convex parabola: widen the fit (--set fit_steps=3) or add seeds"
    if "batch_edge_low" in flags:
        return "the best batch is the smallest: add a smaller one (--set batches=...)"
    if "batch_edge_high" in flags:
        return "the best batch is the largest: add a larger one (--set batches=...)"
    return ""


def _weights(sd: np.ndarray) -> np.ndarray:
    """Inverse-variance weights of the cells' ln optima (the median variance where unknown)."""
    var = np.asarray(sd, np.float64) ** 2
    known = np.isfinite(var) & (var > 0)
    fill = float(np.median(var[known])) if known.any() else 1.0
    var = np.where(known, np.maximum(var, 1e-4), fill)
    w = 1.0 / var
    return w / w.mean()


def fit_law(law: str, x: dict, y: np.ndarray, sd: np.ndarray, *, bootstrap: int, seed: int, quantity: str,
            x_is: str | None, flop_convention: str | None = None, notes: str = ""):
    """One hyperparameter law through the engine (`scaling.fit`), weighted by 1 / var(ln optimum),
    bootstrapped over cells; the file says what it predicts (`describe`)."""
    import scaling

    data = {**{k: np.asarray(v, np.float64) for k, v in x.items()}, "y": np.asarray(y, np.float64),
            "w": _weights(sd)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return scaling.fit(law, data, "y", weights="w", bootstrap=bootstrap, seed=seed,
                           flop_convention=flop_convention,
                           provenance={**describe(quantity, x_is), "notes": notes.strip()})


LAW_SPECS = {  # name: (law, covariates {law covariate: cell column}, target column, sd column, quantity, x)
    "lr_optimum": ("power_law_2d", {"N": "N", "D": "D"}, "lr_opt", "sd_log_lr", "learning_rate", None),
    "lr_optimum_C": ("pure_power_law", {"x": "C"}, "lr_opt", "sd_log_lr", "learning_rate", "C"),
    "batch_optimum": ("pure_power_law", {"x": "D"}, "B_opt", "sd_log_B", "batch_tokens", "D"),
    "batch_optimum_C": ("pure_power_law", {"x": "C"}, "B_opt", "sd_log_B", "batch_tokens", "C"),
}


def fit_laws(cells: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0, flop_convention: str | None = None,
             names: Sequence[str] = tuple(LAW_SPECS), min_cells: int = 3) -> tuple[dict, list[str]]:
    """The laws of `LAW_SPECS` on the usable cells; returns ``({name: FittedLaw}, notes)``. A
    one-covariate law needs ``min_cells`` usable cells, `power_law_2d` one more (and two distinct
    values of each covariate); otherwise the law is a note."""
    if min_cells < 2:
        raise ValueError(f"min_cells={min_cells}: a power law needs at least 2 cells")
    laws, notes = {}, []
    for name in names:
        law, cov, target, sd, quantity, x_is = LAW_SPECS[name]
        use = cells[cells["usable_lr" if quantity == "learning_rate" else "usable_batch"]]
        need = min_cells + (1 if law == "power_law_2d" else 0)
        distinct = {c: use[col].nunique() for c, col in cov.items()}
        if len(use) < need or min(distinct.values(), default=0) < 2:
            notes.append(f"{name} not fitted: {len(use)} usable cells (needs {need}, with at least 2 distinct "
                         f"values of {', '.join(cov.values())}); flagged cells are never used")
            continue
        try:
            laws[name] = fit_law(law, {c: use[col] for c, col in cov.items()}, use[target].to_numpy(),
                                 use[sd].to_numpy(), bootstrap=bootstrap, seed=seed, quantity=quantity,
                                 x_is=x_is, flop_convention=flop_convention,
                                 notes=f"fitted on {len(use)} cells of a hyperparameter sweep")
        except ValueError as err:
            notes.append(f"{name} not fitted: {err}")
    return laws, notes


def interpolated_loss(per_batch_runs: pd.DataFrame, lr: float) -> float:
    """The loss at ``lr`` on one (cell, batch)'s measured curve: linear in ln lr between the two
    grid points around it (mean over seeds); NaN outside the grid."""
    curve = per_batch_runs.groupby("lr")["loss"].mean().sort_index().dropna()
    if curve.empty:
        return math.nan
    x = np.log(curve.index.to_numpy(np.float64))
    if not (x[0] <= math.log(lr) <= x[-1]):
        return math.nan
    return float(np.interp(math.log(lr), x, curve.to_numpy()))
