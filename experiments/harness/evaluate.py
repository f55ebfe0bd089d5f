"""Evaluation of a run on its fixed held-out batches: ``evaluate(setup, params, eval_batches)``.

Evaluation on the fixed held-out batches: the token-weighted mean loss R = sum_i s_i / sum_i n_i
over sequences i (s_i = summed token loss, n_i = weighted tokens, sequences with n_i > 0), and its
standard error with sequences as clusters (the variance of a ratio estimator, Cochran 1977,
"Sampling Techniques", Ch. 6; tokens of one sequence are not independent):
    SEM = sqrt( sum_i (s_i - R n_i)^2 / (k (k - 1)) ) / mean_i(n_i),   k sequences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def host_value(x) -> np.ndarray:
    """A replicated (possibly multi-process) array as numpy, from this process's copy."""
    return np.asarray(x.addressable_data(0))


def evaluate(setup, params, eval_batches: Sequence[dict]) -> tuple[float, float]:
    """(token-weighted mean loss, its cluster SEM over sequences); formulas in the docstring.

    ``setup.eval_step(params, batch) -> (loss_sum [B], weight_sum [B])`` (``step.Setup``)."""
    sums, counts = [], []
    for batch in eval_batches:
        s, n = setup.eval_step(params, batch)
        sums.append(host_value(s))
        counts.append(host_value(n))
    s = np.concatenate(sums).astype(np.float64)
    n = np.concatenate(counts).astype(np.float64)
    keep = n > 0
    s, n = s[keep], n[keep]
    if n.size == 0:
        raise ValueError("the held-out batches hold no weighted tokens")
    ratio = s.sum() / n.sum()
    k = n.size
    sem = (math.sqrt(np.sum((s - ratio * n) ** 2) / (k * (k - 1))) / n.mean()) if k > 1 else math.nan
    return float(ratio), float(sem)
