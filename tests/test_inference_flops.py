"""scaling.flops inference FLOPs, checked against the matmuls XLA is asked to run (counted from
the StableHLO of a real decode step and a real prefill) and against a brute-force sum."""


import jax
import jax.numpy as jnp
import pytest

from scaling import flops as F


def _dot_flops(text: str) -> int:
    """The matmul FLOPs of a lowered module (tests/test_flops.py's count, following func.call edges)."""
    from test_flops import _dot_flops_from_stablehlo

    return _dot_flops_from_stablehlo(text)


@pytest.mark.parametrize("gated,tied,kv_heads", [(True, False, 2), (False, True, 4)])
def test_exact_matches_xla_decode_step_and_prefill(gated, tied, kv_heads):
    from models.sampling import init_cache
    from models.transformer import ModelConfig, Transformer, init_abstract, shape_dict

    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=kv_heads, d_ff=192,
                      activation="swiglu" if gated else "gelu", tie_embeddings=tied, scan_layers=False)
    model, shape, params = Transformer(cfg), shape_dict(cfg), init_abstract(cfg)
    batch, context = 3, 37
    # one generated token attending to a cache of exactly `context` slots
    step = jax.jit(lambda p, t, c: model.apply({"params": p}, t, jnp.ones_like(t), jnp.zeros_like(t),
                                               cache=c, cache_index=jnp.int32(context - 1)))
    lowered = step.lower(params, jnp.zeros((batch, 1), jnp.int32), init_cache(cfg, batch, context))
    want = F.inference_flops_per_token(shape, context, "exact") * batch
    assert _dot_flops(lowered.as_text()) == pytest.approx(want, rel=1e-12)
    # a prefill of P tokens computes all P x P scores: P x f(P); the causal count is sum_t f(t)
    prompt = 20
    lowered = jax.jit(lambda p, t: model.apply({"params": p}, t)).lower(params, jnp.zeros((1, prompt), jnp.int32))
    full = prompt * F.inference_flops_per_token(shape, prompt, "exact")
    assert _dot_flops(lowered.as_text()) == pytest.approx(full, rel=1e-12)
    causal = F.sampling_flops(shape, prompt, 1, 1, "exact")  # T = 1: the prefill alone
    attention_per_key = 2 * 2 * cfg.n_layers * cfg.n_heads * cfg.head_dim
    assert full - causal == pytest.approx(attention_per_key * (prompt**2 - prompt * (prompt + 1) / 2))


def test_sampling_flops_brute_force_and_2n():
    shape = dict(vocab_size=300, d_model=48, n_layers=3, n_heads=6, n_kv_heads=3, head_dim=8, d_ff=128,
                 gated=True, tie_embeddings=False)
    f = lambda c: F.inference_flops_per_token(shape, c, "exact")  # noqa: E731
    prompt, new, n = 11, 7, 5
    shared = sum(f(t) for t in range(1, prompt + 1)) + n * sum(f(prompt + i + 1) for i in range(new - 1))
    assert F.sampling_flops(shape, prompt, new, n) == pytest.approx(shared, rel=1e-12)
    separate = shared + (n - 1) * sum(f(t) for t in range(1, prompt + 1))
    assert F.sampling_flops(shape, prompt, new, n, shared_prefill=False) == pytest.approx(separate, rel=1e-12)
    counts = F.param_counts(shape)
    assert F.sampling_flops(shape, prompt, new, n, "2N") == 2 * counts["total"] * (prompt + n * (new - 1))
    assert F.inference_flops_per_token(shape, 9, "2N_nonembed") == 2 * counts["nonembedding"]
    # a mean length interpolates between the integer lengths around it
    mid = F.sampling_flops(shape, prompt, 3.5, n)
    lo, hi = F.sampling_flops(shape, prompt, 3, n), F.sampling_flops(shape, prompt, 4, n)
    assert lo < mid < hi
    for bad in [dict(context_len=0), dict(convention="6N")]:
        with pytest.raises(ValueError):
            F.inference_flops_per_token(shape, **{"context_len": 4, **bad})
    with pytest.raises(ValueError, match="new_tokens"):
        F.sampling_flops(shape, 4, 0.5)
    with pytest.raises(ValueError, match="n_samples"):
        F.sampling_flops(shape, 4, 2, 0)
