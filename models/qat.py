"""Quantization-aware training: ``qat_model(cfg, quant)``, the Transformer with qwix's
quantized-training provider (same float params and checkpoints as the float model).

The forward matmuls (and, with ``kv``, the attention keys and values) are fake-quantized; the
gradient is straight-through, ``x + stop_gradient(dequant(quant(x)) - x)`` (Bengio et al. 2013,
arXiv:1308.3432).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import qwix

from models.qwix_rules import KvQtProvider, block_rules, check_tiles, kv_format, quant_rules, split_quant
from models.transformer import ModelConfig, Transformer


def qat_model(cfg: ModelConfig, quant=None) -> nn.Module:
    """The Transformer with qwix's quantized-training provider: same float params as
    ``Transformer(cfg)``, fake-quantized forward matmuls (and keys/values with ``kv``),
    straight-through gradients. ``quant``: a ``QuantConfig`` or a list of qwix rules (default
    int8 weights). A ``QuantConfig`` with nothing set gives the plain ``Transformer(cfg)``."""
    quant_cfg, rules = split_quant(quant)
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
