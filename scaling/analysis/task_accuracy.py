"""Two-step task prediction: (N, D) -> task loss -> accuracy, with bands through both steps.

Bhagia et al. 2024 ("Establishing Task Scaling Laws via Compute-Efficient Model Ladders",
arXiv:2412.04403) predict a task's accuracy in two steps, each a law fitted on small "ladder"
models:

1. **task loss from (N, D)**: a loss law (default ``chinchilla``, ``L = E + A/N^alpha + B/D^beta``)
   fitted to each run's task loss (the NLL of the correct answer), on the final checkpoints;
2. **accuracy from task loss**: ``accuracy_sigmoid`` (``Acc(L) = a / (1 + exp(-k (L - L0))) + b``),
   or Gadre et al. 2024's ``error_exponential`` (``Err(L) = eps - k exp(-gamma L)``), fitted over
   every checkpoint (intermediate ones included: they fill in the jump).

Both fits go through `scaling.fit` with a bootstrap. A prediction at (N, D) pushes step 1's
bootstrap draws of the task loss through step 2's bootstrap draws (draw i of step 1 with a
random draw of step 2, seeded): its band carries both steps' uncertainty
(``method="bootstrap_chained"``).

A study calls it with one table of (N, D, task_loss, accuracy) rows, one per checkpoint::

    tp = scaling.analysis.task_accuracy.fit_two_step(table, step1_rows=table["final"], bootstrap=200)
    value, lower, upper = tp.predict(N=7e9, D=4e12, level=0.95)
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from scaling.fitting.evaluate import evaluate
from scaling.fitting.fitted import Band, FittedLaw
from scaling.fitting.fitter import fit
from scaling.laws import law as law_lib

CHAINED = "bootstrap_chained"


@dataclasses.dataclass
class TwoStep:
    """Step 1 (``loss_fit``: task loss from N, D) and step 2 (``accuracy_fit``: accuracy or error
    from task loss), and predictions through both."""

    loss_fit: FittedLaw
    accuracy_fit: FittedLaw
    seed: int = 0

    @property
    def target(self) -> str:
        """What step 2 predicts: ``"accuracy"`` or ``"error"`` (the step-2 law's target)."""
        return self.accuracy_fit.law.target

    def predict_loss(self, N, D, level: float | None = None, extrapolate: bool = True):
        """Step 1 alone: the task loss at (N, D) (a `Band` with ``level``)."""
        return self.loss_fit.predict(**self._xy(N, D), level=level, extrapolate=extrapolate)

    def predict_from_loss(self, L, level: float | None = None):
        """Step 2 alone: accuracy (or error) at task loss ``L``."""
        return self.accuracy_fit.predict(L=L, level=level, extrapolate=True)

    def predict(self, N, D, level: float | None = None, extrapolate: bool = True):
        """Accuracy (or error) at (N, D) through both steps; with ``level``, a `Band` whose ends are
        percentiles of step 2's draws evaluated at step 1's draws of the task loss."""
        loss = self.predict_loss(N, D, extrapolate=extrapolate)
        value = np.asarray(self.accuracy_fit.predict(L=loss, extrapolate=True), np.float64)
        if level is None:
            return value
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        d1, m1 = self.loss_fit.draws()
        d2, m2 = self.accuracy_fit.draws()
        if d1 is None or d2 is None:
            return Band(_shaped(value), None, None, float(level), None)
        x = {c: np.asarray(v, np.float64)[None] for c, v in self._xy(N, D).items()}
        s1 = len(next(iter(d1.values())))
        s2 = len(next(iter(d2.values())))
        losses = evaluate(self.loss_fit.law, {n: np.asarray(v)[:, None] for n, v in d1.items()},
                          {c: v.reshape(1, -1) for c, v in x.items()})         # [S1, P]
        pick = np.random.default_rng(self.seed).integers(0, s2, size=s1)       # a step-2 draw per step-1 draw
        acc = evaluate(self.accuracy_fit.law, {n: np.asarray(v)[pick][:, None] for n, v in d2.items()},
                       {"L": losses})
        acc = np.where(np.isfinite(acc), acc, np.nan)
        lo, hi = np.nanpercentile(acc, [50 * (1 - level), 50 * (1 + level)], axis=0)
        shape = np.shape(value)
        return Band(_shaped(value), _shaped(lo.reshape(shape)), _shaped(hi.reshape(shape)), float(level),
                    CHAINED if (m1, m2) == ("bootstrap_percentile",) * 2 else f"{CHAINED} ({m1}, {m2})")

    def _xy(self, N, D) -> dict:
        n_cov, d_cov = self.loss_fit.law.covariates[:2]
        arrays = np.broadcast_arrays(np.asarray(N, np.float64), np.asarray(D, np.float64))
        return {n_cov: arrays[0].reshape(-1) if arrays[0].ndim else arrays[0],
                d_cov: arrays[1].reshape(-1) if arrays[1].ndim else arrays[1]}

    def to_dict(self) -> dict:
        return {"step1": self.loss_fit.to_dict(), "step2": self.accuracy_fit.to_dict(),
                "chaining": {"method": CHAINED, "seed": self.seed}}


def fit_two_step(data, *, loss_law="chinchilla", accuracy_law="accuracy_sigmoid",
                 columns: Mapping[str, str] | None = None, step1_rows=None, bootstrap: int = 200, seed: int = 0,
                 loss_fit_kwargs: Mapping | None = None, accuracy_fit_kwargs: Mapping | None = None) -> TwoStep:
    """Fit both steps on one table of checkpoints; see the module docstring.

    Args:
      data: DataFrame (or dict of arrays) with one row per checkpoint: N, D (tokens seen), the task
        loss and the accuracy (or error, for ``error_exponential``).
      loss_law: step 1's law of (N, D) (default ``chinchilla``).
      accuracy_law: step 2's law of the task loss L: ``accuracy_sigmoid`` or ``error_exponential``.
      columns: maps ``N``, ``D``, ``task_loss`` and ``accuracy`` / ``error`` to column names.
      step1_rows: boolean mask (or a column name) of the rows step 1 is fitted on (e.g. final
        checkpoints, whose learning rate was decayed); default every row.
      bootstrap, seed: both steps' bootstrap (the chained band needs it).
      loss_fit_kwargs, accuracy_fit_kwargs: more `scaling.fit` arguments per step (``starts``, ...).
    """
    columns = dict(columns or {})
    law1, law2 = law_lib.get(loss_law), law_lib.get(accuracy_law)
    if law1.allocation is None and len(law1.covariates) != 2:
        raise ValueError(f"fit_two_step: step 1 needs a loss law of (N, D), got {law1.name!r} of {law1.covariates}")
    if law2.covariates != ("L",):
        raise ValueError(f"fit_two_step: step 2 needs a law of the task loss L, got {law2.name!r} of {law2.covariates}")
    loss_col = columns.get("task_loss", "task_loss")
    target2 = columns.get(law2.target, law2.target)
    n = len(np.asarray(data[loss_col]))
    if isinstance(step1_rows, str):
        step1_rows = data[step1_rows]
    mask = np.ones(n, bool) if step1_rows is None else np.asarray(step1_rows, bool)
    if mask.shape != (n,):
        raise ValueError(f"fit_two_step: step1_rows must be a boolean mask of the {n} rows")
    n_col, d_col = (columns.get(c, c) for c in ("N", "D"))
    step1 = {law1.covariates[0]: np.asarray(data[n_col], np.float64)[mask],
             law1.covariates[1]: np.asarray(data[d_col], np.float64)[mask],
             law1.target: np.asarray(data[loss_col], np.float64)[mask]}
    step2 = {"L": np.asarray(data[loss_col], np.float64), law2.target: np.asarray(data[target2], np.float64)}
    loss_fit = fit(law1, step1, bootstrap=bootstrap, seed=seed, **dict(loss_fit_kwargs or {}))
    accuracy_fit = fit(law2, step2, bootstrap=bootstrap, seed=seed, **dict(accuracy_fit_kwargs or {}))
    return TwoStep(loss_fit=loss_fit, accuracy_fit=accuracy_fit, seed=seed)


def _shaped(arr):
    arr = np.asarray(arr, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


__all__ = ["CHAINED", "TwoStep", "fit_two_step"]
