"""Test-time compute: pass@k estimation and laws for accuracy vs. number of samples k.

Estimators (numpy in, numpy out):
- `pass_at_k(n, c, k)`: Chen et al. (2021)'s unbiased estimator of pass@k from n samples with c
  correct, per problem; `pass_at_k_curve(n, c, ks)`: its mean over problems for many k.

Laws (registered; ``scaling.laws.get(name)``):
- ``coverage_power_law`` (Brown et al. 2024): coverage(k) = exp(-a k^-b).
- ``pass_at_k_beta`` (Schaeffer et al. 2025): per-problem success probabilities p ~ Beta(α, β),
  fitted to per-problem counts (n samples, c correct) by the beta-binomial likelihood; then
  pass@k = 1 - B(α, β + k) / B(α, β) for any k (`beta_pass_at_k`), with the power-law tail
  -log pass@k ≈ Γ(α+β)/Γ(β) k^-α (`beta_power_law_tail`); `fitted_pass_at_k` gives the curve
  of a fit, with a bootstrap band.
- ``verifier_ceiling`` (Stroebl et al. 2024): accuracy of resampling until a candidate passes an
  imperfect verifier, which saturates at p/(p + fpr (1 - p)) < 1 (`resampling_accuracy`,
  `verifier_accuracy_ceiling`).

Sources (formulas checked with the project's search tool):
- Chen et al. (2021), "Evaluating Large Language Models Trained on Code", arXiv:2107.03374: the
  estimator 1 - C(n-c, k)/C(n, k); checked as reproduced in Schaeffer et al. (2025) App. B, Eq. 12,
  and their numerically stable reference code (Fig. 8: 1 - prod(1 - k / arange(n-c+1, n+1)),
  1 if n-c < k), read in a full-text transcription of Schaeffer et al.
- Brown et al. (2024), "Large Language Monkeys: Scaling Inference Compute with Repeated Sampling",
  arXiv:2407.21787, Sec. 3.1, Eqs. 2-3: log coverage ≈ a k^b, i.e. coverage ≈ exp(a k^b)
  (an "exponentiated power law"), a < 0, b < 0; coverage is measured with the estimator of their
  Eq. 1 and the fit uses scipy curve_fit on 40 log-spaced k (App. C.1). Equation and section
  numbers checked against a section-referenced digest of the paper, not the paper itself. We write
  the law with positive constants as Schaeffer et al. (2025) Eq. 2 do (checked in the full text):
  -log coverage ≈ a k^-b, a, b > 0 (Brown's a, b = -a, -b). Schaeffer et al. App. C, Table 1, fit
  a = 8.03 ... 4.11 and b = 0.19 ... 0.37 for Pythia 70M ... 12B on MATH.
- Schaeffer et al. (2025), "How Do Large Language Monkeys Get Their Power (Laws)?",
  arXiv:2502.17578 (ICML 2025, PMLR 267:53132-53176), App. E.4, Eqs. 24-30 (checked in a full-text
  transcription): p ~ Beta(α, β) (Eq. 24), pass_Beta(α,β)@k = 1 - Γ(α+β)Γ(β+k) / (Γ(β)Γ(α+β+k))
  (Eq. 27) and -log pass@k = Γ(α+β)/Γ(β) k^-α + o(k^-α) (Eq. 30). Their distributional estimator
  fits a *scaled* 3-parameter Beta/Kumaraswamy by a discretized likelihood (Sec. 5); this module
  fits the plain 2-parameter Beta by the exact beta-binomial likelihood instead (a
  simplification: no scale parameter).
- Stroebl, Kapoor, Narayanan (2024), "Inference Scaling fLaws: The Limits of LLM Resampling with
  Imperfect Verifiers", arXiv:2411.17501 (v3: "The Limits of Inference Scaling Through
  Resampling"). Model checked against the authors' notebook
  (benediktstroebl/inference-scaling-limits, notebooks/limits_to_inference_scaling_model.ipynb):
  per attempt, a correct solution is generated with probability r and accepted with probability
  c (completeness); an incorrect one is accepted with probability 1 - s (s: soundness); the first
  accepted candidate is returned. The equation number in the paper was not verified.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from scaling.laws.beta_binomial import (beta_binomial_nll, beta_pass_at_k, pass_at_k_degeneracy,
                                        zero_inflated_pass_at_k)
from scaling.laws.law import Law, Param, register

# ----------------------------------------------------------------------------- pass@k estimator


def _as_count_array(name, value):
    """Validate a non-negative integer-valued array (ints or integral floats)."""
    arr = np.asarray(value)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"pass_at_k: {name} must be numeric counts, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"pass_at_k: {name} must be finite whole numbers; {name}{list(idx)} = {arr[idx]}")
    if (arr < 0).any():
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise ValueError(f"pass_at_k: {name} must be >= 0; {name}{list(idx)} = {arr[idx]}")
    return arr.astype(np.int64)


_EXACT_TERMS_MAX = 200_000  # beyond this many product terms per problem, fall back to log-gamma


def _log_fail_ratio(n, c, k):
    """log(C(n-c, k) / C(n, k)) for 1-D int arrays with c >= 1, k >= 1, n - c >= k.

    Exactly the log of the product form: ``sum_{i=n-c+1}^{n} log1p(-k/i)`` (c terms) or, when k < c,
    ``sum_{j=0}^{k-1} log1p(-c/(n-j))`` (k terms); all terms lie in (-inf, 0) and no binomial is
    formed. Entries needing more than `_EXACT_TERMS_MAX` terms use log-factorials instead
    (math.lgamma; absolute error ~1e-16 * n log n).
    """
    use_c_terms = c <= k
    terms = np.where(use_c_terms, c, k)
    out = np.empty(n.shape, dtype=np.float64)
    huge = terms > _EXACT_TERMS_MAX
    if huge.any():
        lf = np.vectorize(lambda m: math.lgamma(m + 1.0), otypes=[np.float64])
        nh, ch, kh = n[huge], c[huge], k[huge]
        out[huge] = (lf(nh - ch) - lf(nh - ch - kh)) - (lf(nh) - lf(nh - kh))
    idx = np.flatnonzero(~huge)
    if idx.size:
        order = idx[np.argsort(-terms[idx], kind="stable")]  # most terms first: active entries are a prefix
        m = terms[order]
        numerator = np.where(use_c_terms[order], k[order], c[order]).astype(np.float64)
        base = np.where(use_c_terms[order], n[order] - c[order] + 1, n[order]).astype(np.float64)
        step = np.where(use_c_terms[order], 1.0, -1.0)
        acc = np.zeros(order.size, dtype=np.float64)
        neg_m = -m
        for t in range(int(m[0])):
            active = int(np.searchsorted(neg_m, -t, side="left"))  # entries with m > t
            acc[:active] += np.log1p(-numerator[:active] / (base[:active] + step[:active] * t))
        out[order] = acc
    return out


def pass_at_k(n, c, k) -> np.ndarray:
    """Unbiased pass@k per problem (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)``.

    Args:
      n: samples drawn per problem; c: how many were correct; k: attempts allowed. Integer arrays
        (or scalars) that broadcast together; one entry per problem.

    Returns a float64 numpy array of the broadcast shape. Exact edge cases: 0 where ``c == 0`` or
    ``k == 0``; 1 where ``n - c < k`` (every k-subset holds a correct sample). Otherwise
    ``-expm1(log ratio)`` with the log ratio summed from the product form
    ``prod_{i=n-c+1}^{n} (1 - k/i)`` (Chen et al.'s numerically stable form), using whichever of
    the c or k factors is shorter; no binomial coefficient is ever formed. Cost: one vectorized
    pass per product term, so O(max min(c, k)) numpy operations.

    Raises ValueError on negative or non-integer counts, ``c > n`` or ``k > n``.
    """
    n_, c_, k_ = np.broadcast_arrays(_as_count_array("n", n), _as_count_array("c", c), _as_count_array("k", k))
    for name, bad in (("c", c_ > n_), ("k", k_ > n_)):
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            value = c_[idx] if name == "c" else k_[idx]
            raise ValueError(f"pass_at_k: {name} must be <= n; at index {list(idx)}, {name} = {value} > n = {n_[idx]}")
    out = np.zeros(n_.shape, dtype=np.float64)
    certain = (n_ - c_) < k_
    out[certain] = 1.0
    todo = ~certain & (c_ > 0) & (k_ > 0)
    if todo.any():
        out[todo] = -np.expm1(_log_fail_ratio(n_[todo], c_[todo], k_[todo]))
    return out


def pass_at_k_curve(n, c, ks) -> np.ndarray:
    """Mean unbiased pass@k over problems, for each k in ``ks``.

    ``n``, ``c``: per-problem counts (1-D, broadcastable); ``ks``: 1-D attempts. Returns an array of
    ``len(ks)``; every k must be <= every problem's n (ValueError otherwise).
    """
    n_, c_ = np.broadcast_arrays(np.atleast_1d(np.asarray(n)), np.atleast_1d(np.asarray(c)))
    ks_ = np.atleast_1d(np.asarray(ks))
    if n_.ndim != 1 or ks_.ndim != 1:
        raise ValueError(f"pass_at_k_curve: n, c and ks must be 1-D, got shapes {n_.shape} and {ks_.shape}")
    if n_.size == 0:
        raise ValueError("pass_at_k_curve: no problems given")
    return pass_at_k(n_[None, :], c_[None, :], ks_[:, None]).mean(axis=1)


# ----------------------------------------------------------------------------- Beta model (Schaeffer)


def beta_power_law_tail(alpha, beta):
    """Large-k tail of the Beta model: ``-log pass@k ≈ a k^-b`` with ``a = Γ(α+β)/Γ(β)``, ``b = α``.

    Schaeffer et al. (2025), App. E.4, Eq. 30. Returns ``(a, b)`` in the convention of the
    ``coverage_power_law`` law.
    """
    return jnp.exp(gammaln(alpha + beta) - gammaln(beta)), alpha


def fitted_pass_at_k(fitted, ks, level: float = 0.95) -> dict:
    """pass@k curve of a fitted ``pass_at_k_beta`` or ``pass_at_k_zero_inflated_beta`` law, with its band.

    Returns ``{"k", "pass_at_k", "interval", "interval_method"}``: the curve at the fitted
    parameters and the central ``level`` band of the curve over the parameter draws the fit carries
    (`scaling.FittedLaw.draws`): its bootstrap draws when it has them (``"bootstrap_percentile"``),
    else, for a maximum-likelihood fit, draws that follow its profile likelihoods (``"profile_t"``),
    or standard errors; ``interval`` is None (and ``interval_method`` says why) only for a fit
    that carries no uncertainty at all. Every value lies in [0, 1], the curve is non-decreasing in
    k, and the band contains the point (its ends are widened to the point where the draws' skew
    would leave it outside).
    """
    zero_inflated = fitted.law.name == "pass_at_k_zero_inflated_beta" or set(fitted.params) == {"pi", "alpha", "beta"}
    if not zero_inflated and fitted.law.name != "pass_at_k_beta" and set(fitted.params) != {"alpha", "beta"}:
        raise ValueError(f"fitted_pass_at_k needs a fit of 'pass_at_k_beta' or 'pass_at_k_zero_inflated_beta', "
                         f"got law {fitted.law.name!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    ks = np.atleast_1d(np.asarray(ks, dtype=np.float64))
    if ks.ndim != 1 or not np.all(np.isfinite(ks)) or (ks < 0).any():
        raise ValueError(f"ks must be a 1-D array of finite values >= 0, got {ks!r}")

    def curve(p, k):
        if zero_inflated:
            return zero_inflated_pass_at_k(p["pi"], p["alpha"], p["beta"], k)
        return beta_pass_at_k(p["alpha"], p["beta"], k)

    def clipped(p):
        with jax.enable_x64(True):
            return np.clip(np.asarray(curve(p, ks), np.float64), 0.0, 1.0)

    band = fitted.band(clipped, level)   # the fit's draws (scaling.FittedLaw.band)
    point = np.atleast_1d(band.value)
    interval, method = None, band.method
    if band.method is not None:
        interval = (np.minimum(np.atleast_1d(band.lower), point), np.maximum(np.atleast_1d(band.upper), point))
    else:
        method = "none: the fit carries no draws, profile or standard errors"
    return {"k": ks, "pass_at_k": point, "interval": interval, "interval_method": method}


def _beta_binomial_nll(p, x, y):
    """-log P(c | n, α, β) under the beta-binomial (`scaling.laws.beta_binomial`: accurate, never negative)."""
    return beta_binomial_nll(p["alpha"], p["beta"], x["n"], y)


def _beta_design(rng, size):
    """Samples per problem: 50 to 500 (a benchmark of `size` problems)."""
    return {"n": rng.integers(50, 501, size).astype(np.float64)}


def _beta_simulate(rng, params, x):
    """p_i ~ Beta(α, β), c_i ~ Binomial(n_i, p_i)."""
    n = np.asarray(x["n"]).astype(np.int64)
    p = rng.beta(float(params["alpha"]), float(params["beta"]), size=n.shape)
    return rng.binomial(n, p).astype(np.float64)


pass_at_k_beta = register(Law(
    name="pass_at_k_beta",
    objective_source='maximum likelihood (beta-binomial): Schaeffer et al. 2025',
    params=(
        Param("alpha", "log", grid=(0.1, 0.5, 2.0), doc="Beta shape at p -> 0; the power-law exponent of -log pass@k"),
        Param("beta", "log", grid=(0.5, 3.0, 20.0), doc="Beta shape at p -> 1"),
    ),
    covariates=("n",),
    target="c",
    fn=lambda p, x: x["n"] * p["alpha"] / (p["alpha"] + p["beta"]),
    nll=_beta_binomial_nll,
    objective="nll",
    positive=("n",),
    formula=("p_i ~ Beta(alpha, beta), c_i ~ Binomial(n_i, p_i); E[c] = n alpha/(alpha+beta); "
             "pass@k = 1 - B(alpha, beta+k)/B(alpha, beta)"),
    citation=("Schaeffer, Kazdan, Hughes, Juravsky, Price, Lynch, Jones, Kirk, Mirhoseini, Koyejo (2025), "
              "'How Do Large Language Monkeys Get Their Power (Laws)?', arXiv:2502.17578, App. E.4 Eqs. 25-30 "
              "(2-parameter Beta, fitted by the exact beta-binomial likelihood rather than the paper's "
              "scaled-distribution, discretized estimator)"),
    reference={"alpha": 0.3, "beta": 3.0},  # illustrative, not a published fit
    design=_beta_design,
    simulate=_beta_simulate,
    degeneracy=pass_at_k_degeneracy,
))


# ----------------------------------------------------------------------------- coverage power law (Brown)

_BENCHMARK_PROBLEMS = 1000  # problems behind each simulated coverage/accuracy point


def _benchmark_fraction(rng, prob):
    """A benchmark average over `_BENCHMARK_PROBLEMS` problems: Binomial(M, prob)/M, floored at 1/(2M)."""
    m = _BENCHMARK_PROBLEMS
    hits = rng.binomial(m, np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0))
    return np.maximum(hits, 0.5) / m


def _coverage_log_fn(p, x):
    return -p["a"] * x["k"] ** -p["b"]


def _k_design(low, high):
    """Sample budgets k, log-uniform integers in [low, high]."""
    def design(rng, n):
        return {"k": np.round(np.exp(rng.uniform(np.log(low), np.log(high), n)))}
    return design


coverage_power_law = register(Law(
    name="coverage_power_law",
    objective="huber_log",
    objective_source="huber_log, the library's default (Epoch AI's protocol for Chinchilla, Besiroglu et al. 2024, Sec. 2); the source's own fitting objective was not checked",
    params=(
        Param("a", "log", grid=(0.3, 1.0, 3.0), doc="-log coverage at k = 1 (Brown et al.'s -a)"),
        Param("b", "log", grid=(0.1, 0.3, 0.7), doc="power-law exponent of -log coverage (Brown et al.'s -b)"),
    ),
    covariates=("k",),
    target="coverage",
    fn=lambda p, x: jnp.exp(_coverage_log_fn(p, x)),
    log_fn=_coverage_log_fn,
    formula="coverage(k) = exp(-a k^-b), a, b > 0  (Brown et al.: log c = a' k^b', a' = -a, b' = -b)",
    citation=("Brown, Juravsky, Ehrlich, Clark, Le, Ré, Mirhoseini (2024), 'Large Language Monkeys: Scaling "
              "Inference Compute with Repeated Sampling', arXiv:2407.21787, Sec. 3.1 Eqs. 2-3; sign "
              "convention of Schaeffer et al. (2025) Eq. 2"),
    reference={"a": 2.0, "b": 0.3},  # illustrative: coverage 13.5% at k=1, 88% at k=10^4
    design=_k_design(1, 1e4),
    simulate=lambda rng, params, x: _benchmark_fraction(
        rng, np.exp(-float(params["a"]) * np.asarray(x["k"], dtype=np.float64) ** -float(params["b"]))),
))


# ----------------------------------------------------------------------------- imperfect verifiers (Stroebl)


def resampling_accuracy(p_correct, fpr, k, tpr=1.0):
    """Accuracy of "resample until the verifier accepts, at most k attempts" (Stroebl et al. 2024).

    Per attempt: a correct candidate with probability ``p_correct``, accepted with probability
    ``tpr`` (the verifier's completeness); an incorrect one accepted with probability ``fpr``
    (1 - soundness). With ``q_c = tpr p_correct``, ``q_f = fpr (1 - p_correct)``, the first
    accepted candidate is correct with probability::

        acc(k) = q_c (1 - (1 - q_c - q_f)^k) / (q_c + q_f)  ->  q_c / (q_c + q_f)  as k -> inf.

    Returns 0 where nothing is ever accepted. Pure jnp; broadcasts.
    """
    p_correct, fpr, k, tpr = (jnp.asarray(v) for v in (p_correct, fpr, k, tpr))
    q_c = tpr * p_correct
    q_f = fpr * (1.0 - p_correct)
    accept = q_c + q_f
    reached = -jnp.expm1(k * jnp.log1p(-jnp.minimum(accept, 1.0)))  # 1 - (1 - accept)^k
    safe = jnp.where(accept > 0, accept, 1.0)
    return jnp.where(accept > 0, q_c / safe * reached, 0.0)


def verifier_accuracy_ceiling(p_correct, fpr, tpr=1.0):
    """Infinite-budget accuracy of resampling against an imperfect verifier (Stroebl et al. 2024).

    ``tpr p / (tpr p + fpr (1 - p))``: below 1 whenever ``fpr > 0`` and ``p < 1``, whatever the
    compute budget. 0 where nothing is ever accepted. Pure jnp; broadcasts.
    """
    p_correct, fpr, tpr = (jnp.asarray(v) for v in (p_correct, fpr, tpr))
    q_c = tpr * p_correct
    accept = q_c + fpr * (1.0 - p_correct)
    return jnp.where(accept > 0, q_c / jnp.where(accept > 0, accept, 1.0), 0.0)


def _verifier_log_fn(p, x):
    q_c = p["p_correct"]
    accept = q_c + p["fpr"] * (1.0 - q_c)
    log_reached = jnp.log(-jnp.expm1(x["k"] * jnp.log1p(-accept)))
    return jnp.log(q_c) - jnp.log(accept) + log_reached


verifier_ceiling = register(Law(
    name="verifier_ceiling",
    objective="huber_log",
    objective_source="huber_log, the library's default (Epoch AI's protocol for Chinchilla, Besiroglu et al. 2024, Sec. 2); the source's own fitting objective was not checked",
    params=(
        Param("p_correct", "bounded", lower=0.0, upper=1.0, grid=(0.1, 0.4, 0.8),
              doc="probability that one sample is correct"),
        Param("fpr", "bounded", lower=0.0, upper=1.0, grid=(0.02, 0.1, 0.4),
              doc="probability that the verifier accepts an incorrect sample (1 - soundness)"),
    ),
    covariates=("k",),
    target="accuracy",
    fn=lambda p, x: jnp.exp(_verifier_log_fn(p, x)),
    log_fn=_verifier_log_fn,
    formula=("accuracy(k) = p (1 - (1 - p - fpr (1-p))^k) / (p + fpr (1-p)) -> p / (p + fpr (1-p)); "
             "perfect completeness (tpr = 1)"),
    citation=("Stroebl, Kapoor, Narayanan (2024), 'Inference Scaling fLaws: The Limits of LLM Resampling with "
              "Imperfect Verifiers', arXiv:2411.17501; resampling model as in the authors' notebook "
              "(equation number not verified)"),
    # The authors' notebook example of a hard task: r = 0.13, soundness s = 0.75 (fpr = 0.25).
    reference={"p_correct": 0.13, "fpr": 0.25},
    design=_k_design(1, 64),
    simulate=lambda rng, params, x: _benchmark_fraction(rng, np.asarray(resampling_accuracy(
        float(params["p_correct"]), float(params["fpr"]), np.asarray(x["k"], dtype=np.float64)))),
))


# ----------------------------------------------------------------------------- across models


def _coverage_nd_log_fn(p, x):
    """log coverage = -A N^-a_N D^-a_D k^-b."""
    return -jnp.exp(jnp.log(p["A"]) - p["a_N"] * jnp.log(x["N"]) - p["a_D"] * jnp.log(x["D"])
                    - p["b"] * jnp.log(x["k"]))


def _coverage_nd_design(rng, n):
    return {"N": np.exp(rng.uniform(np.log(3e4), np.log(3e6), n)),
            "D": np.exp(rng.uniform(np.log(1e6), np.log(1e8), n)),
            "k": np.round(np.exp(rng.uniform(0.0, np.log(1e3), n)))}


coverage_compute_law = register(Law(
    name="coverage_compute_law",
    objective="huber_log",
    objective_source="huber_log, the library's default (Epoch AI's protocol for Chinchilla, Besiroglu et al. 2024, Sec. 2); the source's own fitting objective was not checked",
    params=(
        Param("A", "log", grid=(1.0, 30.0, 1e3), doc="-log coverage at N = D = k = 1"),
        Param("a_N", grid=(0.0, 0.3), doc="how fast -log coverage falls with parameters"),
        Param("a_D", grid=(0.0, 0.3), doc="how fast -log coverage falls with training tokens"),
        Param("b", "log", grid=(0.1, 0.4), doc="power-law exponent in the number of samples k"),
    ),
    covariates=("N", "D", "k"),
    target="coverage",
    fn=lambda p, x: jnp.exp(_coverage_nd_log_fn(p, x)),
    log_fn=_coverage_nd_log_fn,
    positive=("N", "D", "k"),
    formula="coverage(N, D, k) = exp(-A N^-a_N D^-a_D k^-b)",
    citation=("Brown et al. (2024) 'Large Language Monkeys', arXiv:2407.21787, Sec. 3.1 Eqs. 2-3 (the law in "
              "k, one model at a time); its coefficient a written as A N^-a_N D^-a_D to span a family of "
              "models is this project's extension (not in the paper)"),
    reference={"A": 30.0, "a_N": 0.1, "a_D": 0.15, "b": 0.3},  # illustrative
    design=_coverage_nd_design,
    simulate=lambda rng, params, x: _benchmark_fraction(rng, np.exp(np.asarray(_coverage_nd_log_fn(
        {k: float(v) for k, v in params.items()}, {k: np.asarray(v, np.float64) for k, v in x.items()})))),
))


def _coverage_budget_log_fn(p, x):
    """log coverage = -A C^-a_C k^-b."""
    return -jnp.exp(jnp.log(p["A"]) - p["a_C"] * jnp.log(x["C"]) - p["b"] * jnp.log(x["k"]))


def _coverage_budget_design(rng, n):
    return {"C": np.exp(rng.uniform(np.log(1e11), np.log(1e15), n)),
            "k": np.round(np.exp(rng.uniform(0.0, np.log(1e3), n)))}


coverage_budget_law = register(Law(
    name="coverage_budget_law",
    objective="huber_log",
    objective_source="huber_log, the library's default (Epoch AI's protocol for Chinchilla, Besiroglu et al. 2024, Sec. 2); no source fits this form",
    params=(
        Param("A", "log", grid=(1.0, 30.0, 1e3), doc="-log coverage at C = k = 1"),
        Param("a_C", grid=(0.0, 0.15), doc="how fast -log coverage falls with training compute"),
        Param("b", "log", grid=(0.1, 0.4), doc="power-law exponent in the number of samples k"),
    ),
    covariates=("C", "k"),
    target="coverage",
    fn=lambda p, x: jnp.exp(_coverage_budget_log_fn(p, x)),
    log_fn=_coverage_budget_log_fn,
    positive=("C", "k"),
    formula="coverage(C, k) = exp(-A C^-a_C k^-b)",
    citation=("Brown et al. (2024) 'Large Language Monkeys', arXiv:2407.21787, Sec. 3.1 Eqs. 2-3 (the law in "
              "k, one model at a time); its coefficient a written as A C^-a_C in the training compute C is "
              "this project's extension (not in the paper): coverage_compute_law with one exponent of "
              "compute in place of separate exponents of N and D, a candidate for `scaling.select`"),
    reference={"A": 30.0, "a_C": 0.1, "b": 0.3},  # illustrative
    design=_coverage_budget_design,
    simulate=lambda rng, params, x: _benchmark_fraction(rng, np.exp(np.asarray(_coverage_budget_log_fn(
        {k: float(v) for k, v in params.items()}, {k: np.asarray(v, np.float64) for k, v in x.items()})))),
))
