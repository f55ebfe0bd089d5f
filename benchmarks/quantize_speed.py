"""Time to quantize and evaluate one (run, format) pair with ``measure_ptq.ptq_measure``, on CPU.

    python -m benchmarks.quantize_speed                 # d_model 64, 2 layers, ~2-4 min on 2 cores
    python -m benchmarks.quantize_speed --d_model 128 --n_layers 4 --eval_tokens 65536

Trains one small run (checkpoints at half and full length), then measures every format on both
checkpoints with ``ptq_measure``: the first checkpoint pays the compilation of each format's
model ("cold"), the second reuses it ("warm"), as later runs and checkpoints of one shape do in a
study. For each format: quantize seconds and evaluate seconds, cold and warm, and the warm total
as a multiple of the float model's warm evaluation of the same held-out tokens, timed in the
same call (the machine is shared, so that ratio is the number to compare across machines).
No goal: the numbers size a study (runs x checkpoints x formats).

Measured 2026-12-04, jax 0.10.2, CPU (2 cores shared, load average 14), d_model 64, 2 layers
(130k params), 200 steps, 32,763 held-out tokens; float evaluation cold 2.31 s, warm 0.19 s:

| format | delta (nats) | cold quantize s | cold eval s | warm quantize s | warm eval s | warm total / float eval |
|---|---|---|---|---|---|---|
| W8 | -0.00005 +- 0.00002 | 5.69 | 2.63 | 0.18 | 0.59 | 4.0x |
| Wfp8 | -0.00027 +- 0.00008 | 1.49 | 3.47 | 0.57 | 2.88 | 17.8x |
| W6 | -0.00017 +- 0.00010 | 0.38 | 2.56 | 0.28 | 0.74 | 5.3x |
| W5 | +0.00110 +- 0.00024 | 0.16 | 4.20 | 0.21 | 1.09 | 6.7x |
| W4 | +0.00002 +- 0.00037 | 1.37 | 3.82 | 0.30 | 0.47 | 4.0x |
| Wnf4 | +0.00085 +- 0.00040 | 2.46 | 3.07 | 0.30 | 0.24 | 2.8x |
| W3 | +0.00866 +- 0.00090 | 0.19 | 2.78 | 0.17 | 0.43 | 3.1x |
| W2 | +0.11069 +- 0.00483 | 0.28 | 4.27 | 0.16 | 0.43 | 3.0x |
| W4 gptq | +0.00068 +- 0.00016 | 13.30 | 2.91 | 1.59 | 0.80 | 12.3x |
| W2 gptq | +0.01440 +- 0.00111 | 10.66 | 2.76 | 1.53 | 0.27 | 9.2x |
| W4A8 | +0.00021 +- 0.00037 | 0.28 | 3.71 | 0.31 | 1.54 | 9.6x |
| W4A4 | +0.02330 +- 0.00146 | 0.26 | 3.50 | 0.47 | 1.11 | 8.1x |
| KV4 | +0.00223 +- 0.00044 | 1.44 | 3.14 | 0.15 | 0.85 | 5.2x |

So a (run, format) costs ~3-15 s the first time a shape is seen (compilation; GPTQ's column loop
most) and ~0.4-3 s after; fp8 evaluation is slow on CPU (no native fp8 matmul). At 8-5 bits the
deltas are below ~1e-3 and can be negative: weight noise enters the held-out loss to first order
(the trained weights are not at the held-out minimum), so a single rounding can help; delta_sem
is the held-out sampling error only and does not cover that rounding-to-rounding spread.
"""

from __future__ import annotations

import argparse
import tempfile

import jax

from experiments.harness import corpus
from experiments.harness.config import Config, TrainConfig
from experiments.harness.data import DataConfig
from experiments.harness.measure_ptq import ptq_measure
from experiments.harness.train import train
from models.quantization import QuantConfig
from models.transformer import ModelConfig

FORMATS = ["int8", "fp8", "int6", "int5", "int4", "nf4", "int3", "int2",
           QuantConfig(weights="int4", method="gptq"), QuantConfig(weights="int2", method="gptq"),
           QuantConfig(weights="int4", activations="int8"), QuantConfig(weights="int4", activations="int4"),
           QuantConfig(kv="int4")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d_model", type=int, default=64)
    parser.add_argument("--n_layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval_tokens", type=int, default=2**15)
    args = parser.parse_args(argv)
    seq, batch = 128, 16
    root = tempfile.mkdtemp(prefix="quantize_speed_")
    corpus.prepare("python_stdlib/small", f"{root}/tfds")
    cfg = Config(
        model=ModelConfig(vocab_size=256, d_model=args.d_model, n_layers=args.n_layers,
                          n_heads=max(1, args.d_model // 32), max_seq_len=seq),
        data=DataConfig(dataset="python_stdlib/small", data_dir=f"{root}/tfds", seq_len=seq, eval_sequences=16),
        train=TrainConfig(tokens=args.steps * batch * seq, batch_size=batch, lr=1e-2, warmup=0.1,
                          log_every=args.steps, checkpoint_every=args.steps // 2, eval_batch_size=16))
    result = train(cfg, f"{root}/run", devices=jax.devices()[:1])
    print(f"trained: {result['n_params']:,} params, {result['tokens']:,} tokens, eval loss {result['eval_loss']:.3f}")
    cold = ptq_measure(f"{root}/run", FORMATS, eval_tokens=args.eval_tokens, checkpoint_step=args.steps // 2)
    warm = ptq_measure(f"{root}/run", FORMATS, eval_tokens=args.eval_tokens)
    float_eval = warm[0]["eval_s"]
    print(f"held-out tokens {warm[0]['eval_tokens']:,}; float eval: cold {cold[0]['eval_s']:.2f} s, "
          f"warm {float_eval:.2f} s\n")
    print("| format | delta (nats) | cold quantize s | cold eval s | warm quantize s | warm eval s | warm total / float eval |")
    print("|---|---|---|---|---|---|---|")
    for c, w in zip(cold[1:], warm[1:]):
        total = w["quantize_s"] + w["eval_s"]
        print(f"| {w['label']} | {w['delta']:+.5f} +- {w['delta_sem']:.5f} | {c['quantize_s']:.2f} | {c['eval_s']:.2f} "
              f"| {w['quantize_s']:.2f} | {w['eval_s']:.2f} | {total / float_eval:.1f}x |")


if __name__ == "__main__":
    main()
