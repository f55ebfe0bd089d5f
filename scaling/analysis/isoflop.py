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
  the many small fits are batched so that they share one compiled executable
  (`scaling.fitting.fit_many`).

Modules: `scaling.analysis.runs` (input tables), `approach1`, `approach2`, `approach3`,
`power_laws` (the laws in C), `results` (dataclasses); this module adds `extrapolation_check` and
`analyze` and re-exports the rest (``scaling.isoflop`` is this module).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from scaling import flops
from scaling.analysis.approach1 import approach1
from scaling.analysis.approach2 import FIT_WINDOW, approach2, isoflop_minima, minima, select_points
from scaling.analysis.approach3 import approach3
from scaling.analysis.power_laws import MIN_BUDGETS_OFFSET
from scaling.analysis.results import (APPROACH_NAMES, ApproachResult, BudgetMinimum, Exponents, ExtrapolationCheck,
                                      IsoFlopAnalysis, predict_band)
from scaling.analysis.runs import (CURVE_COLUMNS, MIN_SIZES, RUN_COLUMNS, Runs, assign_budgets, check_common,
                                   effective_k, prepare_runs)
from scaling.laws.parabola import HOFFMANN_CITATION, PARABOLA

__all__ = ["APPROACH_NAMES", "ApproachResult", "BudgetMinimum", "CURVE_COLUMNS", "Exponents", "ExtrapolationCheck",
           "HOFFMANN_CITATION", "IsoFlopAnalysis", "MIN_BUDGETS_OFFSET", "MIN_SIZES", "PARABOLA", "RUN_COLUMNS",
           "FIT_WINDOW", "analyze", "approach1", "approach2", "approach3", "assign_budgets", "effective_k", "extrapolation_check",
           "isoflop_minima", "predict_band", "select_points"]


def extrapolation_check(runs, curves=None, *, columns=None, curve_columns=None, flop_convention: str | None = None,
                        k: float | None = None, approach3_starts=None, n_grid: int = 1500,
                        smooth_dex: float = 0.05, drop_small_budgets: bool = False,
                        approaches: Sequence[int] = (1, 2, 3),
                        fit_window: float | None = FIT_WINDOW) -> ExtrapolationCheck:
    """Refit each approach without the largest budget and predict that budget's optimum.

    The reference is the held-out budget's parabola minimum when it lies inside its sampled sizes
    (``source = "parabola_minimum"``), else its best measured run (``"best_run"``). Errors are
    relative: ``prediction / reference - 1``. Approach 1 is refitted on the curves of the runs that
    end at or below the geometric mean of the two largest budgets (needs ``curves``).
    """
    prep = prepare_runs(runs, columns, drop_small_budgets=drop_small_budgets)
    k_val, _ = flops.convention_k(flop_convention, k)
    budgets = np.sort(prep.df["budget"].unique())
    if len(budgets) < 3:
        raise ValueError(f"extrapolation_check needs at least 3 budgets (fit on 2, hold out 1); got {len(budgets)}")
    held = float(budgets[-1])
    df_in = prep.df[prep.df["budget"] < held]
    df_out = prep.df[prep.df["budget"] == held]
    out_prep = Runs(df_out, [], prep.has_sem)
    _, res_out, _, _, _ = minima(out_prep, k_val, 0, 0, 0.95, fit_window=fit_window)
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
            record(2, approach2(in_runs, flop_convention=flop_convention, k=k, bootstrap=0, fit_window=fit_window))
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


def analyze(runs, curves=None, *, columns: Mapping[str, str] | None = None,
            curve_columns: Mapping[str, str] | None = None, flop_convention: str | None = None,
            k: float | None = None, bootstrap: int = 1000, bootstrap_approach1: int = 200, seed: int = 0,
            level: float = 0.95, approach3_starts=None, n_grid: int = 1500, smooth_dex: float = 0.05,
            drop_small_budgets: bool = False, extrapolation: bool = True,
            approaches: Sequence[int] = (1, 2, 3), fit_window: float | None = FIT_WINDOW) -> IsoFlopAnalysis:
    """Run Approaches 1 (when ``curves`` are given), 2 and 3 and the extrapolation check.

    See `approach1`, `approach2`, `approach3` and `extrapolation_check` for the arguments.
    """
    check_common(bootstrap, level)
    _, conv = flops.convention_k(flop_convention, k)
    prep = prepare_runs(runs, columns, drop_small_budgets=drop_small_budgets)
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
                               level=level, fit_window=fit_window)
    if 3 in approaches:
        results[3] = approach3(clean, flop_convention=flop_convention, k=k, bootstrap=bootstrap, seed=seed,
                               level=level, starts=approach3_starts)
    check = None
    if extrapolation:
        if clean["budget"].nunique() >= 3:
            check = extrapolation_check(clean, curves, curve_columns=curve_columns, flop_convention=flop_convention,
                                        k=k, approach3_starts=approach3_starts, n_grid=n_grid,
                                        smooth_dex=smooth_dex, approaches=approaches, fit_window=fit_window)
        else:
            notes.append("extrapolation check skipped: fewer than 3 budgets")
    return IsoFlopAnalysis(results, check, prep.excluded, conv, notes)

