"""models.transformer: causality, packed documents, parameter counts, scan/remat/bf16, muP."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.harness.optimizer import scale_by_tree
from models.transformer import (
    Embedder,
    ModelConfig,
    Transformer,
    count_params,
    init_abstract,
    mup_lr_scales,
    param_counts,
    unstack_layers,
)

CFG = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64)
B, L = 2, 16


def _init(cfg, seed=0, length=L):
    tokens = jnp.zeros((B, length), jnp.int32)
    # rbg keys: same statistics, about half the compile time of threefry for init on CPU
    return nn.unbox(jax.jit(Transformer(cfg).init)(jax.random.key(seed, impl="rbg"), tokens))["params"]


def _apply(cfg):
    model = Transformer(cfg)
    return jax.jit(lambda p, t, s, pos: model.apply({"params": p}, t, s, pos))


@pytest.fixture(scope="module")
def params():
    return _init(CFG)


@pytest.mark.parametrize(
    "cfg",
    [
        CFG,
        ModelConfig(d_model=48, n_layers=3, n_heads=6, activation="gelu", tie_embeddings=True, scan_layers=False),
        ModelConfig(d_model=40, n_layers=1, n_heads=2, head_dim=12, activation="relu", vocab_size=100, d_ff=72),
    ],
)
def test_param_counts_match_init(cfg):
    abstract = init_abstract(cfg)
    counts = param_counts(cfg)
    assert count_params(abstract) == counts["total"]
    embedding = abstract["embed"]["embedding"].size + (0 if cfg.tie_embeddings else abstract["unembed"]["kernel"].size)
    assert counts["embedding"] == embedding
    assert counts["nonembedding"] == counts["total"] - embedding


def test_default_d_ff():
    assert ModelConfig(d_model=96, n_heads=4, activation="gelu").d_ff == 384
    assert ModelConfig(d_model=96, n_heads=4).d_ff == 256  # 8/3 * 96, multiple of 8
    assert ModelConfig(d_model=96, n_heads=4).head_dim == 24


def test_causal_and_segment_isolation_through_gradients(params):
    """d logits_t / d input_{t'} is exactly 0 unless t' <= t and both are in the same document."""
    segment_ids = jnp.array([[1] * 6 + [2] * 6 + [0] * 4, [1] * 16], jnp.int32)
    positions = jnp.array([list(range(6)) * 2 + list(range(4)), list(range(16))], jnp.int32)
    tokens = jax.random.randint(jax.random.key(3), (B, L), 0, CFG.vocab_size)
    model = Transformer(CFG)

    def per_position(delta):
        def add_delta(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if isinstance(context.module, Embedder) and context.method_name == "__call__":
                out = out + delta
            return out

        with nn.intercept_methods(add_delta):
            logits = model.apply({"params": params}, tokens, segment_ids, positions)
        return jnp.sum(logits ** 2, axis=-1)  # [B, L]

    jac = jax.jit(jax.jacrev(per_position))(jnp.zeros((B, L, CFG.d_model)))  # [B, L, B, L, D]
    influence = np.abs(np.asarray(jac)).sum(-1)  # [B, L, B, L]
    seg = np.asarray(segment_ids)
    for b in range(B):
        assert np.all(influence[b, :, 1 - b, :] == 0)  # rows never interact
        allowed = (np.arange(L)[None, :] <= np.arange(L)[:, None]) & (seg[b][:, None] == seg[b][None, :])
        assert np.all(influence[b, :, b, :][~allowed] == 0)
        assert np.all(influence[b, :, b, :][allowed] > 0)


def test_packed_documents_are_independent(params):
    apply = _apply(CFG)
    doc1 = jax.random.randint(jax.random.key(1), (7,), 0, 256)
    doc2 = jax.random.randint(jax.random.key(2), (9,), 0, 256)
    doc2b = jax.random.randint(jax.random.key(5), (9,), 0, 256)
    seg = jnp.array([[1] * 7 + [2] * 9] * 2, jnp.int32)
    pos = jnp.array([list(range(7)) + list(range(9))] * 2, jnp.int32)
    packed = jnp.stack([jnp.concatenate([doc1, doc2]), jnp.concatenate([doc1, doc2b])])
    logits = np.asarray(apply(params, packed, seg, pos))
    # changing document 2 never changes document 1's logits
    np.testing.assert_array_equal(logits[0, :7], logits[1, :7])
    assert np.abs(logits[0, 7:] - logits[1, 7:]).max() > 1e-3
    # positions restart: document 2 packed after document 1 == document 2 alone at the row start
    alone = jnp.stack([jnp.concatenate([doc2, doc1]), jnp.concatenate([doc2b, doc1])])
    seg_alone = jnp.array([[1] * 9 + [2] * 7] * 2, jnp.int32)
    pos_alone = jnp.array([list(range(9)) + list(range(7))] * 2, jnp.int32)
    logits_alone = np.asarray(apply(params, alone, seg_alone, pos_alone))
    np.testing.assert_allclose(logits[:, 7:], logits_alone[:, :9], atol=1e-5)
    np.testing.assert_allclose(logits[:, :7], logits_alone[:, 9:], atol=1e-5)


def _loss(cfg):
    model = Transformer(cfg)

    def loss(p, tokens):
        logits = model.apply({"params": p}, tokens)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1))

    return jax.jit(jax.value_and_grad(loss))


def test_scan_unscanned_and_remat_agree(params):
    tokens = jax.random.randint(jax.random.key(4), (B, L), 0, 256)
    ref_loss, ref_grad = _loss(CFG)(params, tokens)
    unscanned = CFG.replace(scan_layers=False)
    loss, grad = _loss(unscanned)(unstack_layers(params, CFG.n_layers), tokens)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(unstack_layers(ref_grad, CFG.n_layers)), jax.tree.leaves(grad)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for remat in ("full", "dots_saveable"):
        loss, grad = _loss(CFG.replace(remat=remat))(params, tokens)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        for a, b in zip(jax.tree.leaves(ref_grad), jax.tree.leaves(grad)):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_bfloat16_compute(params):
    tokens = jax.random.randint(jax.random.key(6), (B, L), 0, 256)
    seg = jnp.ones((B, L), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(L), (B, L))
    ref = np.asarray(_apply(CFG)(params, tokens, seg, pos))
    out = _apply(CFG.replace(dtype="bfloat16"))(params, tokens, seg, pos)
    assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
    scale = np.abs(ref).max()
    assert np.abs(np.asarray(out) - ref).max() < 0.05 * scale


def test_mup_parameterization():
    base = ModelConfig(d_model=32, n_heads=4, n_layers=1, mup=True, mup_base_width=32)
    wide = base.replace(d_model=128, n_heads=16)  # width multiplier 4
    tokens = jax.random.randint(jax.random.key(7), (B, L), 0, 256)
    seg = jnp.ones((B, L), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(L), (B, L))
    # at the base width muP is the standard parameterization (multipliers all 1)
    assert base.width_multiplier == 1.0
    assert all(s == 1.0 for s in jax.tree.leaves(mup_lr_scales(base)))
    # wider: hidden init std / sqrt(4), embedding unchanged, logits / 4, hidden LR x 1/4
    p_wide = _init(wide)
    std = lambda x: float(np.std(np.asarray(x)))
    assert std(p_wide["layers"]["mlp"]["up"]["kernel"]) == pytest.approx(0.02 / 2, rel=0.05)
    assert std(p_wide["layers"]["attention"]["query"]["kernel"]) == pytest.approx(0.02 / 2, rel=0.05)
    assert std(p_wide["embed"]["embedding"]) == pytest.approx(0.02, rel=0.05)
    mup_logits = _apply(wide)(p_wide, tokens, seg, pos)
    sp_logits = _apply(wide.replace(mup=False))(p_wide, tokens, seg, pos)
    np.testing.assert_allclose(mup_logits * 4, sp_logits, rtol=1e-5, atol=1e-6)
    scales = mup_lr_scales(wide, p_wide)
    assert scales["layers"]["attention"]["out"]["kernel"] == 0.25
    assert scales["layers"]["mlp"]["down"]["kernel"] == 0.25
    assert scales["embed"]["embedding"] == 1.0 and scales["unembed"]["kernel"] == 1.0
    assert scales["layers"]["mlp_norm"]["scale"] == 1.0
    assert all(s == 1.0 for s in jax.tree.leaves(mup_lr_scales(wide.replace(mup=False))))
    updates = jax.tree.map(jnp.ones_like, p_wide)
    tx = scale_by_tree(scales)
    scaled, _ = tx.update(updates, tx.init(p_wide))
    assert float(scaled["layers"]["mlp"]["gate"]["kernel"][0, 0, 0]) == 0.25
    assert float(scaled["embed"]["embedding"][0, 0]) == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"d_model": 30, "n_heads": 4}, "not divisible"),
        ({"n_heads": 4, "n_kv_heads": 3}, "multiple of n_kv_heads"),
        ({"activation": "tanh"}, "activation"),
        ({"remat": "some"}, "remat"),
        ({"dtype": "float16"}, "dtype"),
        ({"d_model": 0}, "d_model"),
        ({"head_dim": 7}, "even"),
        ({"init_std": -1.0}, "init_std"),
        ({"attention_impl": "flash"}, "attention_impl"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_rotary_is_relative():
    """Attention scores depend on positions only through their difference."""
    from models.transformer import apply_rotary

    q = jax.random.normal(jax.random.key(8), (1, 1, 1, 16))
    k = jax.random.normal(jax.random.key(9), (1, 1, 1, 16))
    score = lambda i, j: float(jnp.sum(apply_rotary(q, jnp.array([[i]]), 1e4) * apply_rotary(k, jnp.array([[j]]), 1e4)))
    assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-5)
    assert not math.isclose(score(5, 2), score(5, 4), rel_tol=1e-3)


# --------------------------------------------------------------------------- models.shapes


def test_shape_rule_tolerance_and_monotonicity():
    from models.shapes import TOLERANCE, config_for_params

    previous = 0
    for target in np.geomspace(1e4, 1e9, 400):
        cfg = config_for_params(target)
        got = param_counts(cfg)["nonembedding"]
        tol = max(v for k, v in TOLERANCE.items() if target >= k)
        assert abs(got / target - 1) <= tol, (target, got)
        assert got >= previous  # achieved count never decreases with the target
        assert cfg.d_model == cfg.n_heads * cfg.head_dim and cfg.head_dim % 2 == 0
        previous = got


def test_shape_rule_examples():
    from models.shapes import config_for_params, config_ladder, describe

    gpt3_medium = ModelConfig(d_model=1024, n_layers=24, n_heads=16, d_ff=2752)
    cfg = config_for_params(param_counts(gpt3_medium)["nonembedding"])
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.head_dim, cfg.d_ff) == (1024, 24, 16, 64, 2752)
    tiny = config_for_params(2e4)
    assert tiny.n_layers == 1 and tiny.n_heads == 4
    total = config_for_params(1e6, count="total", tie_embeddings=True, activation="gelu", dtype="bfloat16")
    assert abs(param_counts(total)["total"] / 1e6 - 1) < 0.07 and total.dtype == "bfloat16"
    assert total.d_ff == 4 * total.d_model and total.tie_embeddings
    gqa = config_for_params(5e7, kv_group=2)
    assert gqa.n_kv_heads * 2 == gqa.n_heads
    ladder = config_ladder(1e4, 1e7, 12)
    counts = [param_counts(c)["nonembedding"] for c in ladder]
    assert counts == sorted(set(counts)) and len(ladder) >= 10
    assert describe(cfg).startswith("d1024-l24-h16-ff2752-n")
    for bad in (0, -5, float("nan")):
        with pytest.raises(ValueError, match="n_target"):
            config_for_params(bad)
    with pytest.raises(ValueError, match="count"):
        config_for_params(1e6, count="all")
    with pytest.raises(ValueError, match="no shape"):
        config_for_params(10)


# --------------------------------------------------------------------------- models.sampling


@pytest.mark.parametrize("scan, temperature", [(True, 1.0), (False, 0.0)])
def test_cached_decoding_matches_full_forward(params, scan, temperature):
    from models.sampling import generate

    cfg = CFG.replace(scan_layers=scan)
    p = params if scan else unstack_layers(params, CFG.n_layers)
    prompt = jax.random.randint(jax.random.key(10), (3, 5), 0, 256)
    tokens, step_logits = generate(cfg, p, prompt, 6, jax.random.key(11), temperature=temperature,
                                   return_logits=True)
    assert tokens.shape == (3, 6) and tokens.dtype == jnp.int32
    sequence = jnp.concatenate([prompt, tokens], axis=1)
    full = _apply(cfg)(p, sequence, jnp.ones_like(sequence), jnp.broadcast_to(jnp.arange(11), (3, 11)))
    np.testing.assert_allclose(step_logits, full[:, 4:-1], atol=1e-5)
    if temperature == 0.0:
        np.testing.assert_array_equal(tokens, np.argmax(full[:, 4:-1], axis=-1))


def test_sampling_top_k_and_errors(params):
    from models.sampling import generate, sample_logits

    logits = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4]] * 2000))
    draws = np.asarray(sample_logits(logits, jax.random.key(0), 1.0, 2))
    assert set(np.unique(draws)) == {2, 3}
    assert abs(np.mean(draws == 3) - 0.4 / 0.7) < 0.04
    top1, logits = generate(CFG, params, jnp.ones((2, 3), jnp.int32), 4, jax.random.key(1), temperature=1.0,
                            top_k=1, return_logits=True)
    np.testing.assert_array_equal(top1, np.argmax(logits, axis=-1))
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(CFG, params, jnp.ones((1, 60), jnp.int32), 10, jax.random.key(0))
    with pytest.raises(ValueError, match="rng"):
        generate(CFG, params, jnp.ones((1, 4), jnp.int32), 2, None, temperature=1.0)


# --------------------------------------------------------------------------- models.quantization


QWIX_DEPRECATION = "ignore:'VariableState' was removed:DeprecationWarning"  # raised inside qwix 0.1.8


@pytest.mark.filterwarnings(QWIX_DEPRECATION)
def test_int8_ptq_close_to_float_scanned_and_not(params):
    from models.quantization import ptq, quantized_weight_bytes

    tokens = jax.random.randint(jax.random.key(12), (B, L), 0, 256)
    ref = jax.jit(Transformer(CFG).apply)({"params": params}, tokens)
    qmodel, qparams = ptq(CFG, params)
    out = jax.jit(qmodel.apply)({"params": qparams}, tokens)
    err = float(jnp.abs(out - ref).max())
    assert 0 < err < 0.02 * float(jnp.abs(ref).max())  # quantized, but close
    sizes = quantized_weight_bytes(qparams)
    assert sizes["quantized"] > 0
    # scanned PTQ (vmapped quantization of stacked weights) == unscanned PTQ layer by layer
    unscanned = CFG.replace(scan_layers=False)
    qmodel_u, qparams_u = ptq(unscanned, unstack_layers(params, CFG.n_layers))
    np.testing.assert_allclose(jax.jit(qmodel_u.apply)({"params": qparams_u}, tokens), out, atol=1e-5)
    q0 = qparams_u["layers_0"]["mlp"]["up"]["kernel"].array
    assert q0.qvalue.dtype == jnp.int8 and q0.scale.shape == (1, CFG.d_ff)
    with pytest.raises(ValueError, match="catch-all"):
        import qwix

        ptq(CFG, params, [qwix.QuantizationRule(module_path=".*", weight_qtype=jnp.int8)])


@pytest.mark.filterwarnings(QWIX_DEPRECATION)
def test_qat_gradients_flow(params):
    from models.quantization import block_rules, qat_model

    tokens = jax.random.randint(jax.random.key(13), (B, L), 0, 256)
    qmodel = qat_model(CFG, block_rules("int8", act_qtype="int8", qat=True))

    def loss(p, model):
        logits = model.apply({"params": p}, tokens)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1))

    qat_step = jax.jit(jax.value_and_grad(lambda p: loss(p, qmodel)))
    float_loss, float_grads = jax.jit(jax.value_and_grad(lambda p: loss(p, Transformer(CFG))))(params)
    qat_loss, qat_grads = qat_step(params)
    assert qat_loss != float_loss and abs(qat_loss - float_loss) < 0.01  # fake quantization is on
    for path, g in jax.tree_util.tree_flatten_with_path(qat_grads)[0]:
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, path
    # straight-through estimator: gradients close to the float model's
    for g, f in zip(jax.tree.leaves(qat_grads), jax.tree.leaves(float_grads)):
        assert np.abs(g - f).max() <= 0.1 * np.abs(f).max() + 1e-6
    # a few Adam steps on one batch through the fake-quantized model lower its loss
    import optax

    opt = optax.adam(1e-2)

    @jax.jit
    def apply_adam(grads, state, p):
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    p, state = params, opt.init(params)
    for _ in range(5):
        p, state = apply_adam(qat_step(p)[1], state, p)
    assert qat_step(p)[0] < qat_loss - 0.1


def test_splash_attention_equals_dense_attention_without_a_dense_mask():
    """The TPU Pallas splash kernel (run here in Pallas interpret mode), sharded with
    shard_map on fsdp=2,tensor=4 (2 kv heads repeated over 4 tensor shards), gives the dense
    path's loss and gradients on packed rows with padding, and builds no [B, 1, L, L] mask."""
    from models import sharding as S
    from models.transformer import attention_impl_name

    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=128,
                      vocab_size=64)
    batch, length = 4, 128  # the kernel's blocks are 128 long
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 64, (batch, length)), jnp.int32)
    seg = np.ones((batch, length), np.int32)
    seg[0, 20:], seg[1, 40:], seg[3, 100:] = 2, 2, 0  # packed documents; padding in row 3
    pos = np.tile(np.arange(length), (batch, 1))
    pos[0, 20:] -= 20
    pos[1, 40:] -= 40
    segment_ids, positions = jnp.asarray(seg), jnp.asarray(pos, jnp.int32)
    mesh = S.make_mesh("fsdp=2,tensor=4")
    results, jaxprs = {}, {}
    for impl in ("xla", "splash"):
        model = Transformer(cfg.replace(attention_impl=impl))
        params, _ = S.init_params(model, jax.random.key(0), (batch, length), mesh)

        def loss(p, model=model):
            logits = model.apply({"params": p}, tokens, segment_ids, positions)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

        with S.sharding_context(mesh):
            results[impl] = jax.jit(jax.value_and_grad(loss))(params)
            jaxprs[impl] = str(jax.make_jaxpr(loss)(params))
    (loss_xla, grads_xla), (loss_splash, grads_splash) = results["xla"], results["splash"]
    np.testing.assert_allclose(loss_splash, loss_xla, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 grads_splash, grads_xla)
    dense_mask = f"bool[{batch},1,{length},{length}]"
    assert dense_mask in jaxprs["xla"] and dense_mask not in jaxprs["splash"]
    assert "pallas_call" in jaxprs["splash"]
    # auto choice: splash on TPU (sequence in 128-blocks), cuDNN on GPU in bf16, else XLA
    assert attention_impl_name(cfg.replace(max_seq_len=2048), "tpu") == "splash"
    assert attention_impl_name(cfg, "tpu", seq_len=192) == "xla"  # not in 128-blocks
    assert attention_impl_name(cfg.replace(dtype="bfloat16"), "gpu") == "cudnn"
    assert attention_impl_name(cfg, "gpu") == "xla" and attention_impl_name(cfg, "cpu") == "xla"
