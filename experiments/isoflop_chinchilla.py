"""IsoFLOP study (Hoffmann et al. 2022, "Chinchilla", Sec. 3): byte-level transformers on the
embedded Python-stdlib corpus, from one command to fitted laws, plots and a report.

    python -m experiments.isoflop_chinchilla --workdir runs/demo --preset cpu      # the main job
    python -m experiments.isoflop_chinchilla --workdir runs/ci --preset smoke      # CI (tests)
    python -m experiments.isoflop_chinchilla --workdir runs/aot --preset pod --aot v5p-256   # check it fits first
    python -m experiments.isoflop_chinchilla --workdir gs://bucket/iso --preset pod --set base.data.dataset=...
    python -m experiments.isoflop_chinchilla --workdir runs/wide --preset cpu --set budgets=1e11,3e11,1e12 --set sizes_per_budget=7 --set spread=12
    python -m experiments.isoflop_chinchilla --workdir runs/rung2 --preset cpu --set prior=runs/demo/fits/approach3_parametric.json --set center_scale=1

The last one is a ladder rung: its sizes are centred on the N_opt(C) that the first study fitted.
Exit status: 0 when runs completed and laws were fitted (the last line says how many runs failed
and the first reason, if any); 1 when every run failed or nothing could be fitted (one line on
stderr naming the first cause); 2 for a bad flag, --set or workdir.

Presets and expected cost (FLOPs under the "6N" convention, C = 6 N D with N counting every
parameter, as Hoffmann et al.; CPU figures measured on the 2-core CI machine while other jobs
shared it, so an idle machine is faster; GPU and pod figures are estimates, not measured):
  smoke  3 budgets 5e9-2e10 x 3 sizes (9 runs, 2k-24k params, 70-750 steps)   ~1.5 min on a CPU
  cpu    5 budgets 6.25e10-1e12 x 5 sizes (25 runs, 5k-160k params, seq 64,  ~8 min on 2 idle
         7e7 tokens in all; minima inside every budget)                      cores (11 CPU-min)
  gpu    5 budgets 3e15-3e17 x 7 sizes (35 runs, 1.4M-180M params, seq 1024,  ~3-5 h on one H100
         bf16, 3.1e18 FLOPs in all)                                          (estimate)
  pod    6 budgets 1e18-3e20 x 9 sizes (54 runs, 20M-4B params, seq 2048,     ~1 day on 256 v5p
         bf16, 4e21 FLOPs; needs a large corpus: --set base.data.dataset=...)  chips (estimate)
         Sized with --aot v5p-256 (2026-12-04): mesh data=4,fsdp=32, remat dots_saveable, splash
         attention; the largest shapes peak at 20.3 GiB (2.6B params, batch 512) and 41.8 GiB
         (4.25B, batch 768) of 95 GiB per chip, 0.74 s / 1.83 s per step at 40% MFU (estimates).
         fsdp=128 leaves widths that 128 does not divide unsplit, and the sharding check refuses them.

The cpu preset's sizes are centred on 0.35 x Hoffmann et al.'s N_opt(C) and its learning rate is
0.5 x DeepSeek's rule: byte-level models this small are compute-optimal far from Chinchilla's
20 tokens per parameter (the grid found 55-63 tokens per parameter), and the halved rate, decayed
to 1% instead of 10%, lowered their final losses (1.89 against 1.97 at 2.5e11 FLOPs and 1.5e4
parameters). A grid centred at 0.25 x put the minima at the 4th of 5 sizes at most budgets.

Workdir: runs/<run_id>/ per grid point (as experiments.train_lm writes one), results.csv,
curves.csv, study.json, fits/*.json (load with scaling.load), plots/*.png, analysis.json,
report.md. Rerunning skips finished runs and resumes unfinished ones; a killed grid loses at most
the steps since a run's last checkpoint.

A new study changes a few lines: experiments/isoflop_nonembed.py subclasses `Study` with another
FLOP convention and budgets and reuses everything else; a study with other rules (shape, batch,
learning rate, data) copies this file and edits them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator

from experiments.harness import cli
from experiments.harness.config import Config, TrainConfig, deepseek_lr
from experiments.harness.data import DataConfig
from experiments.reports import isoflop as isoflop_report
from experiments.runner.design import log_spaced, prior_optimal_params, steps_for_budget
from experiments.runner.runs import Run
from experiments.runner.study import Rung, main as study_main
from models.shapes import config_for_params
from models.transformer import ModelConfig, param_counts, shape_dict
from scaling import flops as sflops


# ----------------------------------------------------------------------------- the declaration


@dataclasses.dataclass(frozen=True)
class Study:
    """An isoFLOP grid: which budgets, which model sizes at each, and how each run trains.

    budgets: isoFLOP budgets C in FLOPs under ``flop_convention``; the largest is held out by the
      extrapolation check of the report.
    sizes_per_budget, spread: that many model sizes per budget, log-spaced with largest/smallest
      = ``spread``, centred (geometric mean) on ``center_scale`` x the prior law's N_opt(C).
    sizes: explicit target sizes (the same at every budget); when given, replaces the prior.
    prior: the law whose N_opt(C) centres the sizes: a `scaling.published` name (C = 6 N D, N with
      embeddings) or a fitted-law file an earlier study wrote (the ladder: ``--set
      prior=runs/demo/fits/approach2_n_opt.json``), converted to ``flop_convention`` by
      `experiments.runner.design.prior_optimal_params`.
    flop_convention: how a budget turns into tokens (`scaling.flops.CONVENTIONS`); ``6N`` and
      ``exact`` count all parameters N, ``6N_nonembed`` counts non-embedding parameters.
    seeds: one run per size and seed; seed s initializes with ``train.seed = s`` and reads the
      documents (and shuffles the packed rows) in the order of
      ``data.shuffle_seed = base.data.shuffle_seed + s``.
    rows_per_step / lr / lr_scale: the batch and learning-rate rules (`batch_rows`,
      `learning_rate`): an integer number of sequences per step, or "deepseek".
    batch_multiple: sequences per step are rounded up to a multiple of this (`main` raises it to
      the mesh's data x fsdp size, which the global batch must divide).
    min_steps: sizes whose run would take fewer optimizer steps are dropped from that budget.
    base: every run's settings not set by the rules above (model numerics, data, optimizer).
    mesh: device mesh of every run ("" = all devices on the data axis); not part of run ids.
    bootstrap: bootstrap draws of Approaches 2 and 3 (intervals); bootstrap_curves: of Approach 1
      (slower: it recomputes the envelope of every training curve per draw).
    start_grid: starts of Approach 3's fit: "coarse" (243 starts, every other value of the
      law's grid) or "full" (the law's 4,500-start grid, Epoch AI's protocol; minutes on a CPU).
    analyze: fit, plot and report after the grid.
    rung_budgets: the ladder's next rung: after the analysis, train at each of these budgets the
      model that the fitted N_opt(C) (Approach 2) calls compute-optimal, and report its measured
      loss against every fitted law's prediction (report.md, rung.json; runs in ``rung/``).
    """

    name: str = "isoflop_chinchilla"
    budgets: tuple[float, ...] = (6.25e10, 1.25e11, 2.5e11, 5e11, 1e12)
    sizes_per_budget: int = 5
    spread: float = 8.0
    center_scale: float = 0.35
    sizes: tuple[float, ...] = ()
    prior: str = "hoffmann2022"
    flop_convention: str = "6N"
    seeds: tuple[int, ...] = (0,)
    tie_embeddings: bool = False
    min_heads: int = 2
    rows_per_step: int | str = 16
    batch_multiple: int = 1
    lr: float | str = "deepseek"
    lr_scale: float = 0.5
    min_steps: int = 20
    base: Config = Config(
        model=ModelConfig(vocab_size=256, max_seq_len=64),
        data=DataConfig(seq_len=64, eval_sequences=512),
        train=TrainConfig(warmup=0.05, schedule="cosine", min_lr_ratio=0.01, weight_decay=0.1,
                          divergence_ratio=10.0, log_every=50, checkpoint_every=500,
                          eval_batch_size=64),
    )
    mesh: str = ""
    bootstrap: int = 400
    bootstrap_curves: int = 100
    start_grid: str = "coarse"
    analyze: bool = True
    rung_budgets: tuple[float, ...] = ()

    def __post_init__(self):
        if not self.budgets or any(not (b > 0 and math.isfinite(b)) for b in self.budgets):
            raise ValueError(f"Study.budgets must be positive FLOP counts, got {self.budgets}")
        if self.flop_convention not in sflops.CONVENTIONS:
            raise ValueError(f"Study.flop_convention={self.flop_convention!r}; choose one of "
                             f"{sflops.CONVENTIONS}")
        if self.sizes_per_budget < 1 or self.spread < 1 or self.center_scale <= 0:
            raise ValueError("Study: need sizes_per_budget >= 1, spread >= 1, center_scale > 0")
        if not self.seeds:
            raise ValueError("Study.seeds: give at least one seed")
        if self.start_grid not in ("coarse", "full"):
            raise ValueError(f"Study.start_grid={self.start_grid!r}: 'coarse' or 'full'")
        if any(not (b > 0 and math.isfinite(b)) for b in self.rung_budgets):
            raise ValueError(f"Study.rung_budgets must be positive FLOP counts, got {self.rung_budgets}")
        if self.batch_multiple < 1:
            raise ValueError(f"Study.batch_multiple must be >= 1, got {self.batch_multiple}")


def count_kind(study: Study) -> str:
    """Which parameter count the study's N is: non-embedding under "6N_nonembed", else total."""
    return "nonembedding" if study.flop_convention == "6N_nonembed" else "total"


def model_for(study: Study, n_target: float) -> ModelConfig:
    """The shape rule (`models.shapes.config_for_params`) with the study's model numerics."""
    base = study.base.model
    return config_for_params(
        n_target, vocab_size=base.vocab_size, count=count_kind(study),
        tie_embeddings=study.tie_embeddings, min_heads=study.min_heads,
        max_seq_len=study.base.data.seq_len, dtype=base.dtype, remat=base.remat,
        scan_layers=base.scan_layers, attention_impl=base.attention_impl)


def flops_per_token(study: Study, model: ModelConfig) -> float:
    return sflops.flops_per_token(shape_dict(model), study.base.data.seq_len, study.flop_convention)


def batch_rows(study: Study, n_params_nonembedding: int, tokens: float) -> int:
    """Sequences per step: ``rows_per_step``, or DeepSeek's B_opt = 0.292 C^0.327 tokens
    (Bi et al. 2024, arXiv:2401.02954, Eq. 1; `experiments.harness.config.deepseek_batch_tokens`),
    rounded to whole sequences (at least 1)."""
    if isinstance(study.rows_per_step, int):
        rows = study.rows_per_step
    else:
        from experiments.harness.config import BATCH_RULES

        tokens_per_step = BATCH_RULES[study.rows_per_step](n_params_nonembedding, tokens)
        rows = max(1, round(tokens_per_step / study.base.data.seq_len))
    return -(-rows // study.batch_multiple) * study.batch_multiple


def learning_rate(study: Study, n_params_nonembedding: int, tokens: float) -> float:
    """Peak learning rate: ``lr_scale`` x (``lr``, or DeepSeek's 0.3118 C^-0.125 with
    C = 6 N_nonembed D; `experiments.harness.config.deepseek_lr`)."""
    base = deepseek_lr(n_params_nonembedding, tokens) if study.lr == "deepseek" else float(study.lr)
    return study.lr_scale * base


def sizes_at(study: Study, budget: float) -> list[float]:
    """Target sizes at one budget: explicit ``sizes``, or log-spaced around the prior's optimum.

    The prior's N counts every parameter and its C is 6 N D; `design.prior_optimal_params` turns
    our budget into the prior's (``ratio``), and its N_opt is converted to the study's count
    through the shape the rule gives it.
    """
    if study.sizes:
        return [float(s) for s in study.sizes]

    def total_model(n_total):
        return config_for_params(n_total, vocab_size=study.base.model.vocab_size, count="total",
                                 tie_embeddings=study.tie_embeddings, min_heads=study.min_heads,
                                 max_seq_len=study.base.data.seq_len)

    def ratio(n_total):  # our FLOPs per token / (6 N_total)
        model = total_model(n_total)
        return flops_per_token(study, model) / (6.0 * param_counts(model)["total"])

    center = prior_optimal_params(budget, prior=study.prior, flops_ratio=ratio)
    if count_kind(study) != "total":
        center = param_counts(total_model(center))[count_kind(study)]
    return list(log_spaced(study.center_scale * center, study.sizes_per_budget, study.spread))


def run_config(study: Study, budget: float, model: ModelConfig, seed: int) -> Config:
    """The full Config of one grid point: shape, tokens from the budget, batch and LR rules."""
    counts = param_counts(model)
    per_token = flops_per_token(study, model)
    seq_len = study.base.data.seq_len
    rows = batch_rows(study, counts["nonembedding"], budget / per_token)
    steps = steps_for_budget(budget, per_token, rows * seq_len)
    tokens = steps * rows * seq_len
    train = dataclasses.replace(
        study.base.train, tokens=tokens, batch_size=rows,
        lr=learning_rate(study, counts["nonembedding"], tokens), seed=seed)
    data = dataclasses.replace(study.base.data, shuffle_seed=study.base.data.shuffle_seed + seed)
    return dataclasses.replace(study.base, model=model, data=data, train=train, mesh=study.mesh)


def models_at(study: Study, budget: float) -> list[ModelConfig]:
    """Distinct shapes for the budget's target sizes, smallest first.

    The shape lattice is coarse for tiny models, so two targets can give the same shape; the
    later one then moves up to the next larger shape (targets x 1.02 until the shape differs).
    """
    models: list[ModelConfig] = []
    for n_target in sizes_at(study, budget):
        try:
            model = model_for(study, n_target)
        except ValueError as err:
            raise ValueError(f"budget {budget:.3g}: the prior {study.prior!r} puts a size at {n_target:.3g} "
                             f"parameters, where the shape rule has no model ({err}); choose budgets "
                             "nearer the prior's range or set sizes explicitly") from None
        kind = count_kind(study)
        while models and param_counts(model)[kind] <= param_counts(models[-1])[kind]:
            n_target *= 1.02
            model = model_for(study, n_target)
        models.append(model)
    return models


def rung_run(study: Study, budget: float, n_target: float) -> Run:
    """The prediction rung's run at ``budget``: the shape rule's model nearest ``n_target``
    (the fitted N_opt), trained with the grid's rules (seed 0)."""
    return Run(budget=budget, config=run_config(study, budget, model_for(study, n_target), study.seeds[0]),
               labels={"role": "rung"})


def sweep(study: Study) -> Iterator[Run]:
    """The grid, budget by budget (small to large), sizes small to large, then seeds.

    Sizes whose run would take fewer than ``min_steps`` optimizer steps are left out (logged).
    """
    for budget in sorted(study.budgets):
        for model in models_at(study, budget):
            for seed in study.seeds:
                cfg = run_config(study, budget, model, seed)
                steps = cfg.train.tokens // (cfg.train.batch_size * cfg.data.seq_len)
                if steps < study.min_steps:
                    logging.getLogger(__name__).warning(
                        "budget %.3g: %s params would train only %d steps (< min_steps %d); left out",
                        budget, param_counts(model)[count_kind(study)], steps, study.min_steps)
                    continue
                yield Run(budget=budget, config=cfg)


# ----------------------------------------------------------------------------- presets


def smoke() -> Study:
    """CI: 3 budgets x 3 sizes of tiny models, ~1 min on a CPU."""
    base = Study().base
    return dataclasses.replace(
        Study(), name="isoflop_chinchilla_smoke", budgets=(5e9, 1e10, 2e10), sizes_per_budget=3,
        spread=6.0, center_scale=0.35, bootstrap=100, bootstrap_curves=20,
        base=dataclasses.replace(
            base, data=dataclasses.replace(base.data, eval_sequences=128),
            train=dataclasses.replace(base.train, checkpoint_every=100, log_every=20)))


def cpu() -> Study:
    """The README's main job: 5 budgets x 5 sizes on the embedded corpus, < 15 min on 2 cores."""
    return Study()


def gpu() -> Study:
    """One accelerator: ~1M-200M parameter models at seq 1024 in bfloat16 (estimate: ~3 h on an
    H100). Sizes centred on the prior itself and DeepSeek's rules unscaled: the CPU preset's
    re-centring and learning-rate scale were measured for byte-level models below 1e5 parameters."""
    base = Study().base
    return dataclasses.replace(
        Study(), name="isoflop_chinchilla_gpu", budgets=(3e15, 1e16, 3e16, 1e17, 3e17),
        sizes_per_budget=7, spread=16.0, center_scale=1.0, lr_scale=1.0, rows_per_step="deepseek",
        bootstrap=1000,
        base=dataclasses.replace(
            base,
            model=dataclasses.replace(base.model, dtype="bfloat16", max_seq_len=1024),
            data=dataclasses.replace(base.data, seq_len=1024, eval_sequences=512, read_threads=8,
                                     prefetch_batches=4),
            train=dataclasses.replace(base.train, z_loss=1e-4, min_lr_ratio=0.1, log_every=50,
                                      checkpoint_every=1000, eval_batch_size=64)))


def pod() -> Study:
    """A pod slice: 20M-3B parameters at seq 2048 in bfloat16 on a large corpus (give
    ``--set base.data.dataset=...``; the embedded corpus is far too small for these budgets)."""
    g = gpu()
    return dataclasses.replace(
        g, name="isoflop_chinchilla_pod", budgets=(1e18, 3e18, 1e19, 3e19, 1e20, 3e20),
        sizes_per_budget=9, spread=16.0, mesh="data=4,fsdp=32",
        base=dataclasses.replace(
            g.base,
            model=dataclasses.replace(g.base.model, max_seq_len=2048, remat="dots_saveable"),
            data=dataclasses.replace(g.base.data, seq_len=2048, eval_sequences=1024),
            train=dataclasses.replace(g.base.train, checkpoint_every=2000, eval_batch_size=256)))


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu, "pod": pod}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None, *, presets=PRESETS, description: str = __doc__) -> dict:
    """Parse the command line, train the chosen preset's grid, analyze it, and train the
    prediction rung when ``rung_budgets`` asks for one (`run_study`)."""
    def stages(study: Study) -> dict:
        rung = Rung(runs=lambda workdir: isoflop_report.rung_runs(
                        workdir, study.rung_budgets, lambda b, n: rung_run(study, b, n)),
                    report=isoflop_report.rung_report) if study.rung_budgets else None
        return {"runs": sweep(study), "flop_convention": study.flop_convention, "rung": rung,
                "analyze": isoflop_report.analyze_stage if study.analyze else None}

    return study_main(argv, description=description, presets=presets, default_preset="cpu", stages=stages)


if __name__ == "__main__":
    cli.run(main)
