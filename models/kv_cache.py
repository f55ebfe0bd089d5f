"""The key/value cache of ``models.sampling``: float, or int8 with one scale per token and head.

    cache = init_cache(cfg, batch, max_len)                  # {"k", "v": [L, B, S, K, Dh] compute dtype,
                                                             #  "segment_ids": [B, S] int32}
    cache = init_cache(cfg, batch, max_len, kv_dtype="int8") # + "k_scale", "v_scale": [L, B, S, K] float32
    cache_bytes(cache)                                       # bytes of keys and values (scales included)

int8 cache (symmetric absmax, per token): each new key/value vector x (one layer, row, position and
kv head; Dh values, after the rotary embedding for keys) is stored as q = round(x / s) in
[-127, 127] int8 with s = max|x| / 127 in float32, and read back as q * s. The numbers come from
``models.quant_formats.quantize_per_token`` (qwix), the same call as the fake-quantized KV path
(``fake_quantize(x, "int8")``, ``QuantConfig(kv="int8")``), so sampling with this cache
reproduces a full forward pass of ``ptq_model(cfg, QuantConfig(kv="int8"))`` to float
tolerance (tests/test_sampling.py; ``quantization.kv_calibration`` says why the scale is
absmax / 127 and not qwix's default absmax / 127.5): Kumar et al. 2024's
P_kv = 8 (arXiv:2411.04330, Sec. 2.3) at sampling time. Plain jnp: the dequantized keys/values of
a layer are materialized for ``jax.nn.dot_product_attention`` (no fused int8 kernel).

Bytes per (layer, row, position, kv head): Dh (int8 values) + 4 (one float32 scale), against
4 Dh for a float32 cache: a ratio of (1 + 4/Dh) / 4 (0.2578 at Dh = 128, 0.28125 at Dh = 32,
0.375 at Dh = 8), and (1 + 4/Dh) / 2 against bfloat16.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from models.quant_formats import quantize_per_token

KV_DTYPES = (None, "int8", "float32", "bfloat16", "float16")


def check_kv_dtype(kv_dtype) -> str | None:
    """None (the model's compute dtype), "int8" (quantized) or a float dtype name; ValueError otherwise."""
    if kv_dtype is not None and not isinstance(kv_dtype, str):
        kv_dtype = jnp.dtype(kv_dtype).name
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"kv cache dtype {kv_dtype!r}; expected one of {KV_DTYPES}")
    return kv_dtype


def init_cache(cfg, batch: int, max_len: int, kv_dtype=None) -> dict:
    """Empty cache for ``batch`` rows of up to ``max_len`` tokens of model ``cfg``.

    kv_dtype: None = ``cfg.compute_dtype``; "int8" adds ``k_scale``/``v_scale`` [L, B, S, K] float32.
    """
    kv_dtype = check_kv_dtype(kv_dtype)
    shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.head_dim)
    dtype = cfg.compute_dtype if kv_dtype is None else jnp.dtype(kv_dtype)
    cache = {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
             "segment_ids": jnp.zeros((batch, max_len), jnp.int32)}
    if kv_dtype == "int8":
        cache["k_scale"] = jnp.zeros(shape[:-1], jnp.float32)
        cache["v_scale"] = jnp.zeros(shape[:-1], jnp.float32)
    return cache


def is_quantized(cache) -> bool:
    return "k_scale" in cache


def quantize(x):
    """(int8 values, float32 scales without the last axis) of ``x`` [..., Dh]: the KV fake
    quantization's numbers (``models.quant_formats.quantize_per_token(x, "int8")``)."""
    q = quantize_per_token(x, "int8")
    return q.qvalue, q.scale[..., 0].astype(jnp.float32)


def dequantize(values, scales, dtype):
    """values [..., Dh] int8 x scales [...] float32 -> ``dtype``."""
    return (values.astype(jnp.float32) * scales[..., None]).astype(dtype)


def write(layer_cache: dict, keys, values, index) -> dict:
    """One layer's cache with ``keys``/``values`` [B, T, K, Dh] written at positions [index, index+T)
    (quantized when the cache is int8)."""
    start = (0, index, 0, 0)
    if not is_quantized(layer_cache):
        return {"k": jax.lax.dynamic_update_slice(layer_cache["k"], keys.astype(layer_cache["k"].dtype), start),
                "v": jax.lax.dynamic_update_slice(layer_cache["v"], values.astype(layer_cache["v"].dtype), start)}
    out = {}
    for name, x in (("k", keys), ("v", values)):
        q, scale = quantize(x)
        out[name] = jax.lax.dynamic_update_slice(layer_cache[name], q, start)
        out[f"{name}_scale"] = jax.lax.dynamic_update_slice(layer_cache[f"{name}_scale"], scale, start[:3])
    return out


def read(layer_cache: dict, dtype):
    """(keys, values) of one layer's cache in ``dtype`` (dequantized when int8)."""
    if not is_quantized(layer_cache):
        return layer_cache["k"].astype(dtype), layer_cache["v"].astype(dtype)
    return (dequantize(layer_cache["k"], layer_cache["k_scale"], dtype),
            dequantize(layer_cache["v"], layer_cache["v_scale"], dtype))


def cache_bytes(cache) -> int:
    """Bytes of the keys and values (and their scales); segment ids not counted."""
    return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize
                   for name, x in cache.items() if name != "segment_ids"))


def repeat_rows(cache: dict, k: int) -> dict:
    """Each row's cache repeated ``k`` times (rows b*k .. b*k + k - 1)."""
    return {name: jnp.repeat(x, k, axis=0 if name == "segment_ids" else 1) for name, x in cache.items()}
