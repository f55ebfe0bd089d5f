"""Post-training quantization of a trained run, measured as a paired loss difference.

    rows = ptq_measure("runs/<run_id>", ["int8", "int4", QuantConfig(weights="int4", method="gptq"),
                       QuantConfig(weights="int4", activations="int8")], eval_tokens=2**18)

The float model and every quantized copy are evaluated on the SAME held-out token set (the eval
split of the run's data, packed as ``data.make_eval_batches`` packs it for training, with
``ceil(eval_tokens / seq_len)`` rows). For sequence i let s_i, q_i be the summed token losses of
the float and quantized model and n_i its weighted tokens. Then (ratio estimators, as
``train.evaluate``; Cochran 1977, "Sampling Techniques", Ch. 6)

    loss = sum s_i / sum n_i,   loss_quantized = sum q_i / sum n_i,
    delta = loss_quantized - loss = sum d_i / sum n_i,   d_i = q_i - s_i,
    delta_sem = sqrt( sum_i (d_i - delta n_i)^2 / (k (k - 1)) ) / mean_i(n_i),   k sequences.

The pairing removes the sequence-to-sequence spread of the loss itself (which dominates the
unpaired SEM of either loss) from the SEM of the difference: the float loss of a tiny model has
an SEM of ~2e-2 nats on 32 sequences while delta_sem for int8 is ~1e-5.

GPTQ calibrates on ``calibration_sequences`` rows of the run's TRAINING stream (first batches,
the run's own data order), never on the held-out rows.

Each row: run_id, n_params, n_params_nonembedding, tokens (training tokens at the checkpoint),
checkpoint_step, qtype (weight format, "float" for none), activations, kv, method, label,
bits (logical bits of the weight format), bits_per_weight (with the scales), loss, loss_sem,
loss_quantized, delta, delta_sem, eval_tokens (weighted held-out tokens), eval_sequences,
quantize_s, eval_s (wall seconds; the first model of a shape and format pays the compilation,
later runs and checkpoints of that shape reuse it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.harness.data import make_eval_batches, make_train_iterator
from experiments.harness.restore import TrainedRun, load_run
from experiments.harness.train import token_losses
from models.quantization import QuantConfig, format_bits, ptq, ptq_model, quantized_weight_bytes
from models.transformer import ModelConfig, Transformer

ROW_KEYS = ("run_id", "n_params", "n_params_nonembedding", "tokens", "checkpoint_step", "qtype",
            "activations", "kv", "method", "label", "bits", "bits_per_weight", "loss", "loss_sem",
            "loss_quantized", "delta", "delta_sem", "eval_tokens", "eval_sequences", "quantize_s",
            "eval_s")


def as_quant(spec) -> QuantConfig:
    """A ``QuantConfig`` from a format name ("int4": weight-only RTN), a dict of its fields, or itself."""
    if isinstance(spec, QuantConfig):
        return spec
    if isinstance(spec, str):
        return QuantConfig(weights=spec)
    if isinstance(spec, dict):
        return QuantConfig(**spec)
    raise ValueError(f"format {spec!r}: expected a format name, a dict of QuantConfig fields or a QuantConfig")


def ratio_sem(sums: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """(sum s / sum n, its cluster SEM over the k items); formula in the module docstring."""
    keep = counts > 0
    s, n = sums[keep].astype(np.float64), counts[keep].astype(np.float64)
    if n.size == 0:
        raise ValueError("no weighted tokens to evaluate")
    ratio = s.sum() / n.sum()
    k = n.size
    sem = math.sqrt(np.sum((s - ratio * n) ** 2) / (k * (k - 1))) / n.mean() if k > 1 else math.nan
    return float(ratio), float(sem)


@functools.lru_cache(maxsize=128)
def _eval_step(cfg: ModelConfig, quant: QuantConfig | None):
    """Compiled per-sequence loss of the float (``quant=None``) or quantized model, cached by
    (model config, format) so runs and checkpoints of one shape compile once."""
    model = Transformer(cfg) if quant is None else ptq_model(cfg, quant)

    @jax.jit
    def step(params, batch):
        ce, _ = token_losses(model, params, batch)
        return jnp.sum(ce * batch["weights"], axis=-1), jnp.sum(batch["weights"], axis=-1)

    return step


def sequence_losses(cfg: ModelConfig, quant: QuantConfig | None, params, batches) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence (summed weighted token loss, weighted tokens) over ``batches``."""
    step = _eval_step(cfg, quant)
    sums, counts = [], []
    for batch in batches:
        s, n = step(params, batch)
        sums.append(np.asarray(s))
        counts.append(np.asarray(n))
    return np.concatenate(sums), np.concatenate(counts)


def heldout_batches(run: TrainedRun, eval_tokens: int, batch_size: int) -> list[dict]:
    """``ceil(eval_tokens / seq_len)`` packed held-out rows (``data.make_eval_batches``), on device."""
    data = run.config.data
    rows = max(1, math.ceil(eval_tokens / data.seq_len))
    batches = make_eval_batches(dataclasses.replace(data, eval_sequences=rows),
                                batch_size=min(batch_size, rows))
    return [jax.device_put(b) for b in batches]


def calibration_batches(run: TrainedRun, sequences: int, batch_size: int) -> list[dict]:
    """The first ``sequences`` rows of the run's training stream, in batches (GPTQ calibration)."""
    batch_size = min(batch_size, sequences)
    iterator = make_train_iterator(run.config.data, global_batch_size=batch_size)
    try:
        return [next(iterator) for _ in range(max(1, sequences // batch_size))]
    finally:
        iterator.close()


def ptq_measure(run_workdir, formats: Sequence, *, eval_tokens: int, checkpoint_step: int | None = None,
                batch_size: int = 32, calibration_sequences: int = 128) -> list[dict]:
    """Rows (``ROW_KEYS``) of the float model and each format on one fixed held-out token set.

    formats: format names (weight-only, round to nearest), dicts of ``QuantConfig`` fields, or
    ``QuantConfig``s (weights / activations / kv / tile_size / method "rtn" | "gptq").
    checkpoint_step: None = the latest checkpoint.
    """
    if eval_tokens < 1:
        raise ValueError(f"eval_tokens must be positive, got {eval_tokens}")
    quants = [as_quant(f) for f in formats]
    run = load_run(run_workdir, checkpoint_step, device=True)
    cfg = run.config.model
    batches = heldout_batches(run, eval_tokens, batch_size)
    start = time.perf_counter()
    s_float, counts = sequence_losses(cfg, None, run.params, batches)
    float_s = time.perf_counter() - start
    loss, loss_sem = ratio_sem(s_float, counts)
    calibration = None
    counts_run = run.n_params
    base = {"run_id": run.run_id, "n_params": counts_run["total"],
            "n_params_nonembedding": counts_run["nonembedding"], "tokens": run.tokens,
            "checkpoint_step": run.step, "loss": loss, "loss_sem": loss_sem,
            "eval_tokens": int(counts.sum()), "eval_sequences": int((counts > 0).sum())}
    rows = [{**base, "qtype": "float", "activations": None, "kv": None, "method": "none",
             "label": "float", "bits": None, "bits_per_weight": None, "loss_quantized": loss,
             "delta": 0.0, "delta_sem": 0.0, "quantize_s": 0.0, "eval_s": float_s}]
    for quant in quants:
        if quant.method == "gptq" and calibration is None:
            calibration = calibration_batches(run, calibration_sequences, batch_size)
        start = time.perf_counter()
        _, qparams = ptq(cfg, run.params, quant, calibration=calibration)
        jax.block_until_ready(qparams)
        quantize_s = time.perf_counter() - start
        start = time.perf_counter()
        s_quant, counts_q = sequence_losses(cfg, quant, qparams, batches)
        eval_s = time.perf_counter() - start
        assert np.array_equal(counts_q, counts)
        loss_q, _ = ratio_sem(s_quant, counts)
        delta, delta_sem = ratio_sem(s_quant - s_float, counts)
        sizes = quantized_weight_bytes(qparams)
        rows.append({**base, "qtype": quant.weights or "float", "activations": quant.activations,
                     "kv": quant.kv, "method": quant.method, "label": quant.label,
                     "bits": format_bits(quant.weights) if quant.weights else None,
                     "bits_per_weight": sizes["bits_per_weight"] if sizes["n_quantized"] else None,
                     "loss_quantized": loss_q, "delta": delta, "delta_sem": delta_sem,
                     "quantize_s": quantize_s, "eval_s": eval_s})
    return [{k: r[k] for k in ROW_KEYS} for r in rows]
