"""models.sampling: ragged prompts, stop + early exit, k samples per prompt, top-p, one compile per
bucket, quantized models, mesh sharding. Every check compares with an independent computation
(a full forward pass of the unpadded prompt, or the softmax it implies)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.sampling import Sampler, bucket_length, left_pad, sample_logits
from models.transformer import ModelConfig, Transformer

# init_std 0.3: peaked next-token distributions, so sampling frequencies are informative
CFG = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64, init_std=0.3)
PROMPTS = [[5, 17, 200, 3], [9], [40, 41, 42, 43, 44, 45, 46], [7, 7]]


@pytest.fixture(scope="module")
def params():
    tokens = jnp.zeros((1, 8), jnp.int32)
    return nn.unbox(jax.jit(Transformer(CFG).init)(jax.random.key(0, impl="rbg"), tokens))["params"]


def _right_padded(apply):
    """Full forward of one unpadded sequence, right-padded to 32 tokens (causal: the padding
    cannot change earlier positions) so that every length shares one compiled program."""
    jitted = jax.jit(apply)

    def run(p, t):
        t = np.asarray(t)
        padded = np.zeros((1, 32), np.int32)
        padded[:, :t.shape[1]] = t
        return np.asarray(jitted(p, jnp.asarray(padded)))[:, :t.shape[1]]

    return run


@pytest.fixture(scope="module")
def forward():
    model = Transformer(CFG)
    return _right_padded(lambda p, t: model.apply({"params": p}, t))


def _greedy_reference(forward, params, prompt, steps):
    """Greedy continuation and its per-step logits from full forward passes (no cache, no padding)."""
    seq, logits = list(prompt), []
    for _ in range(steps):
        row = np.asarray(forward(params, jnp.asarray([seq], jnp.int32)))[0, -1]
        logits.append(row)
        seq.append(int(np.argmax(row)))
    return np.array(seq[len(prompt):]), np.stack(logits)


def test_left_pad_and_bucket():
    tokens, lengths = left_pad([[1, 2, 3], [4]], multiple=4, pad_id=0)
    np.testing.assert_array_equal(tokens, [[0, 1, 2, 3], [0, 0, 0, 4]])
    np.testing.assert_array_equal(lengths, [3, 1])
    assert bucket_length(9, 8) == 16 and bucket_length(8, 8) == 8 and bucket_length(1, 8) == 8
    with pytest.raises(ValueError, match="empty"):
        left_pad([[1], []])
    with pytest.raises(ValueError, match="length 2"):
        left_pad([[1, 2, 3]], length=2)


@pytest.fixture(scope="module")
def greedy(params):
    tokens, lengths = left_pad(PROMPTS)
    return Sampler(CFG)(params, tokens, lengths, max_new_tokens=5, temperature=0.0, return_logits=True)


def test_ragged_prompts_match_unpadded_forward(params, forward, greedy):
    out = greedy
    assert out.tokens.shape == (4, 5) and int(out.steps) == 5
    for row, prompt in enumerate(PROMPTS):
        want_tokens, want_logits = _greedy_reference(forward, params, prompt, 5)
        np.testing.assert_array_equal(out.tokens[row], want_tokens)
        np.testing.assert_allclose(out.logits[row], want_logits, atol=2e-5)
    np.testing.assert_array_equal(out.lengths, 5)
    assert not np.asarray(out.stopped).any()


def test_stop_token_and_early_exit(params, forward):
    greedy, _ = _greedy_reference(forward, params, PROMPTS[0], 3)
    stop = int(greedy[2])  # row 0 stops after its third token
    sampler = Sampler(CFG, stop_tokens=(stop,), pad_id=0)
    tokens, lengths = left_pad([PROMPTS[0]] * 2)
    out = sampler(params, tokens, lengths, max_new_tokens=20, temperature=0.0)
    assert int(out.steps) == 3  # every row stopped: the loop exited after 3 of 20 steps
    np.testing.assert_array_equal(out.lengths, [3, 3])
    np.testing.assert_array_equal(out.tokens[:, :3], np.stack([greedy, greedy]))
    np.testing.assert_array_equal(out.tokens[:, 3:], 0)
    assert np.asarray(out.stopped).all()


def test_samples_per_prompt_follow_the_model_distribution(params, forward):
    """k samples of one prefill: the first token's frequencies equal softmax(logits / T), and the
    second token's conditional frequencies equal the model's given the first."""
    sampler = Sampler(CFG)
    tokens, lengths = left_pad(PROMPTS[:2])
    k, temperature = 4000, 0.7
    out = sampler(params, tokens, lengths, max_new_tokens=2, rng=jax.random.key(3),
                  temperature=temperature, samples_per_prompt=k)
    assert out.tokens.shape == (2 * k, 2)
    for b, prompt in enumerate(PROMPTS[:2]):
        rows = np.asarray(out.tokens[b * k:(b + 1) * k])
        logits = np.asarray(forward(params, jnp.asarray([prompt])))[0, -1]
        want = np.asarray(jax.nn.softmax(logits / temperature))
        got = np.bincount(rows[:, 0], minlength=CFG.vocab_size) / k
        assert np.abs(got - want).max() < 4 * np.sqrt(want.max() / k) + 1e-3
        first = int(np.argmax(np.bincount(rows[:, 0])))
        given = rows[rows[:, 0] == first, 1]
        logits2 = np.asarray(forward(params, jnp.asarray([prompt + [first]])))[0, -1]
        want2 = np.asarray(jax.nn.softmax(logits2 / temperature))
        got2 = np.bincount(given, minlength=CFG.vocab_size) / len(given)
        assert np.abs(got2 - want2).max() < 4 * np.sqrt(want2.max() / len(given)) + 1e-3


def test_top_p_keeps_the_nucleus():
    logits = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4]] * 4000))
    draw = jax.jit(sample_logits, static_argnums=3)
    draws = np.asarray(draw(logits, jax.random.key(0), 1.0, None, 0.6))
    # nucleus of mass 0.6: {0.4, 0.3} (mass before 0.3 is 0.4 < 0.6; before 0.2 it is 0.7)
    assert set(np.unique(draws)) == {2, 3}
    assert abs(np.mean(draws == 3) - 0.4 / 0.7) < 0.03
    all_draws = np.asarray(draw(logits, jax.random.key(1), 1.0, None, 1.0))
    np.testing.assert_allclose(np.bincount(all_draws, minlength=4) / 4000, [0.1, 0.2, 0.3, 0.4], atol=0.03)
    greedy = np.asarray(draw(logits, jax.random.key(1), 0.0, None, 0.9))
    np.testing.assert_array_equal(greedy, 3)


def test_compiled_once_per_bucket(params):
    sampler = Sampler(CFG, stop_tokens=(10,))
    for prompts, temperature, top_p in [([[1, 2, 3], [4]], 1.0, 1.0), ([[5, 6, 7, 8, 9], [1, 2]], 0.5, 0.9),
                                        ([[3], [3, 3, 3, 3, 3, 3, 3, 3]], 0.0, 1.0)]:
        tokens, lengths = left_pad(prompts)  # all bucket to P = 8
        sampler(params, tokens, lengths, max_new_tokens=4, rng=jax.random.key(0), temperature=temperature,
                top_p=top_p, samples_per_prompt=2)
    assert sampler.traces == 1


@pytest.mark.filterwarnings("ignore:'VariableState' was removed:DeprecationWarning")
def test_quantized_model_samples(params):
    from models.quantization import ptq

    qmodel, qparams = ptq(CFG, params)
    sampler = Sampler(CFG, model=qmodel)
    tokens, lengths = left_pad(PROMPTS)
    out = sampler(params=qparams, prompt_tokens=tokens, prompt_lengths=lengths, max_new_tokens=4,
                  temperature=0.0, return_logits=True)
    full = _right_padded(lambda p, t: qmodel.apply({"params": p}, t))
    for row, prompt in enumerate(PROMPTS):
        seq = list(prompt) + [int(t) for t in out.tokens[row]]
        ref = np.asarray(full(qparams, jnp.asarray([seq])))[0, len(prompt) - 1:-1]
        np.testing.assert_allclose(out.logits[row], ref, atol=1e-4)
        np.testing.assert_array_equal(out.tokens[row], np.argmax(ref, axis=-1))
    float_out = Sampler(CFG)(params, tokens, lengths, max_new_tokens=4, temperature=0.0, return_logits=True)
    assert np.abs(np.asarray(out.logits) - np.asarray(float_out.logits)).max() > 0  # really quantized


def test_sharded_over_mesh_batch_axes(params, greedy):
    from models.sharding import make_mesh

    mesh = make_mesh("data=4,fsdp=2", jax.devices()[:8])
    tokens, lengths = left_pad(PROMPTS)
    sharded = Sampler(CFG, mesh=mesh)(params, tokens, lengths, max_new_tokens=4, temperature=0.0,
                                      samples_per_prompt=2)
    plain = Sampler(CFG)(params, tokens, lengths, max_new_tokens=4, temperature=0.0, samples_per_prompt=2)
    np.testing.assert_array_equal(sharded.tokens, plain.tokens)
    # greedy: the k copies of a prompt equal its single greedy continuation
    np.testing.assert_array_equal(plain.tokens, np.repeat(np.asarray(greedy.tokens)[:, :4], 2, axis=0))
    assert len(sharded.tokens.sharding.device_set) == 8
    assert sharded.tokens.sharding.spec[0] == ("data", "fsdp")
    with pytest.raises(ValueError, match="multiple of the mesh"):
        Sampler(CFG, mesh=mesh)(params, tokens[:3], lengths[:3], max_new_tokens=2, temperature=0.0)


def test_errors(params):
    sampler = Sampler(CFG)
    tokens, lengths = left_pad(PROMPTS)
    with pytest.raises(ValueError, match="max_seq_len"):
        sampler(params, tokens, lengths, max_new_tokens=60, temperature=0.0)
    with pytest.raises(ValueError, match="rng"):
        sampler(params, tokens, lengths, max_new_tokens=2)
    with pytest.raises(ValueError, match="top_p"):
        sampler(params, tokens, lengths, max_new_tokens=2, temperature=0.0, top_p=0.0)
    with pytest.raises(ValueError, match="prompt_lengths"):
        sampler(params, tokens, [1, 2, 3, 9], max_new_tokens=2, temperature=0.0)
    with pytest.raises(ValueError, match="stop token"):
        Sampler(CFG, stop_tokens=(256,))


# ----------------------------------------------------------------------------- int8 KV cache


def _kv8_forward(rules=None):
    from models.quantization import QuantConfig, ptq_model

    model = ptq_model(CFG, QuantConfig(kv="int8") if rules is None else rules)
    return _right_padded(lambda p, t: model.apply({"params": p}, t))


@pytest.fixture(scope="module")
def greedy_kv8(params):
    tokens, lengths = left_pad(PROMPTS)
    return Sampler(CFG, kv_cache="int8")(params, tokens, lengths, max_new_tokens=5, temperature=0.0,
                                         return_logits=True)


@pytest.mark.filterwarnings("ignore:'VariableState' was removed:DeprecationWarning")
def test_int8_kv_cache_equals_fake_quantized_forward(params, greedy, greedy_kv8):
    """Sampling with the int8 cache = a full forward pass with fake-quantized keys/values
    (``ptq_model(kv="int8")``, no cache), and differs from the float cache by a little."""
    full = _kv8_forward()
    for row, prompt in enumerate(PROMPTS):
        seq = list(prompt) + [int(t) for t in greedy_kv8.tokens[row]]
        ref = np.asarray(full(params, jnp.asarray([seq])))[0, len(prompt) - 1:-1]
        np.testing.assert_allclose(greedy_kv8.logits[row], ref, atol=2e-5)
        np.testing.assert_array_equal(greedy_kv8.tokens[row], np.argmax(ref, axis=-1))
    from models.sampling import generate

    np.testing.assert_array_equal(generate(CFG, params, [PROMPTS[0]], 5, temperature=0.0, kv_cache="int8"),
                                  greedy_kv8.tokens[:1])
    gap = np.abs(np.asarray(greedy_kv8.logits) - np.asarray(greedy.logits)).max()
    spread = np.abs(np.asarray(greedy.logits)).max()
    assert 1e-3 < gap < 0.05 * spread, (gap, spread)


def test_int8_kv_cache_layout_and_bytes():
    """int8 values + one float32 scale per (layer, row, position, kv head): (1 + 4/Dh)/4 of the
    float32 cache's bytes; what the model writes dequantizes to its keys within half a step."""
    from models import kv_cache
    from models.sampling import init_cache

    c8, c32 = init_cache(CFG, 3, 16, "int8"), init_cache(CFG, 3, 16)
    dh = CFG.head_dim
    assert c8["k"].dtype == jnp.int8 and c8["k_scale"].shape == (CFG.n_layers, 3, 16, CFG.n_kv_heads)
    assert kv_cache.cache_bytes(c8) / kv_cache.cache_bytes(c32) == pytest.approx((1 + 4 / dh) / 4, rel=1e-12)
    magnitudes = jnp.array([1e-3, 1.0, 50.0])[:, None, None, None]  # one per row
    x = jax.random.normal(jax.random.key(0), (3, 4, CFG.n_kv_heads, dh)) * magnitudes
    layer = {name: c8[name][0] for name in ("k", "v", "k_scale", "v_scale")}
    written = jax.jit(kv_cache.write)(layer, x, -x, 5)
    keys, values = jax.jit(kv_cache.read, static_argnums=1)(written, jnp.float32)
    step = np.abs(np.asarray(x)).max(-1, keepdims=True) / 127
    assert np.all(np.abs(np.asarray(keys[:, 5:9]) - np.asarray(x)) <= step / 2 * (1 + 1e-5))
    np.testing.assert_array_equal(values[:, 5:9], -keys[:, 5:9])
    assert np.abs(np.asarray(written["k"])).max() == 127 and not np.asarray(keys[:, :5]).any()
    with pytest.raises(ValueError, match="kv cache dtype"):
        Sampler(CFG, kv_cache="int4")


@pytest.mark.filterwarnings("ignore:'VariableState' was removed:DeprecationWarning")
def test_int8_kv_cache_with_quantized_weights(params):
    """PTQ int4 weights + the int8 cache = a full forward of W4 KV8 with the same params."""
    from models.quantization import QuantConfig, ptq

    qmodel, qparams = ptq(CFG, params, QuantConfig(weights="int4"))
    tokens, lengths = left_pad(PROMPTS)
    out = Sampler(CFG, model=qmodel, kv_cache="int8")(qparams, tokens, lengths, max_new_tokens=4,
                                                      temperature=0.0, return_logits=True)
    full = _kv8_forward(QuantConfig(weights="int4", kv="int8"))
    for row, prompt in enumerate(PROMPTS):
        seq = list(prompt) + [int(t) for t in out.tokens[row]]
        ref = np.asarray(full(qparams, jnp.asarray([seq])))[0, len(prompt) - 1:-1]
        np.testing.assert_allclose(out.logits[row], ref, atol=5e-5)


def test_int8_kv_cache_sharded_with_samples_per_prompt(params, greedy_kv8):
    from models.sharding import make_mesh

    mesh = make_mesh("data=4,fsdp=2", jax.devices()[:8])
    tokens, lengths = left_pad(PROMPTS)
    sharded = Sampler(CFG, mesh=mesh, kv_cache="int8")(params, tokens, lengths, max_new_tokens=4,
                                                       temperature=0.0, samples_per_prompt=2)
    np.testing.assert_array_equal(sharded.tokens, np.repeat(np.asarray(greedy_kv8.tokens)[:, :4], 2, axis=0))
    assert len(sharded.tokens.sharding.device_set) == 8
