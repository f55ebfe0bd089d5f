"""Train one decoder-only language model on the embedded Python-stdlib corpus (byte tokens).

    python -m experiments.train_lm --workdir runs/lm --preset smoke       # ~20 s on a CPU
    python -m experiments.train_lm --workdir runs/lm8 --preset smoke --host_devices 8 --mesh data=2,fsdp=2,tensor=2
    python -m experiments.train_lm --workdir runs/lm256 --set model.d_model=256 --set train.tokens=2e7
    python -m experiments.train_lm --workdir gs://bucket/lm300m --preset gpu

The second runs on 8 simulated CPU devices (or set XLA_FLAGS=--xla_force_host_platform_device_count=8);
the third is the smoke preset made wider and longer (~2 h on a CPU). Workdirs may be relative
(to the current directory), absolute or gs:// URLs.

Presets and cost (CPU figures measured on the 2-core x86 CI machine, the GPU figure on one H200):
  smoke  d_model 64, 2 layers, seq 128, batch 16: 130k parameters, 0.33M tokens (160 steps);
         20 s wall, 24 CPU-s (2026-12-04, machine shared with other jobs), most of it start-up
         and compilation; final eval loss 2.460 ± 0.035 nats/byte
  cpu    d_model 128, 4 layers, seq 256, batch 32: 857k parameters, 2.5M tokens (305 steps),
         4.7e10 FLOP per step ("exact"); ~6 min at the ~8k tokens/s of 2 idle cores (17 min
         measured on 2 cores shared with other jobs); final eval loss ~2.40 nats/byte
  gpu    d_model 1024, 24 layers, 16 heads, seq 2048, bfloat16, batch 32 (65,536 tokens/step),
         remat dots_saveable, cuDNN attention: 302M parameters with the 256-byte vocabulary, 2e8
         tokens (3051 steps), 1.4e14 FLOP per step ("exact"). Measured 2026-12-04 on one H200
         (jax 0.11.2): 158,800 tokens/s, MFU 0.339 ("exact" FLOPs over 989 dense bf16 TFLOP/s),
         so ~21 min; without remat the step needs a 106 GiB buffer and runs out of memory
         (`bash benchmarks/gpu_check.sh` reruns the measurement).

Rerunning a command on the same workdir resumes from the last checkpoint, or does nothing if
the run has completed. Outputs: config.json, metrics.jsonl, result.json, checkpoints/ (see
``experiments.harness.train``). ``--set`` takes any field of ``Config`` (``model.*``, ``data.*``,
``train.*``, ``mesh``); e.g. ``--set train.lr=deepseek --set train.batch_size=deepseek``.

Multi-process (one process per host, or several on one CPU host; start both, ids 0 and 1):
    python -m experiments.train_lm --workdir runs/lm2 --preset smoke --host_devices 2 --coordinator_address localhost:12355 --num_processes 2 --process_id 0
    python -m experiments.train_lm --workdir runs/lm2 --preset smoke --host_devices 2 --coordinator_address localhost:12355 --num_processes 2 --process_id 1

A run that fails or diverges exits with status 1 and one line naming the reason (result.json
records it); a bad flag, --set or workdir exits with status 2.
"""

from __future__ import annotations

import logging
import sys

from experiments.harness import cli
from experiments.harness.config import Config, TrainConfig
from experiments.harness.data import DataConfig
from experiments.harness.train import check, train
from models.transformer import ModelConfig


def smoke() -> Config:
    """A tiny model that trains in well under a minute on a CPU."""
    return Config(
        model=ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=128),
        data=DataConfig(seq_len=128, eval_sequences=64, prefetch_batches=2),
        train=TrainConfig(tokens=160 * 16 * 128, batch_size=16, lr=3e-3, warmup=0.1,
                          log_every=10, checkpoint_every=50, eval_batch_size=16),
    )


def cpu() -> Config:
    """A small model worth looking at on a CPU (a few minutes)."""
    return Config(
        model=ModelConfig(vocab_size=256, d_model=128, n_layers=4, n_heads=4, max_seq_len=256),
        data=DataConfig(seq_len=256, eval_sequences=256),
        train=TrainConfig(tokens=2_500_000, batch_size=32, lr=3e-3, warmup=0.05,
                          log_every=10, checkpoint_every=100, eval_every=100,
                          eval_batch_size=32),
    )


def gpu() -> Config:
    """The ~300M-parameter model (d_model 1024, 24 layers) in bfloat16 at sequence length 2048."""
    return Config(
        model=ModelConfig(vocab_size=256, d_model=1024, n_layers=24, n_heads=16,
                          max_seq_len=2048, dtype="bfloat16", remat="dots_saveable"),
        data=DataConfig(seq_len=2048, eval_sequences=256, read_threads=8, prefetch_batches=4),
        train=TrainConfig(tokens=200_000_000, batch_size=32, lr=1e-3, warmup=0.05,
                          z_loss=1e-4, log_every=20, checkpoint_every=500, eval_every=1000,
                          eval_batch_size=32),
    )


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu}


def main(argv: list[str] | None = None) -> dict:
    cfg, args = cli.parse(argv, description=__doc__, presets=PRESETS, default_preset="smoke")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr, force=True)
    for noisy in ("absl", "orbax", "jax._src", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.aot:  # compile for a TPU topology instead of training
        from experiments.harness import aot

        records = aot.aot_check([(args.workdir.name, cfg)], args.aot, args.aot_slices)
        path = aot.write_aot_json(args.workdir, records)
        print(aot.format_table(records))
        problems = aot.failures(records)
        if problems:
            raise cli.CommandFailed(f"{problems[0]}; see {path}")
        return {"aot": records}
    check(cfg)  # bad input (e.g. a data.unique_tokens the corpus cannot hold): ValueError, exit 2
    try:
        result = train(cfg, args.workdir)
    except Exception as err:  # noqa: BLE001  (train logged the traceback and wrote result.json)
        logging.getLogger(__name__).exception("training failed")
        raise cli.CommandFailed(f"run failed: {type(err).__name__}: {err} "
                                f"(see {args.workdir}/result.json)") from err
    if result["status"] != "completed":
        raise cli.CommandFailed(f"run {result['status']} at step {result.get('step')}: "
                                f"{result.get('reason') or 'no reason recorded'} "
                                f"(see {args.workdir}/result.json)")
    loss, sem = result.get("eval_loss"), result.get("eval_loss_sem")
    print(f"completed: step {result.get('step')}, eval_loss {loss:.4f} ± {sem:.4f} nats/token "
          f"({args.workdir}/result.json)")
    return result


if __name__ == "__main__":
    cli.run(main)
