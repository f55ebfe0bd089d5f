"""Study-design maths: model sizes around a prior's optimum, steps for a budget, short names.

    sizes = log_spaced(prior_optimal_params(1e12), count=5, spread=8.0)
    prior_optimal_params(1e12, prior="runs/demo/fits/approach2_n_opt.json")   # the ladder

A study's ``prior`` is a `scaling.published` name (e.g. "hoffmann2022") or the path of a fitted-law
file that an earlier study wrote (``fits/*.json``, `scaling.load`): the analysis of one rung sets
the grid of the next, as in marin's scaling ladders. Accepted files: a loss law with
``compute_optimal`` (e.g. ``approach3_parametric.json``, the Chinchilla L(N, D)), or a power law
N_opt(C) in the budget (``approach{1,2,3}_n_opt.json``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable

import numpy as np


def log_spaced(center: float, count: int, spread: float) -> np.ndarray:
    """``count`` values spaced evenly in log around ``center``: largest / smallest = ``spread``.

    The geometric mean of the values is ``center``; ``count = 1`` gives ``[center]``.
    """
    if not (math.isfinite(center) and center > 0):
        raise ValueError(f"log_spaced: center must be a positive number, got {center!r}")
    if count < 1:
        raise ValueError(f"log_spaced: count must be >= 1, got {count}")
    if not (math.isfinite(spread) and spread >= 1):
        raise ValueError(f"log_spaced: spread (largest / smallest) must be >= 1, got {spread!r}")
    if count == 1:
        return np.array([float(center)])
    half = math.log(spread) / 2
    return center * np.exp(np.linspace(-half, half, count))


def load_prior(prior):
    """A `FittedLaw` from a `scaling.published` name, a fitted-law file path, or a FittedLaw."""
    import scaling

    if not isinstance(prior, (str, os.PathLike)):
        return prior
    text = os.fspath(prior)
    if text in scaling.published.names():
        return scaling.published.get(text)
    if text.endswith(".json") or os.sep in text or "://" in text:
        from etils import epath

        if not epath.Path(text).exists():
            raise ValueError(f"prior {text!r}: no such fitted-law file")
        return scaling.load(text)
    raise ValueError(f"prior {text!r}: neither a published law ({', '.join(scaling.published.names())}) "
                     "nor a fitted-law .json file")


def _n_opt_function(law) -> Callable[[float], float]:
    """N_opt(C) of a prior law, with C in the law's own convention (C = k N D)."""
    if law.law.name == "chinchilla":  # closed form (Hoffmann et al. 2022, Eq. 4)
        from scaling.laws.loss import chinchilla_frontier

        return lambda c: float(chinchilla_frontier(law.params, c, k=law.k)["N"])
    if tuple(law.law.covariates) == ("x",):  # a power law in the budget: it must be N_opt(C)
        target = str((law.provenance or {}).get("target", ""))
        if not target.startswith("N_opt"):
            raise ValueError(f"prior law {law.law.name!r} is a law of C for {target or 'an unnamed target'}, "
                             "not N_opt(C): use an approach*_n_opt.json or a parametric L(N, D) file")

        def from_power_law(c):
            with warnings.catch_warnings():  # the next rung lies outside the fitted budgets
                warnings.simplefilter("ignore", UserWarning)
                return float(np.asarray(law.predict(x=np.array([c]))).reshape(-1)[0])
        return from_power_law

    def numeric(c):
        with warnings.catch_warnings():  # tiny budgets lie far outside the fitted range
            warnings.simplefilter("ignore", UserWarning)
            return float(np.asarray(law.compute_optimal(c)["N"]).reshape(-1)[0])
    return numeric


def prior_optimal_params(budget: float, *, prior="hoffmann2022",
                         flops_ratio: Callable[[float], float] | None = None,
                         iterations: int = 20) -> float:
    """Compute-optimal parameter count at ``budget`` predicted by a prior law, in our convention.

    ``prior``: see `load_prior`; its compute is ``C = k N D`` (Hoffmann et al. 2022: k = 6,
    N counting all parameters). Our budget may use another convention: ``flops_ratio(N)`` =
    (our FLOPs per token of the N-parameter model) / (k N). The prior's budget equivalent to ours
    is then ``C_prior = budget / flops_ratio(N)``, and N solves ``N = N_opt_prior(budget /
    flops_ratio(N))`` (fixed-point iteration in log N; the ratio varies slowly with N). Without
    ``flops_ratio`` the budgets are taken as the prior's own.
    """
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"prior_optimal_params: budget must be a positive number, got {budget!r}")
    n_opt = _n_opt_function(load_prior(prior))
    n = n_opt(budget)
    if not (math.isfinite(n) and n > 0):
        raise ValueError(f"prior_optimal_params: the prior gives N_opt({budget:.3g}) = {n!r}")
    if flops_ratio is None:
        return n
    for _ in range(iterations):
        ratio = float(flops_ratio(n))
        if not (math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"prior_optimal_params: flops_ratio({n:.4g}) = {ratio!r} is not positive")
        new = n_opt(budget / ratio)
        if abs(math.log(new / n)) < 1e-6:
            return new
        n = math.sqrt(n * new)  # damped: the ratio of a shape rule jumps between discrete shapes
    return n


def steps_for_budget(budget: float, flops_per_token: float, tokens_per_step: int) -> int:
    """Optimizer steps whose tokens spend ``budget`` FLOPs (nearest whole step, at least 1)."""
    if not (budget > 0 and flops_per_token > 0 and tokens_per_step > 0):
        raise ValueError(f"steps_for_budget: budget {budget!r}, flops_per_token {flops_per_token!r} "
                         f"and tokens_per_step {tokens_per_step!r} must all be positive")
    return max(1, round(budget / (flops_per_token * tokens_per_step)))


def sci(x: float, digits: int = 2) -> str:
    """Short scientific notation for names: 1e11 -> "1.0e11", 33500 -> "3.35e4"."""
    if x == 0:
        return "0"
    exponent = math.floor(math.log10(abs(x)))
    mantissa = round(x / 10 ** exponent, digits)
    if abs(mantissa) >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    text = f"{mantissa:.{digits}f}".rstrip("0")
    text = text + "0" if text.endswith(".") else text
    return f"{text}e{exponent}"
