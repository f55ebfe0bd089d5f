"""Quantization laws: loss under low-precision training, and degradation from post-training quantization.

Three registered laws and the plain functions behind them:

- ``precision`` (Kumar et al. 2024): loss of a model *trained* with weights, activations and KV cache
  in ``P_w``, ``P_a``, ``P_kv`` bits, through an effective parameter count
  ``N_eff = N (1 - e^{-P_w/γ_w}) (1 - e^{-P_a/γ_a}) (1 - e^{-P_kv/γ_kv})`` (their Eq. 4) put into a
  Chinchilla form ``L = A N_eff^{-α} + B D^{-β} + E`` (their Finding 2). ``precision_weights`` is the
  weight-only special case of their Eq. 3 (activations and KV cache in high precision), with three
  fewer parameters to identify.
- ``ptq_precision`` (Kumar et al. 2024, Eq. 2 / Finding 1): the loss *increase* from post-training
  quantization (PTQ) of a model trained in BF16 or above to ``P_post`` bits,
  ``δ_PTQ(N, D, P_post) = C_T (D^{γ_D} / N^{γ_N}) e^{-P_post/γ_post}``.
- ``ptq_degradation`` (Ouyang et al. 2024, Eq. 8): the same quantity ("quantization-induced
  degradation", QiD) in power-law form, ``ΔqLoss(N, D, P) = k D^β / (N^α P^γ)``.

Why separate laws rather than one: the training-precision law and the PTQ term are measured on
different targets (final loss of a quantized-trained run vs. the loss *difference* before/after
PTQ) and are fitted on different experiments, so each is a `Law` with its own target
(``loss`` / ``delta_loss``). The post-PTQ loss of a high-precision-trained model is their sum,
``precision(...) + ptq_precision(...)``, which `post_ptq_loss` computes (Kumar et al. Eq. 1 / Eq. 11
with high training precision, where ``N_eff ≈ N``). Kumar et al.'s unified form (Eq. 9, Sec. 5)
additionally uses ``N_eff`` in the PTQ term and multiplies it by robustification factors
``Π_{x ∈ {w, a, kv}} [1 - e^{-C_x (P_x - P_post)}]`` (Eq. 8 for weights alone), so that models
trained in low precision degrade less; it is not implemented here because its constants ``C_x`` are
not available to us and it needs runs with low training precision *and* PTQ to fit.

Verification status (checked with the project's search tool):

- Kumar, Ankner, Spector, Bordelon, Muennighoff, Paul, Pehlevan, Ré, Raghunathan, "Scaling Laws for
  Precision", arXiv:2411.04330 (ICLR 2025). FORMULAS VERIFIED against a full-text transcription of
  the paper (Eqs. 1-5, 8, 9, 11 and Findings 1-4 as cited above; sweep: N = 30, 60, 110, 220M
  non-embedding parameters, D = 1.5-26B tokens, P_w, P_a, P_kv in [3, 12] bits, integer
  fake-quantization of the forward pass, GPTQ for PTQ; Sec. 2.3, 3, 4). The compute model of their
  Eq. 5 is ``C = (6/16) N D P``.
  CONSTANTS NOT VERIFIED: the paper prints its fitted values only in Appendix K, which the
  transcription we found does not include. ``A=4299, α=0.4965, B=18060, β=0.5, E=2.7648,
  γ_w=2.6745, γ_a=2.2102, γ_kv=0.9578, C_T=0.0598, γ_D=0.5068, γ_N=0.3439`` come from one secondary
  source (a 2026 explanatory blog post that attributes them to the paper), and two checks against
  statements in the paper's body raise doubts: (i) with these γ the compute-optimal training
  precision of Eq. 5 is ~3.5 bits (it solves Σ_x (P/γ_x) / (e^{P/γ_x} - 1) = 1; ~3.7 bits with
  the paper's tied form (1 - e^{-P/γ̄})^3, γ̄ the mean γ), budget-independent as the paper says,
  but the paper reports "around 7-8 bits" (Sec. 4.3.2, Finding 3); (ii) the paper calls the
  fitted γ_D and γ_N "similar" (Sec. 3.1), which 0.51 and 0.34 hardly are. ``γ_post`` was found
  nowhere: the reference value 1.0 is ILLUSTRATIVE.
- Ouyang, Ge, Hartvigsen, Zhang, Mi, Yu, "Low-Bit Quantization Favors Undertrained LLMs: Scaling
  Laws for Quantized LLMs with 100T Training Tokens", arXiv:2411.17691 (ACL 2025). VERIFIED against
  the figure captions of the arXiv HTML (v1) as reproduced by a paper digest, and two further
  independent transcriptions: the unified law fitted on the GPTQ-quantized Pythia suite (Eq. 8,
  Fig. 6) is ``ΔqLoss(N, D, P) = 0.017 D^0.5251 / (N^0.2261 P^5.4967)`` with N the number of
  NON-embedding parameters, D training tokens and P the bit width. (The one-factor fits of Eqs. 5-7,
  Figs. 3-5, give β = 0.5316, α = 0.2276, γ = 5.4812; an earlier version of this module mixed those
  with the unified β.) All 16 entries of the 2-bit column of their Table 1 (training tokens that
  reach a given QiD for 1B-405B models) follow from Eq. 8 to within 3%, the rounding of k; the 3-
  and 4-bit columns do not (Eq. 8 gives 0.78-1.58 times the stated QiD there), so those rest on a
  fit we could not identify. The paper predicts the quantized loss as ``Loss_16bit + ΔqLoss``
  (Fig. 7).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.nn import logsumexp

from scaling.laws.law import Law, Param, register

KUMAR_CITATION = (
    "Kumar, Ankner, Spector, Bordelon, Muennighoff, Paul, Pehlevan, Ré, Raghunathan (2024), "
    "'Scaling Laws for Precision', arXiv:2411.04330 (ICLR 2025)"
)
OUYANG_CITATION = (
    "Ouyang, Ge, Hartvigsen, Zhang, Mi, Yu (2024), 'Low-Bit Quantization Favors Undertrained LLMs: "
    "Scaling Laws for Quantized LLMs with 100T Training Tokens', arXiv:2411.17691 (ACL 2025)"
)

# Kumar et al. fitted constants as quoted by ONE secondary source; not verified against the paper's
# Appendix K (see the module docstring for two reasons to doubt them).
KUMAR_PRECISION_REFERENCE = {
    "A": 4299.0, "alpha": 0.4965, "B": 18060.0, "beta": 0.5, "E": 2.7648,
    "gamma_w": 2.6745, "gamma_a": 2.2102, "gamma_kv": 0.9578,
}
# C_T, gamma_D, gamma_N as quoted by the same secondary source (unverified); gamma_post is
# ILLUSTRATIVE (not found in any source).
KUMAR_PTQ_REFERENCE = {"C_T": 0.0598, "gamma_D": 0.5068, "gamma_N": 0.3439, "gamma_post": 1.0}
# Ouyang et al. 2024, Eq. 8 / Fig. 6: the unified fit on GPTQ-quantized Pythia checkpoints.
OUYANG_PTQ_REFERENCE = {"k": 0.017, "alpha": 0.2261, "beta": 0.5251, "gamma": 5.4967}


def _log_precision_factor(bits, gamma):
    """log(1 - exp(-bits/gamma)), stable for all bits > 0; 0 for bits = +inf."""
    return jnp.log(-jnp.expm1(-jnp.asarray(bits) / gamma))


def effective_params(N, P_w, P_a=jnp.inf, P_kv=jnp.inf, *, gamma_w=KUMAR_PRECISION_REFERENCE["gamma_w"],
                     gamma_a=KUMAR_PRECISION_REFERENCE["gamma_a"], gamma_kv=KUMAR_PRECISION_REFERENCE["gamma_kv"]):
    """Kumar et al. (2024) effective parameter count of a model trained in low precision.

    ``N_eff = N (1 - e^{-P_w/γ_w}) (1 - e^{-P_a/γ_a}) (1 - e^{-P_kv/γ_kv})`` (Kumar et al. Eq. 4);
    a precision of ``inf`` (the default for activations and KV cache) contributes a factor of 1.
    N counts non-embedding parameters (Kumar et al. Sec. 2.3). Default ``γ`` are the
    secondary-source constants of `KUMAR_PRECISION_REFERENCE` (not verified). jnp in, jnp out.
    """
    log_n_eff = (jnp.log(N) + _log_precision_factor(P_w, gamma_w) + _log_precision_factor(P_a, gamma_a)
                 + _log_precision_factor(P_kv, gamma_kv))
    return jnp.exp(log_n_eff)


def ptq_degradation_kumar(N, D, P_post, *, C_T=KUMAR_PTQ_REFERENCE["C_T"], gamma_D=KUMAR_PTQ_REFERENCE["gamma_D"],
                          gamma_N=KUMAR_PTQ_REFERENCE["gamma_N"], gamma_post=KUMAR_PTQ_REFERENCE["gamma_post"]):
    """Kumar et al. (2024) post-training-quantization loss increase of a high-precision-trained model.

    ``δ_PTQ(N, D, P_post) = C_T (D^{γ_D} / N^{γ_N}) e^{-P_post/γ_post}`` (Kumar et al. Eq. 2, for
    models trained in BF16 or above). Defaults: see `KUMAR_PTQ_REFERENCE` (``C_T, γ_D, γ_N`` not
    verified, ``γ_post`` illustrative). jnp in, jnp out.
    """
    return jnp.exp(jnp.log(C_T) + gamma_D * jnp.log(D) - gamma_N * jnp.log(N) - jnp.asarray(P_post) / gamma_post)


def ptq_degradation_ouyang(N, D, P, *, k=OUYANG_PTQ_REFERENCE["k"], alpha=OUYANG_PTQ_REFERENCE["alpha"],
                           beta=OUYANG_PTQ_REFERENCE["beta"], gamma=OUYANG_PTQ_REFERENCE["gamma"]):
    """Ouyang et al. (2024) quantization-induced degradation ``ΔqLoss = k D^β / (N^α P^γ)`` (Eq. 8).

    N: non-embedding parameters, D: training tokens, P: bit width of the quantized weights.
    Defaults: `OUYANG_PTQ_REFERENCE`, the paper's unified fit on GPTQ-quantized Pythia (Fig. 6):
    k = 0.017, α = 0.2261, β = 0.5251, γ = 5.4967.
    """
    return jnp.exp(jnp.log(k) + beta * jnp.log(D) - alpha * jnp.log(N) - gamma * jnp.log(P))


def post_ptq_loss(N, D, P_post, precision_params=None, ptq_params=None):
    """Loss of a model trained in high precision and then quantized to ``P_post`` bits.

    ``L = A N^{-α} + B D^{-β} + E + δ_PTQ(N, D, P_post)``: Kumar et al. (2024) Eq. 1 / Eq. 11 with
    the training precision taken as infinite (``N_eff = N``, robustification factors of Eq. 9
    equal to 1), i.e. the ``precision`` law at full training precision plus the ``ptq_precision``
    law (Eq. 2).
    """
    pp = dict(KUMAR_PRECISION_REFERENCE if precision_params is None else precision_params)
    qp = dict(KUMAR_PTQ_REFERENCE if ptq_params is None else ptq_params)
    base = pp["A"] * jnp.asarray(N) ** -pp["alpha"] + pp["B"] * jnp.asarray(D) ** -pp["beta"] + pp["E"]
    return base + ptq_degradation_kumar(N, D, P_post, **qp)


# --------------------------------------------------------------------------- the laws


def _precision_log_fn(p, x):
    """log L via log-sum-exp; log N_eff = log N + Σ log(1 - e^{-P/γ})."""
    log_n_eff = jnp.log(x["N"]) + _log_precision_factor(x["P_w"], p["gamma_w"])
    if "P_a" in x:
        log_n_eff = log_n_eff + _log_precision_factor(x["P_a"], p["gamma_a"])
    if "P_kv" in x:
        log_n_eff = log_n_eff + _log_precision_factor(x["P_kv"], p["gamma_kv"])
    terms = jnp.stack(jnp.broadcast_arrays(
        jnp.log(p["A"]) - p["alpha"] * log_n_eff,
        jnp.log(p["B"]) - p["beta"] * jnp.log(x["D"]),
        jnp.log(p["E"]) + jnp.zeros_like(log_n_eff),
    ))
    return logsumexp(terms, axis=0)


def _precision_fn(p, x):
    return jnp.exp(_precision_log_fn(p, x))


def _log_uniform(rng, low, high, n):
    return np.exp(rng.uniform(np.log(low), np.log(high), n))


def _precision_design(rng, n):
    """Kumar et al.'s grid, widened: N 30M-1.7B, D 1.5B-100B tokens, each precision 3-16 bits."""
    return {"N": _log_uniform(rng, 3e7, 1.7e9, n), "D": _log_uniform(rng, 1.5e9, 1e11, n),
            "P_w": rng.integers(3, 17, n).astype(np.float64), "P_a": rng.integers(3, 17, n).astype(np.float64),
            "P_kv": rng.integers(3, 17, n).astype(np.float64)}


def _precision_weights_design(rng, n):
    d = _precision_design(rng, n)
    return {k: d[k] for k in ("N", "D", "P_w")}


_CHINCHILLA_PARAMS = (
    Param("A", "log", grid=(1e3, 1e4), doc="scale of the effective-parameter term"),
    Param("alpha", grid=(0.3, 0.5), doc="exponent of N_eff"),
    Param("B", "log", grid=(1e3, 3e4), doc="scale of the data term"),
    Param("beta", grid=(0.3, 0.5), doc="exponent of D"),
    Param("E", "log", grid=(2.0, 3.0), doc="irreducible loss"),
)
_GAMMA_W = Param("gamma_w", "log", grid=(1.5, 3.5), doc="bit scale of weight precision")

precision = register(Law(
    name="precision",
    objective="huber_log",
    objective_source="huber_log, the library's default (Epoch AI's protocol for Chinchilla, Besiroglu et al. 2024, Sec. 2); the source's own fitting objective was not checked",
    params=_CHINCHILLA_PARAMS + (
        _GAMMA_W,
        Param("gamma_a", "log", grid=(1.5, 3.5), doc="bit scale of activation precision"),
        Param("gamma_kv", "log", grid=(0.5, 1.5), doc="bit scale of KV-cache precision"),
    ),
    covariates=("N", "D", "P_w", "P_a", "P_kv"),
    target="loss",
    fn=_precision_fn,
    log_fn=_precision_log_fn,
    formula=("L = A N_eff^-alpha + B D^-beta + E, "
             "N_eff = N (1 - exp(-P_w/gamma_w)) (1 - exp(-P_a/gamma_a)) (1 - exp(-P_kv/gamma_kv))"),
    citation=KUMAR_CITATION + "; Finding 2 (Sec. 4.2): L = A N_eff^-alpha + B D^-beta + E with N_eff of "
             "Eq. 4 (form verified). Reference constants from one secondary source, NOT verified against "
             "the paper's Appendix K.",
    reference=KUMAR_PRECISION_REFERENCE,
    design=_precision_design,
))

precision_weights = register(Law(
    name="precision_weights",
    objective="huber_log",
    objective_source="huber_log, the library's default (Epoch AI's protocol for Chinchilla, Besiroglu et al. 2024, Sec. 2); the source's own fitting objective was not checked",
    params=_CHINCHILLA_PARAMS + (_GAMMA_W,),
    covariates=("N", "D", "P_w"),
    target="loss",
    fn=_precision_fn,
    log_fn=_precision_log_fn,
    formula="L = A N_eff^-alpha + B D^-beta + E, N_eff = N (1 - exp(-P_w/gamma_w))",
    citation=KUMAR_CITATION + "; Eq. 3 (Sec. 4.1), quantization-aware training of the weights only "
             "(activations and KV cache in high precision); form verified, reference constants not.",
    reference={k: KUMAR_PRECISION_REFERENCE[k] for k in ("A", "alpha", "B", "beta", "E", "gamma_w")},
    design=_precision_weights_design,
))


def _ptq_precision_log_fn(p, x):
    return (jnp.log(p["C_T"]) + p["gamma_D"] * jnp.log(x["D"]) - p["gamma_N"] * jnp.log(x["N"])
            - x["P_post"] / p["gamma_post"])


def _ptq_design(rng, n):
    """N 30M-1.7B, D 1.5B-100B tokens, post-training precision 2-8 bits."""
    return {"N": _log_uniform(rng, 3e7, 1.7e9, n), "D": _log_uniform(rng, 1.5e9, 1e11, n),
            "P_post": rng.integers(2, 9, n).astype(np.float64)}


ptq_precision = register(Law(
    name="ptq_precision",
    objective="huber_log",
    objective_source="huber_log, the library's default (Epoch AI's protocol for Chinchilla, Besiroglu et al. 2024, Sec. 2); the source's own fitting objective was not checked",
    params=(
        Param("C_T", "log", grid=(0.01, 0.1), doc="overall scale"),
        Param("gamma_D", grid=(0.3, 0.6), doc="exponent of training tokens"),
        Param("gamma_N", grid=(0.2, 0.5), doc="exponent of parameters"),
        Param("gamma_post", "log", grid=(0.5, 1.5), doc="bit scale of the post-training precision"),
    ),
    covariates=("N", "D", "P_post"),
    target="delta_loss",
    fn=lambda p, x: jnp.exp(_ptq_precision_log_fn(p, x)),
    log_fn=_ptq_precision_log_fn,
    formula="delta_PTQ = C_T D^gamma_D / N^gamma_N * exp(-P_post / gamma_post)",
    citation=KUMAR_CITATION + "; Eq. 2 (Sec. 3.1, Finding 1), models trained in BF16 or above, GPTQ; form "
             "verified. C_T, gamma_D, gamma_N from one secondary source (not verified); reference gamma_post "
             "is illustrative.",
    reference=KUMAR_PTQ_REFERENCE,
    design=_ptq_design,
))


def _ouyang_log_fn(p, x):
    return (jnp.log(p["k"]) + p["beta"] * jnp.log(x["D"]) - p["alpha"] * jnp.log(x["N"])
            - p["gamma"] * jnp.log(x["P"]))


def _ouyang_design(rng, n):
    """Pythia-like sweep: N 160M-12B, D 1B-300B tokens, bit widths 2, 3, 4, 6, 8."""
    return {"N": _log_uniform(rng, 1.6e8, 1.2e10, n), "D": _log_uniform(rng, 1e9, 3e11, n),
            "P": rng.choice(np.array([2.0, 3.0, 4.0, 6.0, 8.0]), n)}


ptq_degradation = register(Law(
    name="ptq_degradation",
    objective="huber_log",
    objective_source="huber_log, the library's default (Epoch AI's protocol for Chinchilla, Besiroglu et al. 2024, Sec. 2); the source's own fitting objective was not checked",
    params=(
        Param("k", "log", grid=(1e-3, 1e-1), doc="overall scale"),
        Param("alpha", grid=(0.1, 0.4), doc="exponent of non-embedding parameters"),
        Param("beta", grid=(0.3, 0.7), doc="exponent of training tokens"),
        Param("gamma", grid=(3.0, 7.0), doc="exponent of bit width"),
    ),
    covariates=("N", "D", "P"),
    target="delta_loss",
    fn=lambda p, x: jnp.exp(_ouyang_log_fn(p, x)),
    log_fn=_ouyang_log_fn,
    formula="QiD = delta_loss = k D^beta / (N^alpha P^gamma)",
    citation=OUYANG_CITATION + "; unified QiD scaling law, Eq. 8; reference = the paper's fit on "
             "GPTQ-quantized Pythia checkpoints (Fig. 6): k = 0.017, alpha = 0.2261, beta = 0.5251, "
             "gamma = 5.4967; N = non-embedding parameters",
    reference=OUYANG_PTQ_REFERENCE,
    design=_ouyang_design,
))


def _saturating_log_fn(p, x):
    """log delta = log k - alpha log N - gamma log P - log(D^-beta + D_sat^-beta)."""
    return (jnp.log(p["k"]) - p["alpha"] * jnp.log(x["N"]) - p["gamma"] * jnp.log(x["P"])
            - jnp.logaddexp(-p["beta"] * jnp.log(x["D"]), -p["beta"] * jnp.log(p["D_sat"])))


ptq_saturating = register(Law(
    name="ptq_saturating",
    objective="huber_log",
    objective_source="huber_log, the library's default (Epoch AI's protocol for Chinchilla, Besiroglu et al. 2024, Sec. 2); no source fits this form",
    params=(
        Param("k", "log", grid=(1e-3, 1e-1), doc="overall scale (Ouyang et al.'s k while D << D_sat)"),
        Param("alpha", grid=(0.1, 0.4), doc="exponent of non-embedding parameters"),
        Param("beta", grid=(0.3, 0.7), doc="exponent of training tokens while D << D_sat"),
        Param("gamma", grid=(3.0, 7.0), doc="exponent of bit width"),
        Param("D_sat", "log", grid=(1e6, 1e9, 1e12), doc="tokens where the growth of delta with D saturates"),
    ),
    covariates=("N", "D", "P"),
    target="delta_loss",
    fn=lambda p, x: jnp.exp(_saturating_log_fn(p, x)),
    log_fn=_saturating_log_fn,
    formula="delta_loss = k / (N^alpha P^gamma (D^-beta + D_sat^-beta))",
    citation="this project's candidate form, not from a paper: Ouyang et al. 2024 Eq. 8 (ptq_degradation, "
             "k D^beta / (N^alpha P^gamma)) while D << D_sat, levelling off at k D_sat^beta / (N^alpha P^gamma) "
             "for D >> D_sat; a candidate for `scaling.select` when the power law in D over-predicts the most-"
             "trained runs. Reference: Ouyang et al.'s constants with an illustrative D_sat = 1e12",
    reference={**OUYANG_PTQ_REFERENCE, "D_sat": 1e12},  # D_sat illustrative
    design=_ouyang_design,
))
