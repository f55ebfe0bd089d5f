"""Parameter counts, training FLOPs per token, peak FLOP/s and MFU, for a decoder-only transformer.

Model-agnostic: every function takes plain integers (a "shape" mapping, as produced by
``models.transformer.shape_dict``), so this module never imports the model code.

Shape keys: vocab_size, d_model, n_layers, n_heads, n_kv_heads, head_dim, d_ff, gated (bool:
gated MLP such as SwiGLU with three matrices, else two), tie_embeddings (bool).

Conventions for training FLOPs per token (``flops_per_token(shape, seq_len, convention)``); a
FLOP is one floating-point add or multiply, so one multiply-accumulate = 2 FLOPs:

* ``"6N"``: 6 x total parameters (Kaplan et al. 2020, arXiv:2001.08361, Sec. 2.1, C ~ 6ND;
  the convention of Hoffmann et al. 2022 "Chinchilla", arXiv:2203.15556, whose N includes
  embeddings). Ignores attention scores.
* ``"6N_nonembed"``: 6 x non-embedding parameters (Kaplan et al. 2020, Eq. 2.2 / Table 1:
  C_forward ~ 2N + 2 n_layer n_ctx d_attn, N excluding embeddings; the context term is dropped).
* ``"exact"``: 3 x the forward matmul FLOPs (forward, plus backward = 2 x forward: one matmul for
  the input gradient and one for the weight gradient), with, per token and layer,
  Q/K/V/O projections 2 d (2 H Dh + 2 K Dh), MLP 2 d F (x3 gated, x2 ungated), attention scores
  QK^T and weighted values 2 x 2 H Dh L, causal attention counted at HALF (each query sees on
  average L/2 keys; MaxText's convention in ``calculate_tflops_training_per_device``; the causal
  forward attention term 2 n_layers L H Dh is Kaplan et al.'s 2 n_layer n_ctx d_attn), plus the
  LM head 2 d V. Embedding lookups, norms, softmax, rotary and activations count 0.
* ``"exact_noncausal"``: as "exact" with attention counted in full (what an implementation that
  computes the whole L x L score matrix, e.g. XLA's ``dot_product_attention``, executes; also
  levanter's count).

Training FLOPs for D tokens = flops_per_token x D (``training_flops``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

SHAPE_KEYS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "gated", "tie_embeddings")
CONVENTIONS = ("6N", "6N_nonembed", "exact", "exact_noncausal")
# A fitted law relates compute to N and D as C = k N D, and names how its C was counted: one of
# CONVENTIONS (k = 6 for the 6N ones; the exact ones need the runs' k, e.g. median C / (N D)), or
# "custom" for any other k the caller gives. Names of older files ("6ND", "<k>ND") still read.
FIT_CONVENTIONS = CONVENTIONS + ("custom",)
_SIX_N = ("6N", "6N_nonembed")


def convention_k(flop_convention: str | None = None, k: float | None = None) -> tuple[float, str]:
    """``(k, name)`` of ``C = k N D`` for a FLOP-convention name of `FIT_CONVENTIONS` and/or a k.

    Nothing given: ``(6.0, "6N")``. "6N"/"6N_nonembed": k = 6 unless given. "exact",
    "exact_noncausal" and "custom" need ``k``. Only ``k``: ``(k, "custom")`` (``(6.0, "6N")`` for
    k = 6). Older names: "6ND" reads as "6N", "<k>ND" as ``(k, "custom")``. ValueError otherwise.
    """
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, float)) and not hasattr(k, "dtype") or not (
                math.isfinite(float(k)) and float(k) > 0):
            raise ValueError(f"k (FLOPs per parameter per token) must be a positive number, got {k!r}")
        k = float(k)
    if flop_convention is None:
        return (6.0, "6N") if k is None or k == 6.0 else (k, "custom")
    if not isinstance(flop_convention, str):
        raise ValueError(f"flop_convention must be a string, one of {FIT_CONVENTIONS}, got {flop_convention!r}")
    if flop_convention not in FIT_CONVENTIONS and flop_convention.endswith("ND"):   # older files' names
        try:
            legacy = float(flop_convention[:-2])
        except ValueError:
            legacy = float("nan")
        if not (math.isfinite(legacy) and legacy > 0):
            raise ValueError(f"unknown flop_convention {flop_convention!r}; use one of {FIT_CONVENTIONS}")
        if k is not None and k != legacy:
            raise ValueError(f"flop_convention {flop_convention!r} says k = {legacy:g} but k = {k:g} was given")
        return (6.0, "6N") if legacy == 6.0 else (legacy, "custom")
    if flop_convention not in FIT_CONVENTIONS:
        raise ValueError(f"unknown flop_convention {flop_convention!r}; use one of {FIT_CONVENTIONS}")
    if k is None:
        if flop_convention not in _SIX_N:
            raise ValueError(f"flop_convention {flop_convention!r} needs k= (FLOPs per parameter per token "
                             "of C = k N D, e.g. the runs' median C / (N D))")
        return 6.0, flop_convention
    return k, flop_convention


def _check_shape(shape: Mapping) -> dict:
    if not isinstance(shape, Mapping):
        raise ValueError(f"shape must be a mapping with keys {SHAPE_KEYS}, got {type(shape).__name__}")
    missing = [k for k in SHAPE_KEYS if k not in shape]
    if missing:
        raise ValueError(f"shape is missing keys {missing} (needs {SHAPE_KEYS})")
    out = {}
    for k in SHAPE_KEYS:
        v = shape[k]
        if k in ("gated", "tie_embeddings"):
            out[k] = bool(v)
            continue
        if isinstance(v, bool) or int(v) != v or v <= 0:
            raise ValueError(f"shape[{k!r}] must be a positive integer, got {v!r}")
        out[k] = int(v)
    if out["n_heads"] % out["n_kv_heads"]:
        raise ValueError(f"n_heads ({out['n_heads']}) must be a multiple of n_kv_heads ({out['n_kv_heads']})")
    return out


def param_counts(shape: Mapping) -> dict:
    """{"total", "embedding", "nonembedding"} parameter counts of the models.transformer layout.

    Per layer: Q and O 2 d H Dh, K and V 2 d K Dh, MLP (3 if gated else 2) d F, two RMSNorm
    scales 2 d. Plus the final norm d. Embedding: V d, plus V d for an untied unembedding.
    """
    s = _check_shape(shape)
    d, hd = s["d_model"], s["head_dim"]
    attn = 2 * d * s["n_heads"] * hd + 2 * d * s["n_kv_heads"] * hd
    mlp = (3 if s["gated"] else 2) * d * s["d_ff"]
    per_layer = attn + mlp + 2 * d
    nonembedding = s["n_layers"] * per_layer + d
    embedding = s["vocab_size"] * d * (1 if s["tie_embeddings"] else 2)
    return {"total": nonembedding + embedding, "embedding": embedding, "nonembedding": nonembedding}


def forward_flops_breakdown(shape: Mapping, seq_len: int, causal: bool = True) -> dict:
    """Forward matmul FLOPs per token by component (see module docstring for the formulas)."""
    s = _check_shape(shape)
    if isinstance(seq_len, bool) or int(seq_len) != seq_len or seq_len <= 0:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    d, hd, h, k, L = s["d_model"], s["head_dim"], s["n_heads"], s["n_kv_heads"], s["n_layers"]
    attn_context = seq_len / 2 if causal else seq_len
    return {
        "qkvo": L * 2 * d * (2 * h * hd + 2 * k * hd),
        "attention": L * 2 * 2 * h * hd * attn_context,
        "mlp": L * 2 * d * s["d_ff"] * (3 if s["gated"] else 2),
        "lm_head": 2 * d * s["vocab_size"],
    }


def flops_per_token(shape: Mapping, seq_len: int, convention: str = "exact") -> float:
    """Training (forward + backward) FLOPs per token under ``convention`` (see CONVENTIONS)."""
    if convention == "6N":
        return 6.0 * param_counts(shape)["total"]
    if convention == "6N_nonembed":
        return 6.0 * param_counts(shape)["nonembedding"]
    if convention in ("exact", "exact_noncausal"):
        parts = forward_flops_breakdown(shape, seq_len, causal=(convention == "exact"))
        return 3.0 * float(sum(parts.values()))
    raise ValueError(f"unknown FLOP convention {convention!r}; choose one of {CONVENTIONS}")


def training_flops(shape: Mapping, seq_len: int, tokens: float, convention: str = "exact") -> float:
    """Total training FLOPs for ``tokens`` tokens: flops_per_token x tokens."""
    if not (tokens >= 0 and math.isfinite(tokens)):
        raise ValueError(f"tokens must be a finite non-negative number, got {tokens!r}")
    return flops_per_token(shape, seq_len, convention) * tokens


# --------------------------------------------------------------------------- peak FLOP/s and MFU

# Dense (no structured sparsity) peak FLOP/s per chip, by (device family, dtype). Sources:
#   NVIDIA H100 SXM5 datasheet: BF16/FP16 Tensor Core 1,979 TFLOPS "with sparsity" -> 989.4 dense;
#     FP32 (non-tensor) 67 TFLOPS. H100 PCIe: 1,513 sparse -> 756 dense; FP32 51.
#   NVIDIA H200 SXM datasheet: same compute as H100 SXM (BF16 1,979 sparse -> 989 dense; FP32 67).
#   NVIDIA A100 datasheet (SXM4/PCIe): BF16 Tensor Core 312 TFLOPS dense (624 sparse); FP32 19.5.
#   Google Cloud TPU system architecture pages: v4 275, v5e 197, v5p 459, v6e (Trillium) 918
#     bf16 TFLOPS per chip.
_PEAK_TFLOPS = {
    ("h100-sxm", "bfloat16"): 989.4,
    ("h100-sxm", "float32"): 67.0,
    ("h100-pcie", "bfloat16"): 756.0,
    ("h100-pcie", "float32"): 51.0,
    ("h200", "bfloat16"): 989.4,
    ("h200", "float32"): 67.0,
    ("a100", "bfloat16"): 312.0,
    ("a100", "float32"): 19.5,
    ("tpu-v4", "bfloat16"): 275.0,
    ("tpu-v5e", "bfloat16"): 197.0,
    ("tpu-v5p", "bfloat16"): 459.0,
    ("tpu-v6e", "bfloat16"): 918.0,
}
_DTYPE_ALIASES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "bfloat16", "fp16": "bfloat16",
                  "float32": "float32", "fp32": "float32"}


def device_family(device_kind: str) -> str:
    """Map a ``jax.Device.device_kind`` string (e.g. "NVIDIA H100 80GB HBM3", "TPU v5 lite") to a
    key of the peak table; ValueError for unknown devices."""
    kind = device_kind.lower().replace("_", " ")
    if "h200" in kind:
        return "h200"
    if "h100" in kind:
        return "h100-pcie" if "pcie" in kind else "h100-sxm"
    if "a100" in kind:
        return "a100"
    if "tpu" in kind:
        if "v6" in kind:
            return "tpu-v6e"
        if "v5 lite" in kind or "v5e" in kind or "v5litepod" in kind:
            return "tpu-v5e"
        if "v5" in kind:  # "TPU v5" and "TPU v5p" are v5p
            return "tpu-v5p"
        if "v4" in kind:
            return "tpu-v4"
    raise ValueError(f"no peak FLOP/s known for device kind {device_kind!r}; known: "
                     f"{sorted({f for f, _ in _PEAK_TFLOPS})}")


def peak_flops(device_kind: str, dtype: str = "bfloat16") -> float:
    """Dense peak FLOP/s of one chip for matmuls in ``dtype`` (float16 counted as bfloat16)."""
    if dtype not in _DTYPE_ALIASES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPE_ALIASES)}")
    family = device_family(device_kind)
    key = (family, _DTYPE_ALIASES[dtype])
    if key not in _PEAK_TFLOPS:
        raise ValueError(f"no {dtype} peak FLOP/s known for {family} ({device_kind!r})")
    return _PEAK_TFLOPS[key] * 1e12


def mfu(tokens_per_s: float, flops_per_token: float, n_devices: int, device_kind: str,
        dtype: str = "bfloat16") -> float:
    """Model FLOPs utilization = tokens_per_s x flops_per_token / (n_devices x peak_flops).

    Uses whatever FLOP convention ``flops_per_token`` was computed with (state it when you
    report MFU; MaxText and PaLM use the causal "exact"-style count).
    """
    if not (tokens_per_s >= 0 and flops_per_token > 0 and n_devices >= 1):
        raise ValueError(f"mfu needs tokens_per_s >= 0, flops_per_token > 0, n_devices >= 1; got "
                         f"{tokens_per_s!r}, {flops_per_token!r}, {n_devices!r}")
    return tokens_per_s * flops_per_token / (n_devices * peak_flops(device_kind, dtype))


# --------------------------------------------------------------------------- inference (sampling) FLOPs

INFERENCE_CONVENTIONS = ("2N", "2N_nonembed", "exact")


def inference_flops_per_token(shape: Mapping, context_len: int, convention: str = "exact") -> float:
    """Forward FLOPs to process ONE token (prefilled or generated) that attends to ``context_len``
    tokens (itself included), under ``convention``:

    * ``"2N"``: 2 x total parameters (one multiply-accumulate per weight; the inference
      counterpart of Kaplan et al. 2020's C_forward ~ 2N, arXiv:2001.08361 Sec. 2.1, with the
      embedding counted as Hoffmann et al. 2022 do). No attention term.
    * ``"2N_nonembed"``: 2 x non-embedding parameters (Kaplan et al. 2020, Eq. 2.2 / Table 1 without
      the 2 n_layer n_ctx d_attn context term).
    * ``"exact"``: the forward matmul FLOPs of ``forward_flops_breakdown`` for one token: Q/K/V/O,
      MLP and LM head, plus attention over the context: QK^T and the weighted values,
      2 x 2 n_layers H Dh context_len (the training "exact" convention's attention term with the
      actual context instead of L/2). Embedding lookup, norms, softmax, rotary count 0.

    A KV-cache sampler that attends over a fixed-size cache (``models.sampling``) executes
    attention over the whole cache; "exact" counts only the ``context_len`` keys that matter.
    """
    if isinstance(context_len, bool) or int(context_len) != context_len or context_len <= 0:
        raise ValueError(f"context_len must be a positive integer, got {context_len!r}")
    if convention == "2N":
        return 2.0 * param_counts(shape)["total"]
    if convention == "2N_nonembed":
        return 2.0 * param_counts(shape)["nonembedding"]
    if convention == "exact":
        parts = forward_flops_breakdown(shape, int(context_len), causal=False)
        return float(sum(parts.values()))
    raise ValueError(f"unknown inference FLOP convention {convention!r}; choose one of {INFERENCE_CONVENTIONS}")


def sampling_flops(shape: Mapping, prompt_len: int, new_tokens: float, n_samples: int = 1,
                   convention: str = "exact", shared_prefill: bool = True) -> float:
    """Forward FLOPs to draw ``n_samples`` completions of ``new_tokens`` tokens after one prompt
    of ``prompt_len`` tokens, counted as a KV-cache sampler runs them:

      prefill:  the P prompt tokens, token t at context t (t = 1..P), once when
                ``shared_prefill`` (one prefill, cache copied to every sample, as
                ``models.sampling.Sampler`` does) else once per sample;
      decode:   per sample, the first T - 1 generated tokens are fed back, token i at context
                P + i + 1 (i = 0..T-2); the last token's logits are never needed.

    So C = m_pre * sum_t f(t) + n_samples * sum_i f(P + i + 1), f = ``inference_flops_per_token``
    (under "2N"/"2N_nonembed" this is 2N x (m_pre P + n_samples (T - 1))). ``new_tokens`` may be a
    mean length (a float >= 1); the attention sum is then linear-interpolated, exact for integers.
    """
    if isinstance(prompt_len, bool) or int(prompt_len) != prompt_len or prompt_len <= 0:
        raise ValueError(f"prompt_len must be a positive integer, got {prompt_len!r}")
    if not (math.isfinite(new_tokens) and new_tokens >= 1):
        raise ValueError(f"new_tokens must be a finite number >= 1, got {new_tokens!r}")
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    base = inference_flops_per_token(shape, 1, convention)
    slope = inference_flops_per_token(shape, 2, convention) - base  # attention FLOPs per context token
    p, fed = int(prompt_len), float(new_tokens) - 1.0

    def summed(first_context, count):  # sum of f(c) for c = first_context .. first_context + count - 1
        return count * base + slope * (count * (first_context - 1) + count * (count - 1) / 2.0)

    prefill = summed(1, p) * (1 if shared_prefill else int(n_samples))
    return prefill + int(n_samples) * summed(p + 1, fed)
