"""Quantization formats and the run's ``QuantConfig``: names, bits, per-token quantization, storage.

The formats (``FORMATS``): qwix's integer types ``int2`` ... ``int8`` (symmetric absmax; int2/int3
are stored in int4 containers and int5-int7 in int8 ones, but carry their logical bits), ``nf4``
(NormalFloat-4, Dettmers et al. 2023, arXiv:2305.14314, App. E), ``fp8`` = ``fp8_e4m3`` and
``fp8_e5m2`` (OCP FP8), and the block formats ``mxfp8``/``mxfp4`` (OCP Microscaling: tiles of
32 with a power-of-two scale) and ``nvfp4`` (tiles of 16 with an E4M3 scale).

Also here, because they need nothing of the model: the per-token quantization of keys and values
(``quantize_per_token``, ``fake_quantize``; ``models.kv_cache`` stores these numbers) and the
byte accounting of a quantized params tree (``quantized_weight_bytes``). The bottom of the
quantization modules: it imports no other module of ``models``.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import qwix

METHODS = ("rtn", "gptq")

# name -> (qwix qtype, logical bits per value, required tile size or None, scale bits or None)
# scale bits None: counted at the stored dtype of the scale array (float32 here).
FORMATS: dict[str, tuple] = {
    **{f"int{b}": (f"int{b}", b, None, None) for b in (2, 3, 5, 6, 7)},
    "int4": (jnp.int4, 4, None, None),
    "int8": (jnp.int8, 8, None, None),
    "nf4": ("nf4", 4, None, None),
    "fp8": (jnp.float8_e4m3fn, 8, None, None),
    "fp8_e4m3": (jnp.float8_e4m3fn, 8, None, None),
    "fp8_e5m2": (jnp.float8_e5m2, 8, None, None),
    "mxfp8": ("mxfp8", 8, 32, 8),   # OCP MX: E8M0 shared scale per 32 values
    "mxfp4": ("mxfp4", 4, 32, 8),
    "nvfp4": ("nvfp4", 4, 16, 8),   # E4M3 scale per 16 values
}
_ALIASES = {"float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2", "e4m3": "fp8_e4m3",
            "e5m2": "fp8_e5m2"}


def format_name(qtype) -> str:
    """Canonical ``FORMATS`` name of a format name, alias or dtype; ValueError if unsupported."""
    if not isinstance(qtype, str):
        try:
            qtype = jnp.dtype(qtype).name
        except TypeError:
            raise ValueError(f"unsupported quantization type {qtype!r}; formats: {sorted(FORMATS)}") from None
    name = _ALIASES.get(qtype.lower(), qtype.lower())
    if name not in FORMATS:
        raise ValueError(f"unsupported quantization type {qtype!r}; formats: {sorted(FORMATS)}")
    return name


def qwix_type(name):
    """The qwix qtype of a format (None stays None): dtypes for int4/int8/fp8, strings otherwise."""
    return None if name is None else FORMATS[format_name(name)][0]


def format_bits(name) -> int:
    """Logical bits per quantized value (scales not included; see ``quantized_weight_bytes``)."""
    return FORMATS[format_name(name)][1]


# --------------------------------------------------------------------------- the run config


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """Quantization of a run or a measurement; all None = the float model.

    weights / activations / kv: a ``FORMATS`` name or None (float). ``activations`` quantizes the
    inputs of the block matmuls per token, and needs ``weights`` (qwix leaves a matmul whose
    weights are not quantized alone: activation-only would silently be the float model);
    ``kv`` the attention keys and values per token and head. tile_size: sub-channel tile of the innermost contraction axis (int, or 1/count as a
    float); None = per channel (the MX/NV formats default to their block size). method: "rtn"
    (round to nearest) or "gptq" (PTQ only; needs calibration batches). In a training Config it
    makes the run quantization-aware (``qat_model``) and, being part of the config, of its id.
    """

    weights: str | None = None
    activations: str | None = None
    kv: str | None = None
    tile_size: int | float | None = None
    method: str = "rtn"

    def __post_init__(self):
        for name in ("weights", "activations", "kv"):
            value = getattr(self, name)
            if value is not None:
                try:
                    object.__setattr__(self, name, format_name(value))
                except ValueError as err:
                    raise ValueError(f"QuantConfig.{name}: {err}") from None
        if self.method not in METHODS:
            raise ValueError(f"QuantConfig.method={self.method!r}; expected one of {METHODS}")
        if self.activations is not None and self.weights is None:
            raise ValueError(f"QuantConfig.activations={self.activations!r} without weights: qwix quantizes a "
                             "matmul's activations only together with its weights (an activation-only rule "
                             "changes nothing); give weights too, e.g. weights='int8'")
        if self.method == "gptq" and self.weights is None:
            raise ValueError("QuantConfig.method='gptq' quantizes weights; set weights")
        if self.tile_size is not None and not (self.tile_size > 0):
            raise ValueError(f"QuantConfig.tile_size must be positive, got {self.tile_size}")

    @property
    def enabled(self) -> bool:
        return any(x is not None for x in (self.weights, self.activations, self.kv))

    @property
    def label(self) -> str:
        """Short name: "W4A8", "Wnf4", "KV4", "W3 gptq", "float"."""
        parts = []
        for prefix, value in (("W", self.weights), ("A", self.activations), ("KV", self.kv)):
            if value is not None:
                parts.append(prefix + (value[3:] if re.fullmatch(r"int\d", value) else value))
        text = "".join(parts) or "float"
        return text + ("" if self.method == "rtn" else f" {self.method}")


# --------------------------------------------------------------------------- keys and values


def kv_calibration(qtype) -> str:
    """qwix calibration of the keys/values: integer formats symmetric in [-qmax, qmax] with scale
    absmax / qmax (qmax = 2^(b-1) - 1; qwix's "absmax,f" with f = (qmax + 0.5) / qmax undoes its
    default bound qmax + 0.5), other formats qwix's "absmax".

    Why not qwix's default: with the bound qmax + 0.5 every slice's largest element lands exactly
    on a rounding tie (+-(qmax + 0.5)), which float noise resolves either way, so a cached decode
    and a full forward pass of the same tokens round differently. With absmax / qmax the largest
    element is exact and no element sits on a tie by construction.
    """
    name = format_name(qtype)
    if re.fullmatch(r"int\d", name):
        qmax = 2 ** (format_bits(name) - 1) - 1
        return f"absmax,{(qmax + 0.5) / qmax!r}"
    return "absmax"


def quantize_per_token(x, qtype, axis: int = -1):
    """qwix ``QArray`` of ``x`` with one scale per slice along ``axis`` (``kv_calibration``)."""
    axis = axis % x.ndim
    return qwix.quantize(x, qwix_type(qtype), channelwise_axes=[a for a in range(x.ndim) if a != axis],
                         calibration_method=kv_calibration(qtype))


def fake_quantize(x, qtype, axis: int = -1):
    """Straight-through fake quantization with one absmax scale per slice along ``axis``.

    Forward: dequant(quant(x)) (``quantize_per_token``: qwix numerics, symmetric absmax / qmax for
    integer formats); backward: identity, ``x + stop_gradient(dequant(quant(x)) - x)`` (Bengio et
    al. 2013).
    """
    q = quantize_per_token(x, qtype, axis)
    return x + jax.lax.stop_gradient(qwix.dequantize(q).astype(x.dtype) - x)


# --------------------------------------------------------------------------- accounting


def is_quantized_leaf(x) -> bool:
    """Whether ``x`` is a quantized leaf of a params tree (qwix ``WithAux``: values + scales)."""
    return type(x).__name__ == "WithAux"


def _nbytes(x) -> int:
    return int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize


def quantized_weight_bytes(qparams) -> dict:
    """Storage of a (quantized) params tree, in bytes, counting each value at its logical bits.

    ``values``: quantized values at ``format_bits`` per value (int3 = 3 bits, although qwix keeps
    it in an int4 container); ``scales``: their scales (and zero points) at the stored dtype, or at
    8 bits for the MX/NV block formats, whose scale format is part of the format; ``quantized``
    = values + scales; ``float``: every leaf left unquantized, at its dtype; ``n_quantized``:
    number of quantized values; ``bits_per_weight`` = 8 quantized / n_quantized (the scales
    included); ``total``.
    """
    out = {"values": 0.0, "scales": 0.0, "float": 0, "n_quantized": 0}

    def visit(x):
        if not is_quantized_leaf(x):
            out["float"] += sum(_nbytes(leaf) for leaf in jax.tree.leaves(x))
            return x
        array = x.array
        name = format_name(array.qtype)
        _, bits, _, scale_bits = FORMATS[name]
        n = int(np.prod(array.qvalue.shape))
        out["n_quantized"] += n
        out["values"] += n * bits / 8
        for aux in (array.scale, array.zero_point):
            if aux is not None:
                count = int(np.prod(aux.shape))
                out["scales"] += count * (scale_bits / 8 if scale_bits else jnp.dtype(aux.dtype).itemsize)
        return x

    jax.tree.map(visit, qparams, is_leaf=is_quantized_leaf)
    out["quantized"] = out["values"] + out["scales"]
    out["bits_per_weight"] = 8 * out["quantized"] / out["n_quantized"] if out["n_quantized"] else float("nan")
    out["total"] = out["quantized"] + out["float"]
    return out


def parse_format(spec: str) -> QuantConfig:
    """A format string -> `QuantConfig` (the quantization study's `formats` and `qat` entries).

    "int4" (weights, round to nearest), "int4:gptq", "int4/int8" (weights int4, activations int8),
    "kv:int4" (keys and values only). ValueError naming the format when it is not understood.
    """
    text = str(spec).strip()
    try:
        if text.startswith("kv:"):
            return QuantConfig(kv=text[3:])
        method = "rtn"
        if ":" in text:
            text, method = text.split(":", 1)
        weights, _, activations = text.partition("/")
        return QuantConfig(weights=weights, activations=activations or None, method=method)
    except (ValueError, TypeError) as err:
        raise ValueError(f"format {spec!r}: {err}") from None
