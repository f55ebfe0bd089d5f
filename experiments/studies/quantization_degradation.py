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
         2-core machine, load ~12); the report's law selection adds ~5 CPU-s (2026-12-07:
         analysis 23 CPU-s against 18 without it)
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

The run recipe (shape rule, batch and learning-rate rules, steps, base config, --set) is
`experiments.runner.recipe.Recipe`: runs shorter than ``min_steps`` are lengthened to it
(``short_runs="extend"``), not dropped. Also runnable as
``python -m experiments.studies.quantization_degradation``.
"""

from __future__ import annotations

import dataclasses

from experiments.harness import cli
from experiments.harness.config import Config
from experiments.reports import quantization as report
from experiments.runner.measure import Measure
from experiments.runner.recipe import Recipe, base_config, command, derive
from experiments.runner.runs import Run

SMOKE = {"fixture": "ptq_smoke", "workdir": "runs/ptq_ci", "notebook": "PTQ_WORKDIR",
         "command": "python -m experiments.quantization_degradation --workdir runs/ptq_ci --preset smoke"}
CPU_FORMATS = ("int8", "fp8", "int6", "int5", "int4", "nf4", "int3", "int2", "int4:gptq", "int4/int8",
               "int4/int4")


@dataclasses.dataclass(frozen=True)
class Study(Recipe):
    """A PTQ study: sizes x training lengths, a WSD control run, formats to measure.

    sizes: target total parameter counts (the recipe's shape rule).
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
    rows_per_step, lr, lr_scale, min_steps, base, mesh: the recipe's rules (`experiments.runner.recipe`).
    """

    name: str = "quantization_degradation"
    short_runs: str = "extend"
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
    bootstrap: int = 200
    base: Config = base_config(data={"eval_sequences": 1024}, train={"checkpoint_every": 0})

    def __post_init__(self):
        super().__post_init__()
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

    def runs(self):
        """Sizes small to large, lengths short to long, then the QAT runs, then the WSD control;
        each once per seed (``seeds``: ``--set seeds=1`` trains the same study under seed 1)."""
        for n in sorted(self.sizes):
            for tpp in sorted(self.tokens_per_param):
                for seed in self.seeds:
                    yield self.run(n, tokens_per_param=tpp, seed=seed,
                                   labels={"role": "grid", "tokens_per_param": tpp})
        qat_runs = [(n, spec) for n in sorted(self.sizes) for spec in self.qat]
        extra_sizes = sorted(self.sizes)[:2] if self.qat_extra_sizes is None else sorted(self.qat_extra_sizes)
        qat_runs += [(n, spec) for n in extra_sizes for spec in self.qat_extra]
        for n, spec in qat_runs:
            for seed in self.seeds:
                run = self.run(n, tokens_per_param=self.qat_tokens_per_param, seed=seed,
                               labels={"role": "qat", "tokens_per_param": self.qat_tokens_per_param, "qat": spec})
                yield dataclasses.replace(run, config=dataclasses.replace(run.config, quant=report.parse_format(spec)))
        if self.wsd_checkpoints:
            for seed in self.seeds:
                run = self.run(self.wsd_size, tokens_per_param=self.wsd_tokens_per_param, seed=seed,
                               labels={"role": "wsd_control", "tokens_per_param": self.wsd_tokens_per_param})
                steps = run.config.train.tokens // (run.config.train.batch_size * run.config.data.seq_len)
                stable = int(steps * (1 - self.wsd_decay))  # keep every stable-phase checkpoint and the last
                train = dataclasses.replace(
                    run.config.train, schedule="wsd", decay_fraction=self.wsd_decay,
                    checkpoint_every=max(1, stable // max(1, self.wsd_checkpoints)),
                    max_checkpoints=self.wsd_checkpoints + 3)
                yield dataclasses.replace(run, config=dataclasses.replace(run.config, train=train))

    def measures(self):
        return [ptq_stage(self)]

    def analysis(self):
        return report.analyze_stage


def sweep(study: Study):
    """The study's runs (`Study.runs`)."""
    return study.runs()


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
    return derive(
        Study(), name="quantization_degradation_smoke", sizes=(4e3, 1e4), tokens_per_param=(8.0, 16.0, 32.0),
        formats=("int8", "int4", "int2", "int4/int8"), qat=(), qat_extra=(), wsd_size=4e3, wsd_tokens_per_param=32.0,
        wsd_checkpoints=2, eval_tokens=2**13, bootstrap=50)


def cpu() -> Study:
    return Study()


def gpu() -> Study:
    """One accelerator: 2M-20M parameter models at seq 512 in bfloat16 (estimate, not measured)."""
    return derive(
        Study(), name="quantization_degradation_gpu", sizes=(2e6, 6e6, 2e7),
        tokens_per_param=(10.0, 40.0, 160.0, 640.0), wsd_size=6e6, wsd_tokens_per_param=160.0,
        wsd_checkpoints=6, eval_tokens=2**20, rows_per_step=64, bootstrap=400,
        base={"model": {"dtype": "bfloat16", "max_seq_len": 512}, "data": {"seq_len": 512, "eval_sequences": 2048},
              "train": {"eval_batch_size": 64}})


def pod() -> Study:
    """A pod slice (v5p-256, mesh data=4,fsdp=32): 100M-1B parameters at seq 2048 in bfloat16 on a
    large corpus (``--set base.data.dataset=...``; the embedded corpus is far too small).
    Estimate, not measured: 23 runs, 1.9e21 FLOPs ("6N") in all, ~22 h at 40% MFU."""
    return derive(
        gpu(), name="quantization_degradation_pod", sizes=(1e8, 3e8, 1e9), tokens_per_param=(10.0, 40.0, 160.0),
        wsd_size=3e8, wsd_tokens_per_param=160.0, wsd_checkpoints=6, qat_tokens_per_param=20.0,
        eval_tokens=2**22, rows_per_step=512, batch_multiple=128, mesh="data=4,fsdp=32", bootstrap=400,
        base={"model": {"max_seq_len": 2048}, "data": {"seq_len": 2048, "eval_sequences": 2048},
              "train": {"log_every": 50, "eval_batch_size": 256}})


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu, "pod": pod}
main = command(PRESETS, __doc__)


if __name__ == "__main__":
    cli.run(main)
