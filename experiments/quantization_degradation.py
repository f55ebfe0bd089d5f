"""Post-training quantization (PTQ) degradation laws fitted from the project's own runs: byte-level
transformers on the embedded Python-stdlib corpus, trained to several token counts per size, then
quantized in many formats and evaluated on one fixed held-out token set.

    python -m experiments.quantization_degradation --workdir runs/ptq --preset cpu      # the study
    python -m experiments.quantization_degradation --workdir runs/ptq_ci --preset smoke # CI (tests)
    python -m experiments.quantization_degradation --workdir runs/ptq --preset cpu --set formats=int8,int4,int2
    python -m experiments.quantization_degradation --workdir runs/ptq_aot --preset pod --aot v5p-256  # fits?

Presets and cost (2-core CPU machine; FLOPs "6N", C = 6 N D with N counting every parameter):
  smoke  2 sizes (5k, 11k params) x 3 lengths (8-32 tokens/param) + a WSD control run;
         4 formats; measured 2026-12-04: 1.9 CPU-min (4.6 min wall on the shared
         2-core machine, load ~12)
  cpu    3 sizes (10k-60k params) x 3 lengths (8-128 tokens/param) + a WSD control run with 4
         stable-phase checkpoints; 11 formats (int8, fp8, int6, int5, int4, nf4, int3, int2
         weight-only round-to-nearest, int4 GPTQ, W4A8, W4A4); 9 QAT runs (3 sizes x int3, int4,
         int6 weights at 32 tokens/param) + 4 activation/KV QAT runs (W8A4 and KV3 at the two
         smallest sizes); measured 2026-12-04 (23 runs, 168 PTQ rows, 5 laws): 10.7 CPU-min,
         12.0 min wall on the 2-core machine shared with other jobs (load 4.6-6.5)
  gpu    3 sizes (2M-20M params) x 4 lengths at seq 512, bf16 (estimate, not measured)
  pod    3 sizes (100M, 300M, 1B params) x 10/40/160 tokens/param at seq 2048, bf16, batch 512
         x 2048 tokens, mesh data=4,fsdp=32 on v5p-256, no remat; 9 weight + 4 A/KV
         QAT runs at 20 tokens/param; a WSD control (300M, 160 tokens/param, 6 checkpoints);
         23 runs, 1.9e21 FLOPs, ~22 h on 128 v5p chips at 40% MFU (estimate, not measured;
         needs a large corpus: --set base.data.dataset=...). Sized with --aot v5p-256
         (2026-12-04, splash attention): the float steps peak at 7.1, 14.3 and 30.9 GiB per chip
         (100M, 300M, 1B) of 95 GiB; the 1B W3, KV3 and W8A4 QAT steps at 30.9 GiB; 0.03-0.30 s
         per step at 40% MFU. The whole preset's --aot (17 distinct steps) costs ~15-20 CPU-min.

The study (Ouyang et al. 2024, "Low-Bit Quantization Favors Undertrained LLMs", arXiv:2411.17691;
Kumar et al. 2024, "Scaling Laws for Precision", arXiv:2411.04330):
- train: every (size, tokens per parameter) is its own run with a cosine schedule decayed to 1%
  (so no run is an intermediate checkpoint of another: Catalan-Tatjer, Ajroldi & Geiping 2025 find
  that PTQ degradation stays flat while the learning rate is constant and rises as it decays, so
  checkpoints of one run would mix training length with decay). One WSD control run keeps its
  stable-phase checkpoints and its post-cooldown one.
- measure (`ptq.csv`, resumable): the float model and each format on the same held-out tokens;
  delta = loss_quantized - loss with a paired per-sequence standard error
  (`experiments.measures.ptq`).
- QAT: the same sizes trained with fake-quantized weights (``quant`` in the run config), which
  with the float runs fit Kumar et al.'s ``precision_weights`` (N_eff = N (1 - e^{-P_w/gamma_w}))
  and give the compute-optimal training precision under their C = (6/16) N D P; plus W8A4
  (activations) and KV3 (keys/values, ``models.quantization.fake_quantize``) runs at the two
  smallest sizes, each reported against its float twin and, with the rest, fitting Kumar et
  al.'s ``precision`` law (P_w, P_a, P_kv; ``experiments.reports.quantization_qat``).
- analyze: `ptq_degradation` (Ouyang Eq. 8, delta = k D^beta / (N^alpha P^gamma)) and
  `ptq_precision` (Kumar Eq. 2, delta = C_T D^gamma_D / N^gamma_N e^{-P/gamma_post}) fitted to the
  weight-only round-to-nearest integer formats, weighted by 1/delta_sem^2; `chinchilla` on the
  float runs; from them the token count beyond which more pretraining makes the post-PTQ loss
  worse, per size and precision; a held-out check (refit without each size's most-trained run
  and predict its delta at every precision); the WSD control's delta against tokens. Writes
  fits/*.json, plots/*.png, report.md (`experiments.reports.quantization`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from experiments.harness import cli
from experiments.harness.config import Config, TrainConfig, deepseek_lr
from experiments.harness.data import DataConfig
from experiments.reports import quantization as report
from experiments.runner.measure import Measure
from experiments.runner.runs import Run
from experiments.runner.study import main as study_main
from models.shapes import config_for_params
from models.transformer import ModelConfig, param_counts, shape_dict
from scaling import flops as sflops

CPU_FORMATS = ("int8", "fp8", "int6", "int5", "int4", "nf4", "int3", "int2", "int4:gptq", "int4/int8",
               "int4/int4")


@dataclasses.dataclass(frozen=True)
class Study:
    """A PTQ study: sizes x training lengths, a WSD control run, formats to measure.

    sizes: target total parameter counts (the shape rule `models.shapes.config_for_params`).
    tokens_per_param: training tokens D = tokens_per_param x N (each length its own run).
    formats: "int4" (weights, round to nearest), "int4:gptq" (GPTQ), "int4/int8" (weights int4,
      activations int8); any `models.quantization.FORMATS` name.
    wsd_size / wsd_tokens_per_param / wsd_checkpoints: the control run (constant rate, then a
      linear decay over the last ``wsd_decay`` of steps), quantized at ``wsd_checkpoints`` evenly
      spaced stable-phase checkpoints and after the decay.
    qat: quantization-aware training runs (part of the run config, hence of the run id): every
      size at ``qat_tokens_per_param`` trained with each of these weight formats (fake-quantized
      forward, straight-through gradients); with the float runs they feed Kumar et al.'s
      ``precision_weights`` law and the compute-optimal training precision.
    qat_extra / qat_extra_sizes: activation and KV-cache QAT runs ("int8/int4": W8A4, activations
      of the block matmuls per token with int8 weights, since qwix quantizes activations only
      together with weights; "kv:int3": keys and values per token and head)
      at these sizes (None: the two smallest ``sizes``) and ``qat_tokens_per_param``; with the rest they feed Kumar et al.'s
      ``precision`` law (P_w, P_a, P_kv) and each is compared with its float twin.
    eval_tokens: held-out tokens of every evaluation (the same set for every format and run).
    rows_per_step, lr_scale: batch (sequences per step) and learning rate (lr_scale x DeepSeek's
      rule, Bi et al. 2024 Eq. 1).
    """

    name: str = "quantization_degradation"
    sizes: tuple[float, ...] = (1e4, 2.5e4, 6e4)
    tokens_per_param: tuple[float, ...] = (8.0, 32.0, 128.0)
    formats: tuple[str, ...] = CPU_FORMATS
    wsd_size: float = 2.5e4
    wsd_tokens_per_param: float = 128.0
    wsd_checkpoints: int = 4
    wsd_decay: float = 0.2
    qat: tuple[str, ...] = ("int3", "int4", "int6")
    qat_tokens_per_param: float = 32.0
    qat_extra: tuple[str, ...] = ("int8/int4", "kv:int3")
    qat_extra_sizes: tuple[float, ...] | None = None
    eval_tokens: int = 2**16
    rows_per_step: int = 16
    batch_multiple: int = 1
    lr_scale: float = 0.5
    bootstrap: int = 200
    base: Config = Config(
        model=ModelConfig(vocab_size=256, max_seq_len=64),
        data=DataConfig(seq_len=64, eval_sequences=1024),
        train=TrainConfig(warmup=0.05, schedule="cosine", min_lr_ratio=0.01, weight_decay=0.1,
                          divergence_ratio=10.0, log_every=50, checkpoint_every=0,
                          eval_batch_size=64),
    )
    mesh: str = ""
    analyze: bool = True

    def __post_init__(self):
        if not self.sizes or any(not (s > 0) for s in self.sizes):
            raise ValueError(f"Study.sizes must be positive parameter counts, got {self.sizes}")
        if not self.tokens_per_param or any(not (t > 0) for t in self.tokens_per_param):
            raise ValueError(f"Study.tokens_per_param must be positive, got {self.tokens_per_param}")
        if not self.formats:
            raise ValueError("Study.formats: give at least one format")
        for spec in (*self.formats, *self.qat, *self.qat_extra):
            report.parse_format(spec)  # a clear ValueError naming a bad format
        if self.wsd_checkpoints < 0 or not 0 < self.wsd_decay < 1:
            raise ValueError("Study: need wsd_checkpoints >= 0 and 0 < wsd_decay < 1")
        if self.eval_tokens < self.base.data.seq_len:
            raise ValueError(f"Study.eval_tokens={self.eval_tokens} is less than one sequence")


def model_for(study: Study, n_target: float) -> ModelConfig:
    base = study.base.model
    return config_for_params(n_target, vocab_size=base.vocab_size, count="total", min_heads=2,
                             max_seq_len=study.base.data.seq_len, dtype=base.dtype)


def run_config(study: Study, n_target: float, tokens_per_param: float, *, wsd: bool = False) -> Config:
    """One run: the shape for ``n_target``, D = tokens_per_param x N, the batch and LR rules."""
    model = model_for(study, n_target)
    counts = param_counts(model)
    seq_len = study.base.data.seq_len
    rows = -(-study.rows_per_step // study.batch_multiple) * study.batch_multiple
    steps = max(20, round(tokens_per_param * counts["total"] / (rows * seq_len)))
    tokens = steps * rows * seq_len
    train = dataclasses.replace(study.base.train, tokens=tokens, batch_size=rows,
                                lr=study.lr_scale * deepseek_lr(counts["nonembedding"], tokens))
    if wsd:  # keep every stable-phase checkpoint and the final one
        stable = int(steps * (1 - study.wsd_decay))
        every = max(1, stable // max(1, study.wsd_checkpoints))
        train = dataclasses.replace(train, schedule="wsd", decay_fraction=study.wsd_decay,
                                    checkpoint_every=every, max_checkpoints=study.wsd_checkpoints + 3)
    return dataclasses.replace(study.base, model=model, train=train, mesh=study.mesh)


def sweep(study: Study) -> Iterator[Run]:
    """Sizes small to large, lengths short to long, then the WSD control run."""
    for n in sorted(study.sizes):
        for tpp in sorted(study.tokens_per_param):
            cfg = run_config(study, n, tpp)
            budget = sflops.flops_per_token(shape_dict(cfg.model), cfg.data.seq_len, "6N") * cfg.train.tokens
            yield Run(budget=budget, config=cfg, labels={"role": "grid", "tokens_per_param": tpp})
    qat_runs = [(n, spec) for n in sorted(study.sizes) for spec in study.qat]
    extra_sizes = sorted(study.sizes)[:2] if study.qat_extra_sizes is None else sorted(study.qat_extra_sizes)
    qat_runs += [(n, spec) for n in extra_sizes for spec in study.qat_extra]
    for n, spec in qat_runs:
        cfg = dataclasses.replace(run_config(study, n, study.qat_tokens_per_param),
                                  quant=report.parse_format(spec))
        budget = sflops.flops_per_token(shape_dict(cfg.model), cfg.data.seq_len, "6N") * cfg.train.tokens
        yield Run(budget=budget, config=cfg, labels={"role": "qat", "tokens_per_param": study.qat_tokens_per_param,
                                                     "qat": spec})
    if study.wsd_checkpoints:
        cfg = run_config(study, study.wsd_size, study.wsd_tokens_per_param, wsd=True)
        budget = sflops.flops_per_token(shape_dict(cfg.model), cfg.data.seq_len, "6N") * cfg.train.tokens
        yield Run(budget=budget, config=cfg, labels={"role": "wsd_control",
                                                     "tokens_per_param": study.wsd_tokens_per_param})


def ptq_stage(study: Study) -> Measure:
    """ptq.csv: every format at the final checkpoint of each run (every kept checkpoint of the
    WSD control run), one item per (checkpoint_step, format)."""
    from experiments.harness import restore

    def steps_of(run) -> list[int]:
        steps = restore.checkpoint_steps(run.run_dir)
        if run.run.labels.get("role") == "wsd_control":
            return steps
        return steps[-1:]

    def items(run):
        if run.run.labels.get("role") == "qat":
            return []  # a QAT run's loss is its result; PTQ is measured on float-trained runs
        return [{"checkpoint_step": step, "format": spec} for step in steps_of(run)
                for spec in ("float", *study.formats)]

    def measure(run, pending):
        from experiments.measures.ptq import ptq_measure

        by_step: dict[int, list[str]] = {}
        for item in pending:
            by_step.setdefault(int(item["checkpoint_step"]), []).append(item["format"])
        for step, specs in sorted(by_step.items()):
            formats = [report.parse_format(s) for s in specs if s != "float"]
            rows = ptq_measure(run.run_dir, formats, eval_tokens=study.eval_tokens, checkpoint_step=step,
                               batch_size=study.base.train.eval_batch_size)
            labelled = {"float": rows[0], **{spec: row for spec, row in zip(
                [s for s in specs if s != "float"], rows[1:])}}
            for spec in specs:
                yield {"checkpoint_step": step, "format": spec, **{
                    k: v for k, v in labelled[spec].items() if k != "checkpoint_step"},
                       "role": run.run.labels.get("role", "grid"),
                       "tokens_per_param": run.run.labels.get("tokens_per_param")}

    return Measure(name="ptq", key=("checkpoint_step", "format"), items=items, measure=measure)


# ----------------------------------------------------------------------------- presets


def smoke() -> Study:
    """CI: 2 sizes x 3 lengths + a WSD control with 2 stable checkpoints, 4 formats."""
    return dataclasses.replace(
        Study(), name="quantization_degradation_smoke", sizes=(4e3, 1e4), tokens_per_param=(8.0, 16.0, 32.0),
        formats=("int8", "int4", "int2", "int4/int8"), qat=(), qat_extra=(), wsd_size=4e3, wsd_tokens_per_param=32.0,
        wsd_checkpoints=2, eval_tokens=2**13, bootstrap=50)


def cpu() -> Study:
    return Study()


def gpu() -> Study:
    """One accelerator: 2M-20M parameter models at seq 512 in bfloat16 (estimate, not measured)."""
    base = Study().base
    return dataclasses.replace(
        Study(), name="quantization_degradation_gpu", sizes=(2e6, 6e6, 2e7),
        tokens_per_param=(10.0, 40.0, 160.0, 640.0), wsd_size=6e6, wsd_tokens_per_param=160.0,
        wsd_checkpoints=6, eval_tokens=2**20, rows_per_step=64, bootstrap=400,
        base=dataclasses.replace(
            base, model=dataclasses.replace(base.model, dtype="bfloat16", max_seq_len=512),
            data=dataclasses.replace(base.data, seq_len=512, eval_sequences=2048),
            train=dataclasses.replace(base.train, eval_batch_size=64)))


def pod() -> Study:
    """A pod slice (v5p-256, mesh data=4,fsdp=32): 100M-1B parameters at seq 2048 in bfloat16 on a
    large corpus (``--set base.data.dataset=...``; the embedded corpus is far too small).
    Estimate, not measured: 23 runs, 1.9e21 FLOPs ("6N") in all, ~22 h at 40% MFU."""
    g = gpu()
    return dataclasses.replace(
        g, name="quantization_degradation_pod", sizes=(1e8, 3e8, 1e9), tokens_per_param=(10.0, 40.0, 160.0),
        wsd_size=3e8, wsd_tokens_per_param=160.0, wsd_checkpoints=6, qat_tokens_per_param=20.0,
        eval_tokens=2**22, rows_per_step=512, batch_multiple=128, mesh="data=4,fsdp=32", bootstrap=400,
        base=dataclasses.replace(
            g.base,
            model=dataclasses.replace(g.base.model, max_seq_len=2048),
            data=dataclasses.replace(g.base.data, seq_len=2048, eval_sequences=2048),
            train=dataclasses.replace(g.base.train, log_every=50, eval_batch_size=256)))


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu, "pod": pod}


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, train, quantize and measure, fit and report (`run_study`)."""
    return study_main(argv, description=__doc__, presets=PRESETS, default_preset="cpu", stages=lambda study: {
        "runs": sweep(study), "flop_convention": "6N", "measures": [ptq_stage(study)],
        "analyze": report.analyze_stage if study.analyze else None})


if __name__ == "__main__":
    cli.run(main)
