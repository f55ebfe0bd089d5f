"""Sampling speed: ``models.sampling.Sampler`` vs a naive loop without a cache vs the forward pass.

    python -m benchmarks.sampling_speed             # two shapes, ~3-5 min on 2 shared CPU cores
    python -m benchmarks.sampling_speed --quick     # the smallest shape only
    python -m benchmarks.sampling_speed --shapes 256,4,128,32,32 --rounds 10   # d,L,B,P,T

For each shape (d_model, n_layers, batch B, prompt length P, new tokens T), one random-init
``Transformer`` (byte vocabulary) and one batch of random prompts, three programs, each compiled
once before timing:

* sampler: ``Sampler(cfg)(params, prompts, max_new_tokens=T, temperature=1)``: prefill + T - 1
  cached decode steps in one ``while_loop`` (no stop token, so every row generates T tokens);
* int8kv: the same with ``Sampler(cfg, kv_cache="int8")`` (keys/values stored in int8 with one
  float32 scale per token and head, ``models.kv_cache``); its cache bytes are printed beside the
  float cache's;
* naive: a jitted step that runs the full forward pass over the whole [B, P + T] buffer, draws
  the token at the current position and writes it into the buffer, called T times from Python
  (no cache: every step recomputes every position);
* forward: one jitted forward pass over [B, P + T] tokens (the model's training-shaped
  throughput, no sampling).

Reported tokens/s: generated tokens (B x T) per second for sampler and naive; processed tokens
(B x (P + T)) per second for forward. Timing: ``--rounds`` rounds, in each every program runs
``--reps`` times (the order rotates between rounds), closed by ``block_until_ready``; ratios are
medians over rounds of per-round ratios (the machine is shared: programs of one round run
seconds apart, so the ratio is robust where absolute numbers are not).

Measured 2026-12-04, jax 0.10.2, CPU (2 cores shared with 4-5 other jobs, load average 9-13),
7 rounds x 3 reps, float32:

| d_model, layers, batch, P, T | params | sampler gen tok/s | naive gen tok/s | forward tok/s | sampler/naive | sampler/forward |
|---|---|---|---|---|---|---|
| 64, 2, 64, 16, 16 | 130,368 | 26,486 | 7,669 | 187,045 | 3.36 | 0.129 |
| 128, 4, 64, 32, 32 | 857,216 | 2,026 | 213 | 12,543 | 13.36 | 0.176 |

int8 KV cache (the int8kv program; added later, measured 2026-12-04 in one process beside the
float-cache sampler, order rotating, 5 rounds x 2 reps, same shared machine, load average 5-6):

| d_model, layers, batch, P, T | sampler gen tok/s | int8kv gen tok/s | int8kv/sampler | cache bytes float32 / int8 |
|---|---|---|---|---|
| 64, 2, 64, 16, 16 | 26,950 | 30,496 | 1.12 | 2,031,616 / 571,392 (0.2812) |
| 128, 4, 64, 32, 32 | 3,433 | 6,843 | 1.64 | 16,515,072 / 4,644,864 (0.2812) |

Cache bytes are (1 + 4/Dh)/4 of float32's (Dh = 32 here). On this CPU the int8 cache is faster,
not slower, the more so for the larger cache; plausibly memory traffic (a decode step reads the
whole cache, 3.6x smaller in int8), not profiled. On one H200 (bfloat16, jax 0.11.2, 5 rounds x
2 reps; ``--shapes 512,8,256,64,128 1024,24,64,128,128 --dtype bfloat16``) int8kv/sampler is
1.04 (25M params, 107,350 vs 111,621 gen tok/s) and 1.02 (302M, 11,368 vs 11,594), with 0.5625
of the bfloat16 cache's bytes; sampler/naive 3.78 and 4.40 (benchmarks/README.md).

The cache pays more the longer the sequence (3.4x at P + T = 32, 13x at 64). A decode step
handles one token per row, so on CPU the sampler generates 0.13-0.18x the tokens/s that the same
model processes in a training-shaped forward pass over B x (P + T) tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.sampling import Sampler
from models.transformer import ModelConfig, Transformer, param_counts

SHAPES = ((64, 2, 64, 16, 16), (128, 4, 64, 32, 32))  # d_model, n_layers, batch, P, T


def build(d_model, n_layers, batch, prompt_len, new_tokens, dtype="float32"):
    total = prompt_len + new_tokens
    cfg = ModelConfig(vocab_size=256, d_model=d_model, n_layers=n_layers, n_heads=max(1, d_model // 32),
                      max_seq_len=total, dtype=dtype)
    model = Transformer(cfg)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]
    prompts = np.asarray(jax.random.randint(jax.random.key(1), (batch, prompt_len), 0, 256), np.int32)
    sampler, sampler8 = Sampler(cfg), Sampler(cfg, kv_cache="int8")

    def run_sampler(key):
        return sampler(params, prompts, max_new_tokens=new_tokens, rng=key, temperature=1.0).tokens

    def run_int8kv(key):
        return sampler8(params, prompts, max_new_tokens=new_tokens, rng=key, temperature=1.0).tokens

    @jax.jit
    def naive_step(params, buffer, index, key):
        logits = model.apply({"params": params}, buffer)
        row = jax.lax.dynamic_index_in_dim(logits, index - 1, axis=1, keepdims=False)
        token = jax.random.categorical(key, row, axis=-1).astype(jnp.int32)
        return jax.lax.dynamic_update_index_in_dim(buffer, token, index, axis=1)

    start_buffer = jnp.asarray(np.pad(prompts, ((0, 0), (0, new_tokens))))

    def run_naive(key):
        buffer = start_buffer
        for i in range(new_tokens):
            buffer = naive_step(params, buffer, jnp.int32(prompt_len + i), jax.random.fold_in(key, i))
        return buffer

    forward = jax.jit(lambda p, t: model.apply({"params": p}, t))

    def run_forward(key):
        del key
        return forward(params, start_buffer)

    programs = {"sampler": run_sampler, "int8kv": run_int8kv, "naive": run_naive, "forward": run_forward}
    tokens = {"sampler": batch * new_tokens, "int8kv": batch * new_tokens, "naive": batch * new_tokens,
              "forward": batch * total}
    return cfg, programs, tokens


def measure(shape, rounds: int, reps: int, dtype: str) -> dict:
    cfg, programs, tokens = build(*shape, dtype=dtype)
    names = list(programs)
    for name in names:  # compile
        jax.block_until_ready(programs[name](jax.random.key(0)))
    per_round = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            for i in range(reps):
                out = programs[name](jax.random.key(100 * r + i))
            jax.block_until_ready(out)
            per_round[name].append(tokens[name] * reps / (time.perf_counter() - start))
    med = {n: statistics.median(v) for n, v in per_round.items()}
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(per_round[a], per_round[b]))  # noqa: E731
    from models import kv_cache

    cache_len = shape[3] + shape[4] - 1  # what the sampler allocates: P + T - 1 slots
    cache_bytes = {name: kv_cache.cache_bytes(jax.eval_shape(
        lambda d=d: kv_cache.init_cache(cfg, shape[2], cache_len, d))) for name, d in (("float", None), ("int8", "int8"))}
    return {"shape": shape, "params": param_counts(cfg)["total"], **med,
            "sampler/naive": ratio("sampler", "naive"), "sampler/forward": ratio("sampler", "forward"),
            "int8kv/sampler": ratio("int8kv", "sampler"), "cache_bytes": cache_bytes}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shapes", nargs="*", help="d_model,n_layers,batch,prompt_len,new_tokens")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes] if args.shapes else list(SHAPES)
    if args.quick:
        shapes = shapes[:1]
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, dtype {args.dtype}")
    print("| d_model, layers, batch, P, T | params | sampler gen tok/s | int8kv gen tok/s | naive gen tok/s "
          "| forward tok/s | sampler/naive | sampler/forward | int8kv/sampler | cache bytes float / int8 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for shape in shapes:
        res = measure(shape, args.rounds, args.reps, args.dtype)
        results.append(res)
        cb = res["cache_bytes"]
        print(f"| {', '.join(map(str, shape))} | {res['params']:,} | {res['sampler']:,.0f} | {res['int8kv']:,.0f} "
              f"| {res['naive']:,.0f} | {res['forward']:,.0f} | {res['sampler/naive']:.2f} "
              f"| {res['sampler/forward']:.3f} | {res['int8kv/sampler']:.2f} "
              f"| {cb['float']:,} / {cb['int8']:,} ({cb['int8'] / cb['float']:.4f}) |", flush=True)
    return results


if __name__ == "__main__":
    main()
