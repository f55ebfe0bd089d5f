"""Profile-likelihood intervals for laws fitted by maximum likelihood (``objective="nll"``).

For a parameter theta_j, the profile of the objective ``F = sum_i w_i nll_i`` holds theta_j at a
value v and minimizes over the others; its signed root deviance is::

    r(v) = sign(v - theta_j_hat) * sqrt(2 (min_{theta: theta_j = v} F(theta) - F(theta_hat)))

and the level-L interval is ``{v : |r(v)| <= z}``, ``z = Phi^-1((1 + L) / 2)``, the set where the
likelihood-ratio statistic stays below the chi-square(1) quantile (Wilks 1938; Venzon & Moolgavkar
1988, "A method for computing profile-likelihood-based confidence intervals", Appl. Stat. 37:87;
Pawitan 2001, "In All Likelihood", Sec. 3.4 and 4.7). It is what R's ``confint`` gives for a GLM.
Unlike the bootstrap, it does not need the sampling distribution of the estimate to look like
its bootstrap distribution, which fails in small samples for skewed maximum-likelihood shape
estimates: for `pass_at_k_beta` on 40 problems the bootstrap intervals of beta cover 0.87-0.88
and the profile intervals 0.96 (benchmarks/README.md, "Interval coverage").

`profile` evaluates r on a fixed grid of offsets `OFFSETS` (in units of the standard error from
the inverse Hessian, in the parameter's internal scale) on both sides of the estimate, every
constrained fit in one vectorized solve of `scaling.fitting.solver.run_solver` (the held parameter
``frozen``, the rest warm-started at the estimate). `interval` walks out from the estimate on each
side to the first grid point where |r| passes z and interpolates linearly in the internal scale
between it and the point before; a side where the profile never gets there within the grid is
open (the domain's end: -inf, 0 for a log parameter, the bound of a bounded one).
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from scaling.fitting.solver import run_solver
from scaling.laws import law as law_lib

# offsets from the estimate, in standard errors (internal scale): fine where the 80-99.9%
# crossings fall for a near-quadratic profile, coarser out to 16 for skewed ones
OFFSETS = np.array([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0,
                    5.0, 6.0, 8.0, 11.0, 16.0])
_NORMAL = statistics.NormalDist()


def standard_errors(h: np.ndarray) -> np.ndarray:
    """sqrt(diag(H^-1)) of the objective's Hessian at the optimum (internal units); 1 where H is
    not positive definite (the grid spacing then falls back to one internal unit)."""
    h = np.asarray(h, np.float64)
    eig = np.linalg.eigvalsh(h) if np.isfinite(h).all() else np.zeros(len(h))
    if eig[0] <= 1e-12 * max(abs(eig[-1]), 1e-300):
        return np.ones(len(h))
    se = np.sqrt(np.diag(np.linalg.inv(h)))
    return np.where(np.isfinite(se) & (se > 0), se, 1.0)


def profile(law: law_lib.Law, objective: str, z_best, f_best: float, h_best, weights, x, y,
            **solver_args) -> dict[str, dict[str, list[float]]]:
    """Signed root deviance curves ``{param: {"values": [natural], "signed_root": [...]}}``.

    ``z_best``, ``f_best``, ``h_best``: the optimum (internal units), its objective and Hessian;
    ``weights``, ``x``, ``y`` as for `scaling.fitting.solver.run_solver`. The values are sorted and
    include the estimate (r = 0). A constrained fit that fails gives no grid point; a parameter
    whose every constrained fit fails gets no curve.
    """
    z_best = np.asarray(z_best, np.float64)
    n_params = len(z_best)
    se = standard_errors(h_best)
    offsets = np.concatenate([-OFFSETS[::-1], OFFSETS])
    z0 = np.tile(z_best, (n_params * len(offsets), 1))
    frozen = np.zeros(z0.shape, bool)
    for j in range(n_params):
        rows = slice(j * len(offsets), (j + 1) * len(offsets))
        z0[rows, j] = z_best[j] + offsets * se[j]
        frozen[rows, j] = True
    state = run_solver(law, objective, 1.0, z0, weights, x, y, frozen=frozen, **solver_args)
    deviance = 2.0 * (state["f"] - f_best)
    out = {}
    for j, p in enumerate(law.params):
        rows = slice(j * len(offsets), (j + 1) * len(offsets))
        zj = np.append(z0[rows, j], z_best[j])
        dev = np.append(deviance[rows], 0.0)
        ok = np.isfinite(dev) & ~np.append(state["failed"][rows], False)
        zj, dev = zj[ok], np.maximum(dev[ok], 0.0)       # a better optimum found on the way counts as 0
        order = np.argsort(zj)
        zj, dev = zj[order], dev[order]
        root = np.sign(zj - z_best[j]) * np.sqrt(dev)
        if len(zj) < 2:   # every constrained fit failed (e.g. at the edge of the domain): no curve
            continue
        out[p.name] = {"values": [float(v) for v in p.to_natural_numpy(zj)],
                       "signed_root": [float(v) for v in root]}
    return out


def interval(param: law_lib.Param, estimate: float, curve: dict, level: float) -> tuple[float, float]:
    """The profile-likelihood interval at ``level`` from a `profile` curve (see the module docstring)."""
    z = _NORMAL.inv_cdf(0.5 + level / 2)
    values = np.asarray(curve["values"], np.float64)
    root = np.asarray(curve["signed_root"], np.float64)
    t = param.to_internal(values)
    t_hat = float(param.to_internal(estimate))
    # the open end of each side in natural units (side -1: internal values below the estimate;
    # "upper" = upper - exp(internal) decreases in its internal value)
    open_end = {"log": (0.0, math.inf), "bounded": (param.lower, param.upper), "lower": (param.lower, math.inf),
                "upper": (param.upper, -math.inf)}.get(param.transform, (-math.inf, math.inf))
    ends = []
    for side in (-1, 1):
        mask = side * (t - t_hat) >= 0
        ts, rs = t[mask], np.abs(root[mask])
        order = np.argsort(side * (ts - t_hat))
        ts, rs = np.append(t_hat, ts[order]), np.append(0.0, rs[order])
        past = np.flatnonzero(rs >= z)
        if not len(past):
            ends.append(open_end[0] if side < 0 else open_end[1])
            continue
        k = past[0]
        frac = (z - rs[k - 1]) / (rs[k] - rs[k - 1])
        ends.append(float(param.to_natural_numpy(ts[k - 1] + frac * (ts[k] - ts[k - 1]))))
    return float(min(ends)), float(max(ends))


def validate(curves, names) -> dict | None:
    """Check a file's ``profile`` field; ValueError says what is wrong."""
    if curves is None:
        return None
    if not isinstance(curves, dict) or not set(curves) <= set(names):
        raise ValueError(f"profile must map parameters of {list(names)} to curves")
    out = {}
    for name, c in curves.items():
        if not isinstance(c, dict) or set(c) != {"values", "signed_root"}:
            raise ValueError(f"profile[{name!r}] must be {{'values': [...], 'signed_root': [...]}}")
        try:
            values = np.asarray(c["values"], np.float64)
            root = np.asarray(c["signed_root"], np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"profile[{name!r}] must hold lists of numbers") from None
        if values.ndim != 1 or values.shape != root.shape or len(values) < 2:
            raise ValueError(f"profile[{name!r}]: values and signed_root must be lists of one length >= 2")
        if not (np.isfinite(values).all() and np.isfinite(root).all()):
            raise ValueError(f"profile[{name!r}] has non-finite numbers")
        if np.any(np.diff(values) < 0):
            raise ValueError(f"profile[{name!r}]: values must be sorted ascending")
        out[name] = {"values": values.tolist(), "signed_root": root.tolist()}
    return out
