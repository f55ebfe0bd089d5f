"""Post-training quantization: ``ptq(cfg, params, quant) -> (quantized model, quantized params)``.

PTQ builds an abstract quantized template with ``eval_shape`` and fills it with
``qwix.quantize_params`` (round to nearest) or ``models.gptq.quantize_params`` (GPTQ).

Scanned layers: ``qwix.quantize_params`` computes each weight's scales from the per-layer "how to
quantize" recorded while tracing the scan body, so on a stacked [layers, ...] weight it would
reduce over the layer axis. ``ptq`` therefore quantizes the unscanned layout (``layers_i``) and
stacks the quantized leaves back.

GPTQ (Frantar et al. 2023, arXiv:2210.17323): qwix's calibration (``qwix.contrib.gptq``) collects
H = X X^T of each matmul's input over ``calibration`` batches, then ``models.gptq`` quantizes each
weight column by column with the OBS error compensation. qwix calibrates matmuls with one
contraction axis, so the ``out`` projection (contracting heads x head_dim) falls back to
round-to-nearest.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import qwix
from qwix.contrib import gptq as qgptq

from models import gptq
from models.quant_formats import is_quantized_leaf
from models.qwix_rules import KvPtqProvider, block_rules, check_tiles, kv_format, quant_rules, split_quant
from models.transformer import ModelConfig, Transformer, unstack_layers


def _example_tokens():
    return jnp.zeros((1, 8), jnp.int32)


def ptq_model(cfg: ModelConfig, rules=None, *, kv=None) -> nn.Module:
    """The Transformer with qwix's PTQ provider (expects quantized params from ``ptq``).

    ``rules``: a ``QuantConfig`` or a list of qwix rules (default int8 weights)."""
    quant, rule_list = split_quant(rules)
    if quant is not None:
        rule_list, kv = quant_rules(cfg, quant), quant.kv if kv is None else kv
    rule_list = block_rules() if rule_list is None else rule_list
    # GptqRule -> plain rule for inference (the params tree is the same, per qwix.contrib.gptq)
    rule_list = [qwix.QuantizationRule(**{f.name: getattr(r, f.name) for f in dataclasses.fields(qwix.QuantizationRule)})
                 if isinstance(r, qgptq.GptqRule) else r for r in rule_list]
    return qwix.quantize_model(Transformer(cfg), KvPtqProvider(rule_list, kv_format(kv)))


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
    quant, rule_list = split_quant(rules)
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


def dequantize_params(qparams):
    """Float params with the quantization error of ``qparams`` baked in (each ``WithAux`` leaf
    replaced by ``dequant(values) * scale``, float32). For code that runs the plain
    ``Transformer`` (``models.sampling.generate``): it reproduces weight-only PTQ; activation
    and KV quantization need ``ptq_model``."""
    return jax.tree.map(lambda x: qwix.dequantize(x.array).astype(jnp.float32) if is_quantized_leaf(x) else x,
                        qparams, is_leaf=is_quantized_leaf)
