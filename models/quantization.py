"""Post-training quantization (PTQ) and quantization-aware training (QAT) with qwix rules.

This module gathers the public names of four modules, one job each (import from either):
``models.quant_formats`` (formats, ``QuantConfig``, per-token KV quantization, byte accounting),
``models.qwix_rules`` (qwix rules and the KV providers), ``models.ptq`` (PTQ and GPTQ
calibration) and ``models.qat`` (quantization-aware training).

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

from models.quant_formats import (FORMATS, METHODS, QuantConfig, fake_quantize, format_bits,  # noqa: F401
                                  format_name, kv_calibration, parse_format, quantize_per_token,
                                  quantized_weight_bytes)
from models.qwix_rules import (BLOCK_PATH, KvPtqProvider, KvQtProvider, block_rules, check_tiles,  # noqa: F401
                               kv_format, quant_rules)
from models.ptq import dequantize_params, gptq_stats, ptq, ptq_model  # noqa: F401
from models.qat import qat_model  # noqa: F401
