"""Post-training quantization (PTQ) and quantization-aware training (QAT) with qwix rules.

qwix (0.1.8) quantizes without editing the model: regex rules over module paths choose which
``lax.dot_general`` calls are quantized. ``models.transformer`` keeps its paths regular, so
``BLOCK_PATH`` selects the seven matmuls of every block, scanned (``layers/...``) or not
(``layers_3/...``). The embedding, the unembedding and the norms stay in float: a catch-all
``'.*'`` PTQ rule would also turn the ``nn.Embed``-style table lookup into a quantized param,
which the lookup cannot use (the known trap), and the LM head is the most sensitive matmul.

    quant = QuantConfig(weights="int4", activations="int8")          # W4A8, round-to-nearest
    qmodel, qparams = ptq(cfg, params, quant)                          # host or device params
    logits = qmodel.apply({"params": qparams}, tokens)
    ptq(cfg, params, QuantConfig(weights="int3", method="gptq"), calibration=token_batches)

    qmodel = qat_model(cfg, QuantConfig(weights="int4", kv="int4"))    # fake-quantized forward,
    grads = jax.grad(loss)(params)                                     # same params as float

Formats (``FORMATS``): qwix's integer types ``int2`` ... ``int8`` (symmetric absmax; int2/int3 are
stored in int4 containers and int5-int7 in int8 ones, but carry their logical bits), ``nf4``
(NormalFloat-4, Dettmers et al. 2023, arXiv:2305.14314, App. E), ``fp8`` = ``fp8_e4m3`` and
``fp8_e5m2`` (OCP FP8), and the block formats ``mxfp8``/``mxfp4`` (OCP Microscaling: tiles of
32 with a power-of-two scale) and ``nvfp4`` (tiles of 16 with an E4M3 scale). Scales are per
output channel (reduce over the contraction axes) unless ``tile_size`` splits the innermost
contraction axis into tiles with one scale each; the tile must divide that axis of every
quantized matmul (d_model, head_dim for ``out``, d_ff for ``down``) or ``ValueError`` says which.

Activations (``act_qtype`` / ``QuantConfig.activations``) are quantized dynamically per token
(qwix's absmax over the contraction axis), in the inputs of the same block matmuls, and only
together with their weights: qwix leaves a matmul whose weight rule is None in float, so an
activation-only rule would silently be the float model (a ValueError here).

Keys and values (``kv``): qwix intercepts ``dot_general`` but not ``jax.nn.dot_product_attention``,
so an activation rule never touches attention. ``kv`` adds an interception of
``jax.nn.dot_product_attention`` to the qwix provider: the keys (after the rotary embedding) and
values are fake-quantized with one absmax scale per (batch, position, kv head), integers symmetric
in [-qmax, qmax] (``kv_calibration``) -- the numbers the int8 cache of ``models.kv_cache`` holds
when sampling -- with a straight-through gradient,
``x + stop_gradient(dequant(quant(x)) - x)`` (Bengio et al. 2013, arXiv:1308.3432). This is
Kumar et al. 2024's P_kv (arXiv:2411.04330, Sec. 2.3). No edit of ``models.transformer``.

Scanned layers: ``qwix.quantize_params`` computes each weight's scales from the per-layer "how to
quantize" recorded while tracing the scan body, so on a stacked [layers, ...] weight it would
reduce over the layer axis. ``ptq`` therefore quantizes the unscanned layout (``layers_i``) and
stacks the quantized leaves back.

GPTQ (Frantar et al. 2023, arXiv:2210.17323): qwix's calibration (``qwix.contrib.gptq``) collects
H = X X^T of each matmul's input over ``calibration`` batches, then ``models.gptq`` quantizes each
weight column by column with the OBS error compensation (qwix's algorithm in a compiled loop; it
also takes the string formats int2/int3/int5-7/nf4, on which qwix's own version fails). qwix
calibrates matmuls with one contraction axis, so the ``out`` projection (contracting heads x
head_dim) falls back to round-to-nearest.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import qwix
from qwix.contrib import gptq as qgptq

from models import gptq
from models.transformer import ModelConfig, Transformer, unstack_layers

BLOCK_PATH = r"layers(_\d+)?/(attention/(query|key|value|out)|mlp/(gate|up|down))"
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


def _qtype(name):
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


# --------------------------------------------------------------------------- rules


def _contraction_sizes(cfg: ModelConfig) -> dict[str, int]:
    """Innermost contraction-axis size of each block matmul (what a tile splits)."""
    sizes = {m: cfg.d_model for m in ("query", "key", "value", "gate", "up")}
    sizes.update(out=cfg.head_dim, down=cfg.d_ff)
    if not cfg.gated:
        sizes.pop("gate")
    return sizes


def check_tiles(cfg: ModelConfig, rules) -> None:
    """ValueError naming the matmul and axis when a rule's tile does not divide the axis it splits."""
    for rule in rules:
        qtype = rule.weight_qtype or rule.act_qtype
        if rule.tile_size is None:
            if isinstance(qtype, str) and qtype in ("mxfp8", "mxfp4", "nvfp4"):
                raise ValueError(f"{qtype} needs tile_size={FORMATS[qtype][2]}")
            continue
        for matmul, size in _contraction_sizes(cfg).items():
            if not re.search(rule.module_path, f"layers/{'mlp' if matmul in ('gate', 'up', 'down') else 'attention'}/{matmul}"):
                continue
            tile = rule.tile_size if isinstance(rule.tile_size, int) else round(size * rule.tile_size)
            if tile < 1 or size % tile:
                raise ValueError(
                    f"tile_size={rule.tile_size} does not fit the {matmul!r} matmul: its innermost "
                    f"contraction axis has {size} elements (d_model={cfg.d_model}, head_dim="
                    f"{cfg.head_dim}, d_ff={cfg.d_ff}); use a divisor of {size} or narrow module_path")


def block_rules(weight_qtype="int8", act_qtype=None, *, module_path: str = BLOCK_PATH, tile_size=None,
                qat: bool = False, method: str = "rtn", cfg: ModelConfig | None = None):
    """One qwix rule over the block matmuls.

    ``weight_qtype``/``act_qtype``: a ``FORMATS`` name ("int2".."int8", "nf4", "fp8", ...) or a
    dtype; ``act_qtype=None``: weight-only. ``qat=True`` gives a ``QtRule``, ``method="gptq"`` a
    ``GptqRule``. The MX/NV formats default ``tile_size`` to their block. With ``cfg`` the tile
    is checked against the shapes (``check_tiles``).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; expected one of {METHODS}")
    wq, aq = _qtype(weight_qtype), _qtype(act_qtype)
    if wq is None and aq is not None:
        raise ValueError(f"block_rules: act_qtype={act_qtype!r} without weight_qtype changes nothing (qwix "
                         "quantizes a matmul's activations only together with its weights)")
    if tile_size is None:
        for q in (weight_qtype, act_qtype):
            if q is not None and FORMATS[format_name(q)][2] is not None:
                tile_size = FORMATS[format_name(q)][2]
    cls = qwix.QtRule if qat else qgptq.GptqRule if method == "gptq" else qwix.QuantizationRule
    rules = [cls(module_path=module_path, weight_qtype=wq, act_qtype=aq, tile_size=tile_size)]
    if cfg is not None:
        check_tiles(cfg, rules)
    return rules


def quant_rules(cfg: ModelConfig, quant: QuantConfig, *, qat: bool = False) -> list:
    """The qwix rules of a ``QuantConfig`` (empty when only the KV cache is quantized)."""
    if quant.weights is None and quant.activations is None:
        return []
    return block_rules(quant.weights, quant.activations, tile_size=quant.tile_size, qat=qat,
                       method="rtn" if qat else quant.method, cfg=cfg)


def _as_quant(quant) -> tuple[QuantConfig | None, list | None]:
    if quant is None or isinstance(quant, QuantConfig):
        return quant, None
    return None, list(quant)


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
    return qwix.quantize(x, _qtype(qtype), channelwise_axes=[a for a in range(x.ndim) if a != axis],
                         calibration_method=kv_calibration(qtype))


def fake_quantize(x, qtype, axis: int = -1):
    """Straight-through fake quantization with one absmax scale per slice along ``axis``.

    Forward: dequant(quant(x)) (``quantize_per_token``: qwix numerics, symmetric absmax / qmax for
    integer formats); backward: identity, ``x + stop_gradient(dequant(quant(x)) - x)`` (Bengio et
    al. 2013).
    """
    q = quantize_per_token(x, qtype, axis)
    return x + jax.lax.stop_gradient(qwix.dequantize(q).astype(x.dtype) - x)


class _KvMixin:
    """Adds an interception of ``jax.nn.dot_product_attention`` that fake-quantizes k and v."""

    kv_qtype: str | None = None

    def get_intercept_map(self):
        mapping = super().get_intercept_map()
        if self.kv_qtype is None:
            return mapping
        kv_qtype = self.kv_qtype

        def attention(query, key, value, *args, **kwargs):
            # inside the handler the interceptor is inactive: this is the original function
            return jax.nn.dot_product_attention(query, fake_quantize(key, kv_qtype),
                                                fake_quantize(value, kv_qtype), *args, **kwargs)

        return mapping | {"jax.nn.dot_product_attention": attention}


class KvQtProvider(_KvMixin, qwix.QtProvider):
    def __init__(self, rules, kv_qtype=None, **kwargs):
        self.kv_qtype = kv_qtype
        super().__init__(rules, **kwargs)


class KvPtqProvider(_KvMixin, qwix.PtqProvider):
    def __init__(self, rules, kv_qtype=None, **kwargs):
        self.kv_qtype = kv_qtype
        super().__init__(rules, **kwargs)


# --------------------------------------------------------------------------- PTQ


def _example_tokens():
    return jnp.zeros((1, 8), jnp.int32)


def ptq_model(cfg: ModelConfig, rules=None, *, kv=None) -> nn.Module:
    """The Transformer with qwix's PTQ provider (expects quantized params from ``ptq``).

    ``rules``: a ``QuantConfig`` or a list of qwix rules (default int8 weights)."""
    quant, rule_list = _as_quant(rules)
    if quant is not None:
        rule_list, kv = quant_rules(cfg, quant), quant.kv if kv is None else kv
    rule_list = block_rules() if rule_list is None else rule_list
    # GptqRule -> plain rule for inference (the params tree is the same, per qwix.contrib.gptq)
    rule_list = [qwix.QuantizationRule(**{f.name: getattr(r, f.name) for f in dataclasses.fields(qwix.QuantizationRule)})
                 if isinstance(r, qgptq.GptqRule) else r for r in rule_list]
    return qwix.quantize_model(Transformer(cfg), KvPtqProvider(rule_list, kv_format(kv)))


def kv_format(kv):
    return None if kv is None else _qtype(kv)


def _to_device_tree(params):
    """Host (numpy) or device leaves -> a plain nested dict of jax.Array."""
    if isinstance(params, dict) or hasattr(params, "items"):
        return {k: _to_device_tree(v) for k, v in params.items()}
    return jnp.asarray(params)


def _calibration_inputs(batch):
    if isinstance(batch, dict):
        return (jnp.asarray(batch["inputs"]), jnp.asarray(batch["segment_ids"]), jnp.asarray(batch["positions"]))
    return (jnp.asarray(batch),)


@functools.lru_cache(maxsize=32)
def _calibration_step(cfg: ModelConfig, rules: tuple):
    model = qwix.quantize_model(Transformer(cfg), qgptq.GptqCalibrationProvider(list(rules)))

    @jax.jit
    def step(params, stats, inputs):
        variables = {"params": params, **({"quant_stats": stats} if stats else {})}
        return model.apply(variables, *inputs, mutable="quant_stats")[1]["quant_stats"]

    return step


def gptq_stats(cfg: ModelConfig, params, rules, calibration: Iterable) -> dict:
    """qwix GPTQ calibration: the averaged H = X X^T of every matched matmul's input.

    ``cfg``/``params`` unscanned; ``calibration``: token arrays [B, L] or data batches (dicts
    with inputs, segment_ids, positions, as ``experiments.harness.data`` yields).
    """
    step = _calibration_step(cfg, tuple(rules))
    stats = {}
    for batch in calibration:
        stats = step(params, stats, _calibration_inputs(batch))
    if not stats:
        raise ValueError("gptq: calibration holds no batches")
    return stats


def ptq(cfg: ModelConfig, params, rules=None, *, calibration: Iterable | None = None, kv=None):
    """(quantized model, quantized params) from float ``params`` (unboxed "params" collection).

    ``rules``: a ``QuantConfig`` (method "rtn" or "gptq") or a list of qwix rules (default: int8
    weights, round to nearest). ``params`` may be host (numpy) or device arrays, scanned or not.
    GPTQ needs ``calibration`` batches (see ``gptq_stats``). Quantized leaves are qwix
    ``WithAux(QArray)`` (values + scales); everything the rules do not match is returned as is.
    """
    quant, rule_list = _as_quant(rules)
    if quant is not None:
        rule_list, kv = quant_rules(cfg, quant), quant.kv if kv is None else kv
    rule_list = block_rules() if rule_list is None else rule_list
    if any(r.module_path in (".*", ".+") for r in rule_list):
        raise ValueError("ptq: a catch-all module_path would quantize the embedding lookup; "
                         "scope the rules to the blocks (see BLOCK_PATH)")
    check_tiles(cfg, rule_list)
    params = _to_device_tree(params)
    model = ptq_model(cfg, rule_list, kv=kv)
    flat_cfg = cfg.replace(scan_layers=False)
    flat = unstack_layers(params, cfg.n_layers) if cfg.scan_layers else params
    template = jax.eval_shape(ptq_model(flat_cfg, rule_list).init, jax.random.key(0), _example_tokens())
    template = template["params"]
    if any(isinstance(r, qgptq.GptqRule) for r in rule_list):
        if calibration is None:
            raise ValueError("ptq: method 'gptq' needs calibration batches")
        stats = gptq_stats(flat_cfg, flat, rule_list, calibration)
        quantized = gptq.quantize_params(flat, template, stats)
    else:
        quantized = qwix.quantize_params(flat, template)
    quantized = dict(quantized)
    if cfg.scan_layers:
        blocks = [quantized.pop(f"layers_{i}") for i in range(cfg.n_layers)]
        quantized["layers"] = jax.tree.map(lambda *p: jnp.stack(p), *blocks)
    return model, quantized


# --------------------------------------------------------------------------- QAT


def qat_model(cfg: ModelConfig, quant=None) -> nn.Module:
    """The Transformer with qwix's quantized-training provider: same float params as
    ``Transformer(cfg)``, fake-quantized forward matmuls (and keys/values with ``kv``),
    straight-through gradients. ``quant``: a ``QuantConfig`` or a list of qwix rules (default
    int8 weights). A ``QuantConfig`` with nothing set gives the plain ``Transformer(cfg)``."""
    quant_cfg, rules = _as_quant(quant)
    kv = None
    if quant_cfg is not None:
        if not quant_cfg.enabled:
            return Transformer(cfg)
        rules, kv = quant_rules(cfg, quant_cfg, qat=True), quant_cfg.kv
    rules = block_rules(qat=True) if rules is None else rules
    check_tiles(cfg, rules)
    rules = [r if isinstance(r, qwix.QtRule) else qwix.QtRule(**{
        f.name: getattr(r, f.name) for f in dataclasses.fields(qwix.QuantizationRule)}) for r in rules]
    return qwix.quantize_model(Transformer(cfg), KvQtProvider(rules, kv_format(kv)))


def dequantize_params(qparams):
    """Float params with the quantization error of ``qparams`` baked in (each ``WithAux`` leaf
    replaced by ``dequant(values) * scale``, float32). For code that runs the plain
    ``Transformer`` (``models.sampling.generate``): it reproduces weight-only PTQ; activation
    and KV quantization need ``ptq_model``."""
    return jax.tree.map(lambda x: qwix.dequantize(x.array).astype(jnp.float32) if _is_with_aux(x) else x,
                        qparams, is_leaf=_is_with_aux)


# --------------------------------------------------------------------------- accounting


def _is_with_aux(x) -> bool:
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
        if not _is_with_aux(x):
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

    jax.tree.map(visit, qparams, is_leaf=_is_with_aux)
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
