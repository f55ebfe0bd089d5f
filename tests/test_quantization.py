"""models.quantization and models.gptq: every format, tiles, bit accounting, host params, GPTQ,
fake-quantized keys/values, QuantConfig. Random-init d_model=32 models; numbers checked against
numpy re-computations of the quantizers."""

import json
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import qwix

from models.quantization import (FORMATS, QuantConfig, block_rules, dequantize_params, fake_quantize, format_bits,
                                 ptq, ptq_model, qat_model, quantized_weight_bytes)
from models.transformer import ModelConfig, Transformer

pytestmark = pytest.mark.filterwarnings("ignore:'VariableState' was removed:DeprecationWarning")

CFG = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64)
# head_dim 32 and d_ff 64: tiles of 32 (MX) and 16 (NVFP4) fit every matmul
WIDE = ModelConfig(d_model=64, n_layers=1, n_heads=2, head_dim=32, d_ff=64, max_seq_len=64)


def _init(cfg, seed=0):
    return nn.unbox(jax.jit(Transformer(cfg).init)(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32)))["params"]


@pytest.fixture(scope="module")
def params():
    return _init(CFG)


@pytest.fixture(scope="module")
def tokens():
    return jax.random.randint(jax.random.key(7), (2, 16), 0, 256)


@pytest.fixture(scope="module")
def quantized(params):
    """Weight-only RTN PTQ of ``params`` per format, computed once: name -> (model, qparams)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = ptq(CFG, params, QuantConfig(weights=name))
        return cache[name]

    return get


def test_block_rules_accept_every_qwix_format():
    # int3/int5/int6/nf4 used to raise TypeError (jnp.dtype("int3")) and int2 a KeyError
    for name in FORMATS:
        (rule,) = block_rules(name, cfg=WIDE)
        assert rule.weight_qtype is not None
        assert format_bits(name) in (2, 3, 4, 5, 6, 7, 8)
    assert block_rules("mxfp4")[0].tile_size == 32 and block_rules("nvfp4")[0].tile_size == 16
    assert isinstance(block_rules("int4", qat=True)[0], qwix.QtRule)
    assert block_rules(jnp.int8)[0].weight_qtype == jnp.int8
    with pytest.raises(ValueError, match="unsupported quantization type 'int9'"):
        block_rules("int9")
    with pytest.raises(ValueError, match="method"):
        block_rules("int4", method="awq")


@pytest.mark.parametrize("bits", [2, 3, 5])
def test_integer_ptq_matches_numpy_absmax_rounding(params, quantized, bits):
    """qvalues = clip(round(w / s), -2^(b-1), 2^(b-1)-1), s = absmax over the contraction axis /
    (2^(b-1) - 0.5) (qwix's symmetric bound), per output channel; recomputed in numpy."""
    _, qparams = quantized(f"int{bits}")
    q = qparams["layers"]["mlp"]["up"]["kernel"].array  # [layers, d_model, d_ff], contraction axis 1
    w = np.asarray(params["layers"]["mlp"]["up"]["kernel"])  # float32, as qwix computes
    scale = np.abs(w).max(axis=1, keepdims=True) / np.float32(2 ** (bits - 1) - 0.5)
    expect = np.clip(np.round(w / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    np.testing.assert_allclose(np.asarray(q.scale), scale, rtol=1e-6)
    got = np.asarray(q.qvalue, np.float32)
    # the absmax element of a channel lands on the tie +-(qmax + 0.5); XLA's division may round
    # it either way (it is clipped to qmax on the positive side, not on the negative one)
    tie = np.abs(w) == np.abs(w).max(axis=1, keepdims=True)
    np.testing.assert_array_equal(got[~tie], expect[~tie])
    assert np.all(np.abs(got[tie] - expect[tie]) <= 1)
    assert q.qtype == f"int{bits}"


def test_error_shrinks_with_bits_and_every_format_runs(params, quantized, tokens):
    ref = Transformer(CFG).apply({"params": params}, tokens)
    errors = {}
    for name in ("int2", "int3", "int4", "int8", "nf4", "fp8"):
        qmodel, qparams = quantized(name)
        errors[name] = float(jnp.sqrt(jnp.mean((jax.jit(qmodel.apply)({"params": qparams}, tokens) - ref) ** 2)))
    ints = [errors[f"int{b}"] for b in (2, 3, 4, 8)]
    assert all(a > b for a, b in zip(ints, ints[1:])), errors
    assert errors["int8"] > 0 and errors["fp8"] < errors["int4"] and errors["nf4"] < errors["int3"]
    # block formats on shapes their tiles fit
    wide = _init(WIDE)
    wide_tokens = tokens % WIDE.vocab_size
    ref = Transformer(WIDE).apply({"params": wide}, wide_tokens)
    for name in ("mxfp4", "nvfp4"):
        qmodel, qparams = ptq(WIDE, wide, QuantConfig(weights=name))
        out = jax.jit(qmodel.apply)({"params": qparams}, wide_tokens)
        assert 0 < float(jnp.abs(out - ref).max()) < 0.5 * float(jnp.abs(ref).max()), name


def test_tiles_fit_or_raise(params, quantized):
    _, per_channel = quantized("int4")
    _, tiled = ptq(CFG, params, QuantConfig(weights="int4", tile_size=4))
    # [layers, d_model, d_ff] kernel: d_model=32 split into 8 tiles of 4 -> 8 scales per column
    assert per_channel["layers"]["mlp"]["up"]["kernel"].array.scale.shape == (2, 1, 64)
    assert tiled["layers"]["mlp"]["up"]["kernel"].array.scale.shape == (2, 8, 64)
    with pytest.raises(ValueError, match=r"'out' matmul.*8 elements"):
        ptq(CFG, params, QuantConfig(weights="int8", tile_size=16))  # head_dim 8
    with pytest.raises(ValueError, match="'out' matmul"):
        ptq(CFG, params, QuantConfig(weights="mxfp4"))  # needs tiles of 32
    with pytest.raises(ValueError, match="'down' matmul"):
        block_rules("int8", tile_size=48, cfg=ModelConfig(d_model=96, n_heads=2, d_ff=120))


def test_bits_per_weight_counts_logical_bits_and_scales(quantized):
    # per layer: 9216 block weights and 256 float32 scales (one per output channel)
    layer_values, layer_scales = 32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 64, 32 + 16 + 16 + 32 + 64 + 64 + 32
    assert layer_values == 9216 and layer_scales == 256
    for name, bits in (("int8", 8), ("int4", 4), ("int3", 3), ("int2", 2), ("nf4", 4), ("fp8", 8)):
        sizes = quantized_weight_bytes(quantized(name)[1])
        assert sizes["n_quantized"] == 2 * layer_values
        assert sizes["values"] == 2 * layer_values * bits / 8
        assert sizes["scales"] == 2 * layer_scales * 4
        assert sizes["bits_per_weight"] == pytest.approx(bits + 32 * layer_scales / layer_values)
        # unquantized: embedding, unembedding, norms (float32)
        assert sizes["float"] == 4 * (2 * 256 * 32 + 2 * 2 * 32 + 32)


def test_host_params_and_dequantized_params(params, quantized, tokens):
    host = jax.tree.map(np.asarray, params)
    qmodel, from_host = ptq(CFG, host, QuantConfig(weights="int4"))
    _, from_device = quantized("int4")
    for a, b in zip(jax.tree.leaves(from_host), jax.tree.leaves(from_device)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the plain Transformer on dequantized params reproduces weight-only PTQ
    out = jax.jit(qmodel.apply)({"params": from_host}, tokens)
    plain = jax.jit(Transformer(CFG).apply)({"params": dequantize_params(from_host)}, tokens)
    np.testing.assert_allclose(plain, out, atol=2e-5)


def test_gptq_equals_qwix_per_channel_and_beats_rtn():
    from qwix._src.core import qarray
    from qwix.contrib import gptq_core

    from models.gptq import quantize_weight

    rng = np.random.default_rng(2)
    W = jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)
    # correlated inputs, where error compensation helps (GPTQ's point)
    X = jnp.asarray((np.eye(16) + 0.8 * rng.normal(size=(16, 16))) @ rng.normal(size=(16, 200)), jnp.float32)
    H = X @ X.T
    how = qarray.HowToQuantize(qtype=jnp.int4, channelwise_axes=[0])
    ref = jax.jit(lambda W, H: gptq_core.quantize_weight(W, H, how)[0])(W, H)  # eager: ~20 s of op compiles
    ours = quantize_weight(W, H, how)
    np.testing.assert_array_equal(np.asarray(ours.qvalue, np.int32), np.asarray(ref.qvalue, np.int32))
    np.testing.assert_array_equal(ours.scale, ref.scale)

    def output_error(q):
        return float(jnp.sum(((W - qarray.dequantize(q)) @ X) ** 2))

    for qtype in ("int2", "int3", "nf4"):  # string formats qwix's own GPTQ cannot take
        how = qarray.HowToQuantize(qtype=qtype, channelwise_axes=[0])
        assert output_error(quantize_weight(W, H, how)) < 0.8 * output_error(qarray.quantize(W, how)), qtype


def test_gptq_ptq_runs_on_the_model(params, quantized, tokens):
    qmodel, qparams = ptq(CFG, params, QuantConfig(weights="int3", method="gptq"), calibration=[tokens])
    _, rtn = quantized("int3")
    q_gptq = qparams["layers"]["mlp"]["up"]["kernel"].array
    assert q_gptq.qtype == "int3" and q_gptq.qvalue.shape == rtn["layers"]["mlp"]["up"]["kernel"].array.qvalue.shape
    assert not np.array_equal(np.asarray(q_gptq.qvalue, np.int32),
                              np.asarray(rtn["layers"]["mlp"]["up"]["kernel"].array.qvalue, np.int32))
    # out (two contraction axes) falls back to round to nearest
    np.testing.assert_array_equal(np.asarray(qparams["layers"]["attention"]["out"]["kernel"].array.qvalue, np.int32),
                                  np.asarray(rtn["layers"]["attention"]["out"]["kernel"].array.qvalue, np.int32))
    assert np.isfinite(np.asarray(jax.jit(qmodel.apply)({"params": qparams}, tokens))).all()
    with pytest.raises(ValueError, match="calibration"):
        ptq(CFG, params, QuantConfig(weights="int3", method="gptq"))


def test_fake_quantize_is_per_token_with_identity_gradient():
    """KV fake quantization: symmetric in [-qmax, qmax], scale absmax / qmax per token (no value on
    a rounding tie, unlike qwix's default bound qmax + 0.5), identity gradient."""
    from models.quantization import kv_calibration

    x = jax.random.normal(jax.random.key(0), (2, 5, 3, 8))
    for qtype, qmax in (("int8", 127), ("int3", 3)):
        y = np.asarray(jax.jit(fake_quantize, static_argnums=1)(x, qtype))
        scale = np.abs(np.asarray(x)).max(axis=-1, keepdims=True) / qmax
        expect = np.clip(np.round(np.asarray(x) / scale), -qmax, qmax) * scale
        np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-6)
    assert kv_calibration("nf4") == "absmax" and kv_calibration("int8").startswith("absmax,1.0039")
    grad = jax.grad(lambda x: jnp.sum(fake_quantize(x, "int4") * jnp.arange(8.0)))(x)
    np.testing.assert_array_equal(grad, jnp.broadcast_to(jnp.arange(8.0), x.shape))


def test_kv_quantization_reaches_attention(params, tokens):
    """qwix alone never touches jax.nn.dot_product_attention; kv=... does, in QAT and PTQ models."""
    def loss(model, p):
        logits = model.apply({"params": p}, tokens)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1))

    ref = jax.jit(Transformer(CFG).apply)({"params": params}, tokens)
    losses, errors = {}, {}
    for kv in ("int8", "int4", "int2"):
        model = ptq_model(CFG, QuantConfig(kv=kv))
        logits = jax.jit(model.apply)({"params": params}, tokens)
        errors[kv] = float(jnp.sqrt(jnp.mean((logits - ref) ** 2)))
        losses[kv] = float(jax.jit(lambda p, m=model: loss(m, p))(params)) if kv == "int4" else None
    assert 0 < errors["int8"] < errors["int4"] < errors["int2"], errors
    # QAT: the same forward, straight-through gradients into every parameter
    value, grads = jax.jit(jax.value_and_grad(lambda p: loss(qat_model(CFG, QuantConfig(kv="int4")), p)))(params)
    assert float(value) == pytest.approx(losses["int4"], abs=1e-6)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, path
    # scanned and unscanned models agree under KV quantization (interception inside nn.scan)
    from models.transformer import unstack_layers
    flat = ptq_model(CFG.replace(scan_layers=False), QuantConfig(kv="int4"))
    assert float(jax.jit(lambda p: loss(flat, p))(unstack_layers(params, 2))) == pytest.approx(losses["int4"], abs=1e-5)


def test_quant_config_and_qat_model(params, tokens):
    assert type(qat_model(CFG, QuantConfig())) is Transformer
    assert QuantConfig(weights="float8_e4m3fn").weights == "fp8_e4m3"
    assert QuantConfig(weights="int4", activations="int8").label == "W4A8"
    assert QuantConfig(weights="int3", method="gptq").label == "W3 gptq"
    assert QuantConfig(kv="int4").label == "KV4" and not QuantConfig().enabled
    with pytest.raises(ValueError, match="QuantConfig.weights"):
        QuantConfig(weights="int1")
    with pytest.raises(ValueError, match="gptq"):
        QuantConfig(kv="int8", method="gptq")
    with pytest.raises(ValueError, match="without weights"):  # qwix would leave the model float
        QuantConfig(activations="int8")
    with pytest.raises(ValueError, match="without weight_qtype"):
        block_rules(None, "int4")
    # W4A4 QAT: same params tree, finite straight-through gradients, forward differs from float
    model = qat_model(CFG, QuantConfig(weights="int4", activations="int4"))
    out = model.apply({"params": params}, tokens)
    ref = Transformer(CFG).apply({"params": params}, tokens)
    assert 0 < float(jnp.abs(out - ref).max()) < 0.2 * float(jnp.abs(ref).max())
    w4 = qat_model(CFG, QuantConfig(weights="int4")).apply({"params": params}, tokens)
    assert float(jnp.abs(out - w4).max()) > 0  # the activations are quantized too
    grads = jax.grad(lambda p: jnp.mean(model.apply({"params": p}, tokens) ** 2))(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_quantization_aware_training_is_part_of_the_run_config(tmp_path):
    """quant in the Config makes train() use the fake-quantized model (QAT): a different run id
    from its float twin, config.json records it, the run trains and its loss differs."""
    import dataclasses

    from experiments.harness.config import apply_overrides, config_hash
    from experiments.harness.train import train
    from experiments.train_lm import smoke

    float_cfg = apply_overrides(smoke(), ["train.tokens=10240", "data.eval_sequences=16"])
    qat_cfg = dataclasses.replace(float_cfg, quant=QuantConfig(weights="int2", kv="int4"))
    assert config_hash(qat_cfg) != config_hash(float_cfg)
    # activation-only and KV-only QAT runs (the study's A/KV rows) differ from the float twin and
    # from each other
    variants = [QuantConfig(), QuantConfig(weights="int8"), QuantConfig(weights="int8", activations="int4"),
                QuantConfig(kv="int4"), QuantConfig(kv="int3"), QuantConfig(weights="int4")]
    hashes = {config_hash(dataclasses.replace(float_cfg, quant=q)) for q in variants[1:]}
    assert len(hashes) == len(variants) - 1 and config_hash(float_cfg) not in hashes
    with pytest.raises(ValueError, match="post-training"):
        dataclasses.replace(float_cfg, quant=QuantConfig(weights="int4", method="gptq"))
    results = {name: train(cfg, tmp_path / name) for name, cfg in (("float", float_cfg), ("qat", qat_cfg))}
    assert all(r["status"] == "completed" for r in results.values())
    stored = json.loads((tmp_path / "qat" / "config.json").read_text())
    assert stored["quant"]["weights"] == "int2" and stored["quant"]["kv"] == "int4"
    assert results["qat"]["eval_loss"] != results["float"]["eval_loss"]
    assert abs(results["qat"]["eval_loss"] - results["float"]["eval_loss"]) < 1.0
