"""Published scaling-law fits as `FittedLaw` objects, and the bundled public data sets.

    import scaling
    hoffmann = scaling.published.get("hoffmann2022")
    hoffmann.compute_optimal(5.76e23)            # Approach 3, C = 6ND
    scaling.published.names()
    df = scaling.published.dataset("chinchilla_points")

Every entry records, in ``provenance``, the paper, the equation, where each constant comes from and
how it was verified (``"verified"``); the FLOP convention sits in ``flop_convention`` (C = k N D)
and, where a paper's compute is not k N D, in ``provenance["compute"]``. Standard errors are those
the paper prints; ``interval()`` then gives normal-approximation intervals, and derived quantities
(`FittedLaw.compute_optimal`) use independent normal draws (papers do not report correlations).
``data.ranges`` are the covariate ranges the paper fitted on, so predictions outside them warn.

Verification (by search of the papers, their reference code, and independent transcriptions):

- hoffmann2022 / hoffmann2022_unrounded: Hoffmann et al. 2022 Eq. 10 (Appendix D.2) and the
  unrounded TeX-source values quoted in Besiroglu et al. 2024, Table 1.
- besiroglu2024: Besiroglu et al. 2024, Table 1 (estimates and standard errors).
- kaplan2020: Kaplan et al. 2020, Table 2 (fit of Eq. 1.5).
- muennighoff2023: the authors' fitted constants in github.com/huggingface/datablations (README,
  "Parametric Fit"), which reproduce the loss values printed there to 1e-12. The paper's own
  section and equation numbers could not be checked.
- deepseek2024_lr / deepseek2024_batch: DeepSeek-AI 2024, Eq. 1, checked against a full-text
  transcription of the paper (Sec. 3.1), with the compute C = M D of Eq. 2 (Sec. 3.2); several other
  transcriptions agree on 0.3118 (some secondary tables print 0.3188). With M from Eq. 2 the law
  reproduces the learning rates of the paper's Table 2 (4.2e-4 for 7B, 3.2e-4 for 67B) to 3% and its
  batch sizes in tokens (2304 and 4608 sequences of 4096 tokens) to 10%.
- kumar2024_precision: NOT VERIFIED. The form (Eq. 4 and Finding 2) is verified (see
  ``scaling.quantization_laws``); the constants come from one secondary source. The paper prints
  them only in Appendix K; the search tool holds the full text (arxiv.org/html/2411.04330v2 and
  an ICLR 2025 text copy) but serves only its opening, and searches for the constants' digits in
  code, pages and issues found no other copy.
- predictable_scale2025_lr / _batch: Li et al. 2025 (Step Law); the constants agree across several
  independent transcriptions of the paper, the token-wise batch size and the 0.25% near-optimality
  filter are confirmed by the authors' code (github.com/step-law/steplaw, code/fit_tool.py); the
  equation number and the exact fitted ranges could not be checked.
"""

from __future__ import annotations

import importlib.resources
import math

import numpy as np
import pandas as pd

from scaling.fitting.fitted import FittedLaw

_CHINCHILLA_RANGES = {"N": [7e7, 1.6e10], "D": [5e9, 5e11]}  # Hoffmann et al. Sec. 3: 70M-16B, 5B-500B

_HOFFMANN = "Hoffmann et al. 2022, 'Training Compute-Optimal Large Language Models', arXiv:2203.15556"
_BESIROGLU = "Besiroglu, Erdil, Barnett, You 2024, 'Chinchilla Scaling: A replication attempt', arXiv:2404.10102"
_KAPLAN = "Kaplan et al. 2020, 'Scaling Laws for Neural Language Models', arXiv:2001.08361"
_MUENNIGHOFF = ("Muennighoff et al. 2023, 'Scaling Data-Constrained Language Models', arXiv:2305.16264 "
                "(NeurIPS 2023; JMLR 2025)")
_DEEPSEEK = ("DeepSeek-AI (Bi et al.) 2024, 'DeepSeek LLM: Scaling Open-Source Language Models with "
             "Longtermism', arXiv:2401.02954")
_STEP = ("Li et al. 2025, 'Predictable Scale: Part I -- Optimal Hyperparameter Scaling Law in Large "
         "Language Model Pretraining' (Step Law), arXiv:2503.04715")
_KUMAR = ("Kumar, Ankner, Spector, Bordelon, Muennighoff, Paul, Pehlevan, Re, Raghunathan 2024, 'Scaling Laws "
          "for Precision', arXiv:2411.04330 (ICLR 2025)")
_DEEPSEEK_COMPUTE = ("x is DeepSeek's compute C = M * D in FLOPs (Sec. 3.2), with M the non-embedding FLOPs per "
                     "token of their Eq. 2, M = 72 n_layer d_model^2 + 12 n_layer d_model l_seq (roughly "
                     "6 N_non-embedding plus attention), not 6 N D with N including embeddings")

_SPECS = {
    "hoffmann2022": dict(
        law="chinchilla",
        params={"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
        ranges=_CHINCHILLA_RANGES,
        provenance={
            "citation": _HOFFMANN + ", Approach 3",
            "equation": "Eq. 2, L = E + A/N^alpha + B/D^beta; fitted values Eq. 10 (Appendix D.2)",
            "notes": "The rounded values printed in the paper body. N counts all parameters, D training "
                     "tokens, loss in nats/token on MassiveText; C = 6ND. No standard errors are published "
                     "(only 10th-90th percentile intervals of the allocation exponents, Table 2: "
                     "a = 0.46, b = 0.54). Besiroglu et al. 2024 show the rounding of beta biases the "
                     "predictions; see hoffmann2022_unrounded and besiroglu2024.",
            "verified": "yes: E, A, B, alpha, beta against the paper (Eq. 10) and Besiroglu et al. Table 1",
        }),
    "hoffmann2022_unrounded": dict(
        law="chinchilla",
        params={"E": 1.6934, "A": 406.4, "B": 410.7, "alpha": 0.3392, "beta": 0.2849},
        ranges=_CHINCHILLA_RANGES,
        provenance={
            "citation": _HOFFMANN + ", Approach 3 (values of the arXiv TeX source, as quoted by " + _BESIROGLU
                        + ", Table 1)",
            "equation": "Eq. 2, L = E + A/N^alpha + B/D^beta",
            "notes": "Unrounded E, alpha, beta from the TeX source; these reproduce the paper's Table 2 "
                     "Approach 3 exponents a = beta/(alpha+beta) = 0.46 and b = 0.54 (the rounded values "
                     "give 0.45). C = 6ND.",
            "verified": "yes: against two independent transcriptions of Besiroglu et al. Table 1",
        }),
    "besiroglu2024": dict(
        law="chinchilla",
        params={"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
        standard_errors={"E": 0.03, "A": 124.58, "B": 1293.23, "alpha": 0.02, "beta": 0.02},
        ranges={"N": [5.7e7, 1.62e10], "D": [1.39e9, 3.18e11]},
        provenance={
            "citation": _BESIROGLU,
            "equation": "Hoffmann et al. Eq. 2 in log-sum-exp form; estimates and standard errors of Table 1",
            "notes": "Refit of 240 of the 245 points extracted from Hoffmann et al. Fig. 4 (the 5 highest-"
                     "loss points excluded); Huber delta = 1e-3 on log loss summed (not averaged), L-BFGS "
                     "from 4,500 starts, standard errors from 4,000 bootstrap resamples. Implied allocation "
                     "exponent a = beta/(alpha+beta) = 0.5126, about 20 tokens per parameter at Chinchilla's "
                     "budget, consistent with Hoffmann et al.'s Approaches 1 and 2. C = 6ND. The project's "
                     "data README quotes more digits for some SEs (E 0.026, alpha 0.015, beta 0.021); those "
                     "could not be verified, so the paper's printed values are used. The covariate ranges "
                     "are those of the bundled 234-point subset (scaling.published.dataset('chinchilla_points')).",
            "verified": "yes: estimates and SEs against two independent transcriptions of Table 1",
        }),
    "kaplan2020": dict(
        law="kaplan",
        params={"N_c": 6.4e13, "D_c": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103},
        ranges={"N": [7.68e2, 1.5e9], "D": [2.2e7, 2.3e10]},
        provenance={
            "citation": _KAPLAN,
            "equation": "Eq. 1.5 (= Eq. 4.1), L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D; "
                        "constants of Table 2",
            "notes": "N counts NON-embedding parameters, D tokens (WebText2, BPE), loss in nats/token; "
                     "the law has no irreducible term. Kaplan et al. count C ~ 6 N D with non-embedding N "
                     "(Sec. 2.1). Their compute-optimal allocation (N ~ C^0.73, Sec. 6) assumes early "
                     "stopping, not this L(N, D). No standard errors published. The separate fits of Eqs. "
                     "1.1-1.2 have different constants (alpha_D = 0.095, N_c = 8.8e13, D_c = 5.4e13).",
            "verified": "yes: Table 2 constants against several independent transcriptions",
        }),
    "muennighoff2023": dict(
        law="data_constrained",
        params={"E": math.exp(0.6254804), "A": math.exp(6.255414), "B": math.exp(7.3049974),
                "alpha": 0.3526596, "beta": 0.3526596, "R_D_star": 15.387756, "R_N_star": 5.309743},
        ranges={"N": [7.1e6, 9e9], "D": [1e8, 9e11], "U": [1e8, 1.78e11]},
        provenance={
            "citation": _MUENNIGHOFF,
            "equation": "parametric fit L = E + A/N'^alpha + B/D'^beta with D' = U_D + U_D R*_D (1 - e^(-R_D/R*_D)), "
                        "N' = U_N + U_N R*_N (1 - e^(-R_N/R*_N)), U_N = min(N, N_opt(U_D)) (as in the authors' "
                        "datablations README; section and equation numbers of the paper not verified)",
            "notes": "Two stages (datablations utils/parametric_fit.ipynb): E, A, B, alpha = beta (tied) fitted "
                     "on 54 points of Hoffmann et al.'s C4 isoFLOP curves, then R*_D, R*_N with those fixed on "
                     "182 of the authors' C4 runs (GPT-2 tokenizer; the bundled data set's in_authors_fit), "
                     "Huber 1e-3 on log loss, L-BFGS from a grid; 15.39 / 5.31 are a local minimum of that "
                     "objective, whose best optimum on the same runs is R*_D 47.0, R*_N 2.33 (0.12% lower; "
                     "docs/studies/data_constrained.md). All parameters counted. R*_D ~ 15.4: repeated "
                     "data loses 1 - 1/e of its value after ~15 repetitions (returns fade after ~16 "
                     "epochs); R*_N ~ 5.3 for excess parameters. alpha and beta are equal in the authors' "
                     "fit. Constants as printed in the authors' code (log A = 6.255414, log B = 7.3049974, "
                     "log E = 0.6254804), which reproduce their example predictions 2.2256 (6.34B params, "
                     "242B tokens, 25B unique) and 2.2270 (8.67B, 178B, 25B). C = 6ND. No SEs published. "
                     "The section and equation numbering of the paper could not be checked.",
            "verified": "yes: constants and formula against github.com/huggingface/datablations (README)",
        }),
    "deepseek2024_lr": dict(
        law="pure_power_law",
        params={"A": 0.3118, "b": -0.1250},
        ranges={"x": [1e17, 2e19]},
        provenance={
            "citation": _DEEPSEEK,
            "equation": "Eq. 1 (Sec. 3.1), eta_opt = 0.3118 * C^-0.1250 (x = C, y = peak learning rate)",
            "compute": _DEEPSEEK_COMPUTE,
            "notes": "Fitted on near-optimal (generalization error within 0.25% of the minimum) runs at 1e17 "
                     "to 2e19 FLOPs, multi-step learning-rate schedule, AdamW; validated at 1e20. The "
                     "learning rate is the peak learning rate. Reproduces Table 2 to 3%: 4.24e-4 (7B, printed "
                     "4.2e-4) and 3.12e-4 (67B, printed 3.2e-4) at C = M * 2T tokens. flop_convention 6ND "
                     "does not apply to this one-covariate law: see 'compute'.",
            "verified": "yes: against a full-text transcription of the paper (Eq. 1, Eq. 2, Table 2) and "
                        "several independent transcriptions of Eq. 1",
        }),
    "deepseek2024_batch": dict(
        law="pure_power_law",
        params={"A": 0.2920, "b": 0.3271},
        ranges={"x": [1e17, 2e19]},
        provenance={
            "citation": _DEEPSEEK,
            "equation": "Eq. 1 (Sec. 3.1), B_opt = 0.2920 * C^0.3271 (x = C, y = batch size in tokens)",
            "compute": _DEEPSEEK_COMPUTE,
            "notes": "Batch size counted in tokens: the law gives 9.2M and 20.6M tokens for the 7B and 67B "
                     "runs of Table 2, which used 2304 and 4608 sequences of 4096 tokens (9.4M and 18.9M). "
                     "Fitted on near-optimal runs at 1e17 to 2e19 FLOPs. flop_convention 6ND does not apply "
                     "to this one-covariate law: see 'compute'.",
            "verified": "yes: against a full-text transcription of the paper (Eq. 1, Eq. 2, Table 2) and "
                        "several independent transcriptions of Eq. 1",
        }),
    "kumar2024_precision": dict(
        law="precision",
        params={"A": 4299.0, "alpha": 0.4965, "B": 18060.0, "beta": 0.5, "E": 2.7648,
                "gamma_w": 2.6745, "gamma_a": 2.2102, "gamma_kv": 0.9578},
        ranges={"N": [3e7, 2.2e8], "D": [1.5e9, 2.6e10], "P_w": [3, 12], "P_a": [3, 12], "P_kv": [3, 12]},
        provenance={
            "citation": _KUMAR,
            "equation": "Finding 2 (Sec. 4.2): L = A N_eff^-alpha + B D^-beta + E, N_eff = N (1 - e^(-P_w/gamma_w)) "
                        "(1 - e^(-P_a/gamma_a)) (1 - e^(-P_kv/gamma_kv)) (Eq. 4); fitted values in Appendix K",
            "compute": "Kumar et al. count training compute as C = (6/16) N D P (Eq. 5, P the training "
                       "precision in bits), not 6 N D; flop_convention 6ND applies only at 16 bits",
            "notes": "Quantization-aware training (integer fake quantization of the forward pass) of weights, "
                     "activations and KV cache at 3-12 bits; N = 30, 60, 110, 220M NON-embedding parameters, "
                     "D = 1.5-26B tokens of Dolma (Sec. 2.3); validated up to 1.7B parameters. Two checks "
                     "against the paper's text raise doubts about these constants: with these gammas the "
                     "compute-optimal training precision of Eq. 5 is ~3.5 bits while the paper reports 7-8 "
                     "bits (Finding 3); and the PTQ exponents quoted by the same source (gamma_D = 0.51, "
                     "gamma_N = 0.34, see scaling.quantization_laws.KUMAR_PTQ_REFERENCE) are hardly 'similar' "
                     "as the paper calls them (Sec. 3.1). No standard errors published. The PTQ law "
                     "(ptq_precision) has no entry: its gamma_post was found in no source.",
            "verified": "no: constants from ONE secondary source (a 2026 explanatory blog post attributing them "
                        "to Appendix K), not checked against the paper; the functional form is verified "
                        "(Eqs. 1-5, 8, 9, 11 against a full-text transcription)",
        }),
    "predictable_scale2025_lr": dict(
        law="power_law_2d",
        params={"A": 1.79, "b_N": -0.713, "b_D": 0.307},
        ranges={"N": [6e7, 1e9], "D": [2e9, 1e11]},
        provenance={
            "citation": _STEP,
            "equation": "eta_opt(N, D) = 1.79 N^-0.713 D^0.307 (the Step Law learning-rate formula)",
            "notes": "N = non-embedding (non-vocabulary) parameters, D = training tokens, y = peak learning "
                     "rate (AdamW). The authors' code fits on configurations whose smoothed training loss "
                     "is within 0.25% of the best of their (N, D) grid (filter_threshold = 0.0025). The "
                     "covariate ranges are approximate: dense models of ~60M to ~1B parameters on up to "
                     "~100B tokens. No SEs published.",
            "verified": "partly: the constants agree across several independent transcriptions (one quoting "
                        "the paper's comparison table); the equation number and exact fitted ranges are "
                        "unverified",
        }),
    "predictable_scale2025_batch": dict(
        law="pure_power_law",
        params={"A": 0.58, "b": 0.571},
        ranges={"x": [2e9, 1e11]},
        provenance={
            "citation": _STEP,
            "equation": "B_opt(D) = 0.58 D^0.571 (x = D training tokens, y = batch size in tokens)",
            "notes": "The optimal batch size depends on the data size D and hardly on N. Batch size counted "
                     "in tokens (the authors' code, github.com/step-law/steplaw code/fit_tool.py, converts "
                     "sequences to tokens before fitting: bs * seq_len). Approximate ranges.",
            "verified": "partly: the constants agree across several independent transcriptions; the token "
                        "unit is confirmed by the authors' code; the equation number and exact fitted ranges "
                        "are unverified",
        }),
}


def names() -> list[str]:
    """Names of the published fits, sorted."""
    return sorted(_SPECS)


def get(name: str) -> FittedLaw:
    """The published fit ``name`` as a fresh `FittedLaw` (see `names()`)."""
    if name not in _SPECS:
        raise ValueError(f"unknown published fit {name!r}; known: {', '.join(names())}")
    spec = _SPECS[name]
    provenance = dict(spec["provenance"], source="scaling.published", name=name)
    return FittedLaw(spec["law"], spec["params"], standard_errors=spec.get("standard_errors"),
                     flop_convention="6N", data={"ranges": spec["ranges"]}, provenance=provenance)


# ---------------------------------------------------------------------------------- data sets

DATASETS = {
    "chinchilla_points": "Final losses of Chinchilla runs (Hoffmann et al. 2022, Fig. 4) as extracted by "
                         "Epoch AI (Besiroglu et al. 2024): C, N, D, loss. 234 rows, Apache-2.0.",
    "overtraining_gadre2024": "104 models at 0.25x-32x the Chinchilla token count (Gadre et al. 2024): N, "
                              "N_no_embed, D, C, cc_mult, lr, warmup, global_bs, 8 validation losses. MIT.",
    "data_constrained_muennighoff2023": "C4 runs with repeated data (Muennighoff et al. 2023): N, D_tokens, "
                                        "U_unique_tokens, epochs, val_loss, in_authors_fit (the 182 runs the authors fitted R*_D, "
                                        "R*_N on). 296 rows, Apache-2.0.",
}


def dataset(name: str) -> pd.DataFrame:
    """A bundled public data set as a DataFrame (numeric columns as float64).

    Read from the package data (``importlib.resources``), so it works from a pip install. Counts
    are cast to float64 on purpose: products such as N * D overflow int64 (N ~ 1e9, D ~ 1e11).
    Provenance and licenses: ``scaling/data/README.md``. To fit the data-constrained law::

        df = dataset("data_constrained_muennighoff2023")
        scaling.fit("data_constrained", df, target="val_loss",
                    columns={"D": "D_tokens", "U": "U_unique_tokens"})
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    resource = importlib.resources.files("scaling").joinpath("data", f"{name}.csv")
    with resource.open("r") as fh:
        df = pd.read_csv(fh)
    for col in df.columns:
        if pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            df[col] = df[col].astype(np.float64)
        elif df[col].dtype == object:
            converted = pd.to_numeric(df[col], errors="coerce")
            if converted.notna().all():
                df[col] = converted.astype(np.float64)
    return df
