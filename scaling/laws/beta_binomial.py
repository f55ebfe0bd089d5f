"""Beta-binomial likelihoods and Beta pass@k, accurate for every alpha, beta > 0 and every count.

Per problem i, a model solves c_i of n_i samples; with success probability p_i ~ Beta(alpha, beta),
c_i is beta-binomial (Schaeffer et al. 2025, "How Do Large Language Monkeys Get Their Power
(Laws)?", arXiv:2502.17578, App. E.4, Eqs. 24-27)::

    P(c | n) = C(n, c) B(c + alpha, n - c + beta) / B(alpha, beta)
    pass@k   = 1 - B(alpha, beta + k) / B(alpha, beta)

Both are written with one function, the log of a ratio of rising factorials,

    R(x, a, s) = sum_{j<s} log1p(a / (x + j)) = log Γ(x+s+a) - log Γ(x+s) - log Γ(x+a) + log Γ(x)  >= 0,

as  -log P(c | n) = -log C(n, c) + R(alpha, beta + n - c, c) + R(beta, alpha, n - c)  and
pass@k = -expm1(-R(beta, alpha, k)): sums of non-negative terms, so nothing cancels. (The
difference of log-gamma sums cancels catastrophically: at alpha, beta ~ 1e5 with no problem solved
it gave an NLL of -1536 where the exact value is ~0, and the optimizer followed the error.) `R`
sums the first terms while x + j < `ASYMPTOTIC_FROM` (10) and takes the rest from the Stirling series
of log Γ (Abramowitz & Stegun 6.1.41, six Bernoulli terms), arranged so that every piece is a
log1p of a small ratio (see `log_rising_ratio`). Agrees with 50-digit mpmath to 1e-12 relative
over alpha, beta in [1e-3, 1e8] and all counts (tests/test_test_time.py).

Zero inflation (this project's addition, not in Schaeffer et al.): a fraction pi of problems is
never solved (p = 0), the rest have p ~ Beta(alpha, beta)::

    P(c | n) = pi [c = 0] + (1 - pi) P_Beta(c | n),   pass@k = (1 - pi) (1 - B(alpha, beta + k) / B(alpha, beta))

which keeps a finite, identified fit where a plain Beta sends alpha/beta to extremes (benchmarks
where many problems are never solved at any k).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from scaling.laws.law import Law, Param, register

ASYMPTOTIC_FROM = 10.0   # Stirling's series (6 terms) for x >= 10: truncation error < 1e-13 relative in R
_HEAD = 10               # at most this many explicit terms before the series applies
# B_2j / (2j (2j - 1)), j = 1..6 (Abramowitz & Stegun 6.1.41)
_B = (1.0 / 12.0, -1.0 / 360.0, 1.0 / 1260.0, -1.0 / 1680.0, 1.0 / 1188.0, -691.0 / 360360.0)


def _head(x, a, m):
    """sum_{j < m} log1p(a / (x + j)) for m in [0, _HEAD] (elementwise; m may vary)."""
    j = jnp.arange(_HEAD, dtype=jnp.result_type(x, float))
    terms = jnp.log1p(a[..., None] / (x[..., None] + j))
    return jnp.sum(jnp.where(j < m[..., None], terms, 0.0), axis=-1)


def _asymptotic(x, a, s):
    """R(x, a, s) for x >= 10 and x + s >= 10 (s may be negative), from Stirling's series.

    With f(y) = log Γ(y + a) - log Γ(y) = (y - 1/2) log1p(a/y) + a log(y + a) - a + c(y):
    R = f(x + s) - f(x) = (x - 1/2) L + s log1p(a/(x+s)) + a log1p(s/(x+a)) + c(x+s) - c(x),
    L = log1p(a/(x+s)) - log1p(a/x) = log1p(-q) = log1p(s/(x+a)) - log1p(s/x), q = a s/((x+s)(x+a)).
    """
    xs = x + s
    q = a * s / (xs * (x + a))
    small = jnp.abs(q) < 0.5
    lower = jnp.log1p(-jnp.where(small, q, 0.0))
    upper = jnp.log1p(s / (x + a)) - jnp.log1p(s / x)
    out = (x - 0.5) * jnp.where(small, lower, upper) + s * jnp.log1p(a / xs) + a * jnp.log1p(s / (x + a))
    # c(x+s) - c(x), c(y) = sum_j B_2j/(2j(2j-1)) ((y+a)^(1-2j) - y^(1-2j)); first term without cancellation
    out = out + _B[0] * (a / (x * (x + a)) - a / (xs * (xs + a)))
    for b, p in zip(_B[1:], (-3.0, -5.0, -7.0, -9.0, -11.0)):
        out = out + b * (((xs + a) ** p - xs ** p) - ((x + a) ** p - x ** p))
    return out


def log_rising_ratio(x, a, s):
    """``R(x, a, s) = log[Γ(x+s+a) Γ(x) / (Γ(x+s) Γ(x+a))] = sum_{j<s} log1p(a/(x+j))`` (>= 0).

    For x > 0, a >= 0, s >= 0 (any reals; broadcast). The first ``m0 = ceil(10 - x)`` terms are summed
    explicitly, the rest from `_asymptotic` at x + m0 >= 10; for s < m0 the identity
    R(x, a, s) = H(x, m0) - H(x + s, m1) + R(x + m0, a, s + m1 - m0) with H the explicit sums
    (m1 = ceil(10 - x - s)) keeps both series arguments >= 10.
    """
    x, a, s = jnp.broadcast_arrays(*(jnp.asarray(v, dtype=jnp.result_type(float)) for v in (x, a, s)))
    m0 = jnp.clip(jnp.ceil(ASYMPTOTIC_FROM - x), 0, _HEAD)
    m1 = jnp.clip(jnp.ceil(ASYMPTOTIC_FROM - x - s), 0, _HEAD)
    r = _head(x, a, m0) - _head(x + s, a, m1) + _asymptotic(x + m0, a, s + m1 - m0)
    return jnp.maximum(r, 0.0)   # >= 0 exactly (rounding can leave -1e-20 where R = 0)


def log_choose(n, c):
    """log C(n, c) = log Γ(n+1) - log Γ(c+1) - log Γ(n-c+1) (exactly 0 at c = 0 and c = n)."""
    return gammaln(n + 1.0) - gammaln(c + 1.0) - gammaln(n - c + 1.0)


def beta_binomial_nll(alpha, beta, n, c):
    """``-log P(c | n)`` under the beta-binomial, as a sum of non-negative rising-factorial ratios.

    ``-log C(n, c) + R(alpha, beta + n - c, c) + R(beta, alpha, n - c)`` (module docstring); >= 0
    up to rounding (it is 0 only when c = 0 or c = n and the data are certain).
    """
    alpha, beta, n, c = jnp.broadcast_arrays(*(jnp.asarray(v, dtype=jnp.result_type(float)) for v in (alpha, beta, n, c)))
    # both ratios in one call (stacked on a leading axis): half the graph to compile
    ratios = log_rising_ratio(jnp.stack([alpha, beta]), jnp.stack([beta + n - c, alpha]), jnp.stack([c, n - c]))
    return -log_choose(n, c) + ratios[0] + ratios[1]


def zero_inflated_nll(pi, alpha, beta, n, c):
    """``-log [pi [c = 0] + (1 - pi) P_Beta(c | n)]`` (zero-inflated beta-binomial, this project's addition)."""
    bb = beta_binomial_nll(alpha, beta, n, c)
    log_rest = jnp.log1p(-pi) - bb
    at_zero = -jnp.logaddexp(jnp.log(pi), log_rest)
    return jnp.where(c == 0, at_zero, -log_rest)


@jax.jit
def beta_pass_at_k(alpha, beta, k):
    """pass@k when per-problem success probabilities are Beta(α, β) (Schaeffer et al. 2025, Eq. 27).

    ``1 - B(α, β + k) / B(α, β) = -expm1(-R(β, α, k))`` (`log_rising_ratio`): in [0, 1] and
    non-decreasing in k by construction, accurate for every α, β > 0 and k >= 0 (real). Pure jnp,
    jit-compiled; broadcasts over α, β and k.
    """
    return -jnp.expm1(-log_rising_ratio(beta, alpha, k))


@jax.jit
def zero_inflated_pass_at_k(pi, alpha, beta, k):
    """pass@k of the zero-inflated Beta: ``(1 - pi) (1 - B(α, β + k) / B(α, β))``."""
    return (1.0 - pi) * beta_pass_at_k(alpha, beta, k)


def pass_at_k_degeneracy(x, y):
    """Tables on which a Beta pass@k fit does not exist or is barely identified (`Law.degeneracy`).

    Counts must be whole numbers 0 <= c <= n. No problem ever solved (every c = 0), or every sample
    of every problem correct: the likelihood keeps growing as the mean success rate goes to 0 (or
    1), so there is no maximum-likelihood fit: an error. One or two problems ever solved (or ever
    failed): the fit rests on those problems alone: a warning.
    """
    n, c = np.asarray(x["n"], np.float64), np.asarray(y, np.float64)
    bad = (c < 0) | (c > n) | (c != np.round(c)) | (n != np.round(n)) | (n < 1)
    if bad.any():
        rows = np.flatnonzero(bad)[:10].tolist()
        return "error", f"counts must be whole numbers with 0 <= c <= n and n >= 1; not so at rows {rows}"
    problems, solved, failed = len(c), int((c > 0).sum()), int((c < n).sum())
    samples = int(n.sum())
    if solved == 0:
        return "error", (f"degenerate table: no problem was ever solved (c = 0 in all {problems} problems, "
                         f"{samples} samples): the likelihood grows without bound as alpha/(alpha+beta) -> 0, "
                         f"so no maximum-likelihood fit exists; all one can say is pass@1 < {3 / samples:.3g} "
                         "(95%, the rule of three)")
    if failed == 0:
        return "error", (f"degenerate table: every sample of every problem was correct ({problems} problems, "
                         f"{samples} samples): no maximum-likelihood fit exists (alpha/(alpha+beta) -> 1)")
    if solved <= 2:
        return "warning", (f"degenerate table: only {solved} of {problems} problems were ever solved: alpha "
                           "and beta rest on those problems alone and are barely identified")
    if failed <= 2:
        return "warning", (f"degenerate table: only {failed} of {problems} problems were ever failed: alpha and "
                           "beta rest on those problems alone and are barely identified")
    return None


def _zi_nll(p, x, y):
    return zero_inflated_nll(p["pi"], p["alpha"], p["beta"], x["n"], y)


def _zi_design(rng, size):
    """Samples per problem: 50 to 500 (a benchmark of `size` problems)."""
    return {"n": rng.integers(50, 501, size).astype(np.float64)}


def _zi_simulate(rng, params, x):
    """p_i = 0 with probability pi, else p_i ~ Beta(α, β); c_i ~ Binomial(n_i, p_i)."""
    n = np.asarray(x["n"]).astype(np.int64)
    p = rng.beta(float(params["alpha"]), float(params["beta"]), size=n.shape)
    p = np.where(rng.random(n.shape) < float(params["pi"]), 0.0, p)
    return rng.binomial(n, p).astype(np.float64)


pass_at_k_zero_inflated_beta = register(Law(
    name="pass_at_k_zero_inflated_beta",
    objective_source='maximum likelihood (zero-inflated beta-binomial), as pass_at_k_beta',
    params=(
        Param("pi", "bounded", lower=0.0, upper=1.0, grid=(0.05, 0.3, 0.7),
              doc="fraction of problems never solved (p = 0)"),
        Param("alpha", "log", grid=(0.1, 0.5, 2.0), doc="Beta shape at p -> 0 for the other problems"),
        Param("beta", "log", grid=(0.5, 3.0, 20.0), doc="Beta shape at p -> 1 for the other problems"),
    ),
    covariates=("n",),
    target="c",
    fn=lambda p, x: x["n"] * (1.0 - p["pi"]) * p["alpha"] / (p["alpha"] + p["beta"]),
    nll=_zi_nll,
    objective="nll",
    positive=("n",),
    formula=("p_i = 0 with probability pi, else p_i ~ Beta(alpha, beta); c_i ~ Binomial(n_i, p_i); "
             "pass@k = (1 - pi) (1 - B(alpha, beta+k)/B(alpha, beta))"),
    citation=("Beta model of per-problem success: Schaeffer et al. (2025), 'How Do Large Language Monkeys Get "
              "Their Power (Laws)?', arXiv:2502.17578, App. E.4 Eqs. 24-27; the zero inflation (a point mass "
              "at p = 0) is this project's addition, not in the paper"),
    reference={"pi": 0.3, "alpha": 0.5, "beta": 3.0},  # illustrative, not a published fit
    design=_zi_design,
    simulate=_zi_simulate,
    degeneracy=pass_at_k_degeneracy,
))
