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
         (the report's law selection, 3 loss laws refitted without the largest budget, adds
         ~15 CPU-s; 2026-12-07)
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

The run recipe (shape rule, batch and learning-rate rules, steps, seeds, base config, presets,
--set) is `experiments.runner.recipe.Recipe`; this file declares only the grid. A new study changes
a few lines: experiments/studies/isoflop_nonembed.py is this `Study` (an alias) with presets of
another FLOP convention and budgets; a study with other rules sets the recipe's fields (``lr``,
``rows_per_step``, ``base``) or writes its own `runs` (docs/writing_a_study.md).
Also runnable as ``python -m experiments.studies.isoflop_chinchilla``.
"""

from __future__ import annotations

import dataclasses
import math

from experiments.harness import cli
from experiments.reports import isoflop as isoflop_report
from experiments.runner.design import log_spaced, prior_optimal_params
from experiments.runner.recipe import Recipe, command, derive
from experiments.runner.runs import Run
from experiments.runner.study import Rung
from models.transformer import ModelConfig, param_counts

SMOKE = {"fixture": "smoke_grid", "workdir": "runs/ci", "compile_cache": True, "notebook": "ISOFLOP_WORKDIR",
         "command": "python -m experiments.isoflop_chinchilla --workdir runs/ci --preset smoke"}


@dataclasses.dataclass(frozen=True)
class Study(Recipe):
    """An isoFLOP grid: which budgets, which model sizes at each (the rest is the `Recipe`).

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
    seeds: one run per size and seed (`Recipe.config`). rows_per_step / lr / lr_scale /
      batch_multiple / min_steps / base / mesh: the recipe's rules (`experiments.runner.recipe`).
    bootstrap: bootstrap draws of Approaches 2 and 3 (intervals); bootstrap_curves: of Approach 1
      (slower: it recomputes the envelope of every training curve per draw).
    start_grid: starts of Approach 3's fit: "coarse" (243 starts, every other value of the
      law's grid) or "full" (the law's 4,500-start grid, Epoch AI's protocol; minutes on a CPU).
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
    bootstrap: int = 400
    bootstrap_curves: int = 100
    start_grid: str = "coarse"
    rung_budgets: tuple[float, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        if not self.budgets or any(not (b > 0 and math.isfinite(b)) for b in self.budgets):
            raise ValueError(f"Study.budgets must be positive FLOP counts, got {self.budgets}")
        if self.sizes_per_budget < 1 or self.spread < 1 or self.center_scale <= 0:
            raise ValueError("Study: need sizes_per_budget >= 1, spread >= 1, center_scale > 0")
        if self.start_grid not in ("coarse", "full"):
            raise ValueError(f"Study.start_grid={self.start_grid!r}: 'coarse' or 'full'")
        if any(not (b > 0 and math.isfinite(b)) for b in self.rung_budgets):
            raise ValueError(f"Study.rung_budgets must be positive FLOP counts, got {self.rung_budgets}")

    def runs(self):
        """The grid, budget by budget (small to large), sizes small to large, then seeds; sizes
        whose run would take fewer than ``min_steps`` steps are left out (logged)."""
        for budget in sorted(self.budgets):
            for model in models_at(self, budget):
                for seed in self.seeds:
                    run = self.run(model, budget=budget, seed=seed)
                    if run is not None:
                        yield run

    def analysis(self):
        return isoflop_report.analyze_stage

    def rung(self):
        if not self.rung_budgets:
            return None
        return Rung(runs=lambda workdir: isoflop_report.rung_runs(
                        workdir, self.rung_budgets, lambda b, n: rung_run(self, b, n)),
                    report=isoflop_report.rung_report)


def sweep(study: Study):
    """The study's runs (`Study.runs`)."""
    return study.runs()


def sizes_at(study: Study, budget: float) -> list[float]:
    """Target sizes at one budget: explicit ``sizes``, or log-spaced around the prior's optimum.

    The prior's N counts every parameter and its C is 6 N D; `design.prior_optimal_params` turns
    our budget into the prior's (``ratio``), and its N_opt is converted to the study's count
    through the shape the rule gives it.
    """
    if study.sizes:
        return [float(s) for s in study.sizes]

    def ratio(n_total):  # our FLOPs per token / (6 N_total)
        model = study.model(n_total, count="total")
        return study.flops_per_token(model) / (6.0 * param_counts(model)["total"])

    center = prior_optimal_params(budget, prior=study.prior, flops_ratio=ratio)
    if study.count != "total":
        center = param_counts(study.model(center, count="total"))[study.count]
    return list(log_spaced(study.center_scale * center, study.sizes_per_budget, study.spread))


def models_at(study: Study, budget: float) -> list[ModelConfig]:
    """Distinct shapes for the budget's target sizes, smallest first.

    The shape lattice is coarse for tiny models, so two targets can give the same shape; the
    later one then moves up to the next larger shape (targets x 1.02 until the shape differs).
    """
    models: list[ModelConfig] = []
    for n_target in sizes_at(study, budget):
        try:
            model = study.model(n_target)
        except ValueError as err:
            raise ValueError(f"budget {budget:.3g}: the prior {study.prior!r} puts a size at {n_target:.3g} "
                             f"parameters, where the shape rule has no model ({err}); choose budgets "
                             "nearer the prior's range or set sizes explicitly") from None
        while models and param_counts(model)[study.count] <= param_counts(models[-1])[study.count]:
            n_target *= 1.02
            model = study.model(n_target)
        models.append(model)
    return models


def rung_run(study: Study, budget: float, n_target: float) -> Run:
    """The prediction rung's run at ``budget``: the shape rule's model nearest ``n_target``
    (the fitted N_opt), trained with the grid's rules (seed 0), however few its steps."""
    return study.run(n_target, budget=budget, seed=study.seeds[0], labels={"role": "rung"}, keep_short=True)


# ----------------------------------------------------------------------------- presets


def smoke() -> Study:
    """CI: 3 budgets x 3 sizes of tiny models, ~1 min on a CPU."""
    return derive(Study(), name="isoflop_chinchilla_smoke", budgets=(5e9, 1e10, 2e10), sizes_per_budget=3,
                  spread=6.0, bootstrap=100, bootstrap_curves=20,
                  base={"data": {"eval_sequences": 128}, "train": {"checkpoint_every": 100, "log_every": 20}})


def cpu() -> Study:
    """The README's main job: 5 budgets x 5 sizes on the embedded corpus, < 15 min on 2 cores."""
    return Study()


def gpu() -> Study:
    """One accelerator: ~1M-200M parameter models at seq 1024 in bfloat16 (estimate: ~3 h on an
    H100). Sizes centred on the prior itself and DeepSeek's rules unscaled: the CPU preset's
    re-centring and learning-rate scale were measured for byte-level models below 1e5 parameters."""
    return derive(
        Study(), name="isoflop_chinchilla_gpu", budgets=(3e15, 1e16, 3e16, 1e17, 3e17),
        sizes_per_budget=7, spread=16.0, center_scale=1.0, lr_scale=1.0, rows_per_step="deepseek",
        bootstrap=1000, base={
            "model": {"dtype": "bfloat16", "max_seq_len": 1024},
            "data": {"seq_len": 1024, "eval_sequences": 512, "read_threads": 8, "prefetch_batches": 4},
            "train": {"z_loss": 1e-4, "min_lr_ratio": 0.1, "log_every": 50, "checkpoint_every": 1000,
                      "eval_batch_size": 64}})


def pod() -> Study:
    """A pod slice: 20M-3B parameters at seq 2048 in bfloat16 on a large corpus (give
    ``--set base.data.dataset=...``; the embedded corpus is far too small for these budgets)."""
    return derive(
        gpu(), name="isoflop_chinchilla_pod", budgets=(1e18, 3e18, 1e19, 3e19, 1e20, 3e20),
        sizes_per_budget=9, spread=16.0, mesh="data=4,fsdp=32", base={
            "model": {"max_seq_len": 2048, "remat": "dots_saveable"},
            "data": {"seq_len": 2048, "eval_sequences": 1024},
            "train": {"checkpoint_every": 2000, "eval_batch_size": 256}})


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu, "pod": pod}
main = command(PRESETS, __doc__)


if __name__ == "__main__":
    cli.run(main)
