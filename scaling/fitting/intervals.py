"""Bootstrap confidence intervals: percentile, bias-corrected (BC) and BCa, with the jackknife for BCa.

For draws ``theta*_1..B`` of a parameter (bootstrap refits), its point estimate ``theta`` and a level
``1 - 2 alpha``:

- ``percentile``: the ``alpha`` and ``1 - alpha`` quantiles of the draws (Efron & Tibshirani 1993,
  "An Introduction to the Bootstrap", ch. 13).
- ``bca``, bias-corrected and accelerated (Efron 1987, "Better bootstrap confidence intervals",
  JASA 82:171; Efron & Tibshirani 1993, Sec. 14.3, Eqs. 14.10, 14.14, 14.15): the quantiles
  ``alpha_1, alpha_2`` of the draws, where::

      alpha_q = Phi(z0 + (z0 + z_q) / (1 - a (z0 + z_q))),   z_q = Phi^-1(alpha), Phi^-1(1 - alpha)
      z0 = Phi^-1(#{theta*_b < theta} / B)                          (bias correction)
      a  = sum_i d_i^3 / (6 (sum_i d_i^2)^(3/2)),  d_i = mean_j(theta_(j)) - theta_(i)   (acceleration)

  with ``theta_(i)`` the refit leaving point i out (the jackknife; past `JACKKNIFE_GROUPS` points,
  leaving out one of that many groups of points). Ties ``theta*_b = theta`` count
  one half in z0 (as ``scipy.stats.bootstrap`` does), and the fraction is clipped to
  ``[1/(2B), 1 - 1/(2B)]`` so that z0 stays finite when every draw falls on one side.
- ``bc``: BCa with ``a = 0`` (Efron & Tibshirani 1993, Sec. 14.3); needs no jackknife.

BCa is transformation-respecting and second-order accurate, where the percentile interval is
first-order: it corrects a median bias of the draws and a standard error that changes with the
parameter (e.g. a skewed maximum-likelihood scale parameter). `FittedLaw.interval` uses BCa by
default where the fit carries the accelerations; the coverage of each method per shipped law is
measured in benchmarks/README.md ("Interval coverage").
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from scaling.fitting.data import data_sha256, point_weights, prepare_data
from scaling.fitting.objectives import LOG_OBJECTIVES, natural_values
from scaling.fitting.solver import run_solver

METHODS = ("percentile", "bc", "bca")
_NORMAL = statistics.NormalDist()


def percentile(draws, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``draws``."""
    lo, hi = np.percentile(np.asarray(draws, np.float64), [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bca(draws, estimate: float, acceleration: float, level: float) -> tuple[float, float]:
    """The BCa interval (see the module docstring) from bootstrap draws, the estimate and ``a``.

    ``acceleration = 0`` gives the bias-corrected (BC) interval.
    """
    draws = np.asarray(draws, np.float64)
    b = len(draws)
    below = (np.count_nonzero(draws < estimate) + np.count_nonzero(draws <= estimate)) / (2 * b)
    z0 = _NORMAL.inv_cdf(min(max(below, 0.5 / b), 1 - 0.5 / b))
    quantiles = []
    for q in (0.5 * (1 - level), 0.5 * (1 + level)):
        zq = z0 + _NORMAL.inv_cdf(q)
        denominator = 1 - acceleration * zq
        # |a| is small (~ skewness / 6 sqrt(n)); if 1 - a (z0 + z_q) <= 0 the endpoint is the extreme draw
        quantiles.append(_NORMAL.cdf(z0 + zq / denominator) if denominator > 0 else float(q > 0.5))
    lo, hi = np.percentile(draws, [100 * quantiles[0], 100 * quantiles[1]])
    return float(lo), float(hi)


def acceleration(jackknife) -> float:
    """``a = sum d^3 / (6 (sum d^2)^1.5)``, ``d_i = mean(theta_(.)) - theta_(i)`` (E&T Eq. 14.15); 0 if all equal.

    ``a`` does not change when every value is multiplied by one number, so the values are divided by
    the largest |value| first: a parameter whose refits run to 1e300 (a law the data do not bound)
    gives its acceleration instead of an overflow; NaN when a value is not finite."""
    jack = np.asarray(jackknife, np.float64)
    if jack.size == 0:
        return 0.0
    scale = float(np.max(np.abs(jack)))
    if not math.isfinite(scale):
        return math.nan
    if scale > 0:
        jack = jack / scale
    d = jack.mean() - jack
    ss = float(np.sum(d ** 2))
    return float(np.sum(d ** 3) / (6 * ss ** 1.5)) if ss > 0 else 0.0


JACKKNIFE_GROUPS = 256   # above this many points, leave out groups of points (see `jackknife`)


def jackknife_weights(weights, max_groups: int = JACKKNIFE_GROUPS) -> np.ndarray:
    """Weights [m, n] of the jackknife refits: row j is ``weights`` with group j's points set to 0.

    One group per point of positive weight (leaving out a zero-weight point changes nothing) when
    there are at most ``max_groups`` of them; else the points are dealt, in a fixed random order
    (seed 0), into ``max_groups`` groups of nearly equal size and each refit leaves one group out:
    the grouped (delete-d) jackknife, which keeps the cost at ``max_groups`` refits and the weight
    matrix at ``max_groups x n`` for fits to thousands of points (e.g. whole loss curves).
    BCa's acceleration is computed from the group estimates by the same formula: it is unchanged by
    grouping to first order, since a group's influence is the sum of its points' and second and
    third cumulants both add over points (a ~ kappa_3 / (6 kappa_2^1.5 sqrt(n)) either way).
    """
    w = np.asarray(weights, np.float64)
    points = np.flatnonzero(w > 0)
    if len(points) <= max_groups:
        groups = [points[i:i + 1] for i in range(len(points))]
    else:
        order = np.random.default_rng(0).permutation(points)
        groups = np.array_split(order, max_groups)
    out = np.tile(w, (len(groups), 1))
    for j, g in enumerate(groups):
        out[j, g] = 0.0
    return out


def jackknife(law, objective: str, delta: float, z_best, weights, x, y, *, max_groups: int = JACKKNIFE_GROUPS,
              **solver_args) -> dict[str, np.ndarray]:
    """Leave-one-out refits ``{param: [m]}`` (natural units), all in one vectorized solve.

    One refit per row of `jackknife_weights` (a point, or a group of points past ``max_groups``
    points); every refit starts from the full-data optimum ``z_best`` (internal units) and is
    solved at ``delta`` directly, as the bootstrap is. ``x``, ``y`` as for
    `scaling.fitting.solver.run_solver` (``y`` is the log of the target for the log objectives). A refit
    that fails gives NaN.
    """
    loo = jackknife_weights(weights, max_groups)
    z0 = np.tile(np.asarray(z_best, np.float64), (len(loo), 1))
    state = run_solver(law, objective, delta, z0, loo, x, y, **solver_args)
    values = natural_values(law, state["z"])
    bad = state["failed"] | ~np.isfinite(state["f"])
    return {k: np.where(bad, np.nan, v) for k, v in values.items()}


def accelerations(jack: dict[str, np.ndarray]) -> dict[str, float]:
    """`acceleration` per parameter from `jackknife` refits (failed refits, NaN, left out)."""
    out = {}
    for name, values in jack.items():
        values = np.asarray(values, np.float64)
        a = acceleration(values[np.isfinite(values)])
        if math.isfinite(a):
            out[name] = a
    return out


def add_acceleration(fitted, data, *, target: str | None = None, weights=None, columns=None, **solver_args):
    """Compute the jackknife accelerations of a `FittedLaw` from its data, in place; returns it.

    For fits made without them (older files, or a fit whose caller skipped the jackknife): ``data``,
    ``target``, ``weights`` and ``columns`` must be those given to `scaling.fit`; the data's hash is
    checked against the one recorded in the fit when there is one.
    """
    if not fitted.fit or "objective" not in fitted.fit:
        raise ValueError("add_acceleration needs a FittedLaw made by scaling.fit (its fit info names the objective)")
    law, objective = fitted.law, fitted.fit["objective"]
    x, y, target_col = prepare_data(law, data, target, columns, objective)
    sha = (fitted.data or {}).get("sha256")
    if sha is not None and data_sha256(x, y, target_col) != sha:
        raise ValueError("add_acceleration: data differ from the data this law was fitted on (sha256 mismatch)")
    y_fit = np.log(y) if objective in LOG_OBJECTIVES else y
    jack = jackknife(law, objective, fitted.fit.get("delta") or 1e-3, law.internal(fitted.params),
                     point_weights(weights, data, len(y)), x, y_fit, **solver_args)
    fitted.acceleration = accelerations(jack)
    return fitted
