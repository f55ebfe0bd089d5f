"""qwix rules over the Transformer's block matmuls, and the providers that add KV quantization.

qwix (0.1.8) quantizes without editing the model: regex rules over module paths choose which
``lax.dot_general`` calls are quantized. ``models.transformer`` keeps its paths regular, so
``BLOCK_PATH`` selects the seven matmuls of every block, scanned (``layers/...``) or not
(``layers_3/...``). Scales are per output channel (reduce over the contraction axes) unless
``tile_size`` splits the innermost contraction axis into tiles with one scale each; the tile must
divide that axis of every quantized matmul (d_model, head_dim for ``out``, d_ff for ``down``) or
``ValueError`` says which (``check_tiles``).

Keys and values: qwix intercepts ``dot_general`` but not ``jax.nn.dot_product_attention``, so
``KvQtProvider`` / ``KvPtqProvider`` add an interception of it that fake-quantizes the keys and
values (``models.quant_formats.fake_quantize``).
"""

from __future__ import annotations

import re

import jax
import qwix
from qwix.contrib import gptq as qgptq

from models.quant_formats import FORMATS, METHODS, QuantConfig, fake_quantize, format_name, qwix_type
from models.transformer import ModelConfig

BLOCK_PATH = r"layers(_\d+)?/(attention/(query|key|value|out)|mlp/(gate|up|down))"


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
    wq, aq = qwix_type(weight_qtype), qwix_type(act_qtype)
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


def split_quant(quant) -> tuple[QuantConfig | None, list | None]:
    """(the QuantConfig, None) or (None, the list of qwix rules) of a ``quant`` argument."""
    if quant is None or isinstance(quant, QuantConfig):
        return quant, None
    return None, list(quant)


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


def kv_format(kv):
    return None if kv is None else qwix_type(kv)
