"""IsoFLOP study (Hoffmann et al. 2022, "Chinchilla", Sec. 3): byte-level transformers on the
embedded Python-stdlib corpus, from one command to fitted laws, plots and a report.

    python -m experiments.isoflop_chinchilla --workdir runs/demo --preset cpu      # the main job
    python -m experiments.isoflop_chinchilla --workdir runs/ci --preset smoke      # CI (tests)
    python -m experiments.isoflop_chinchilla --workdir runs/aot --preset pod --aot v5p-256   # check it fits first
    python -m experiments.isoflop_chinchilla --workdir gs://bucket/iso --preset pod --set base.data.dataset=...
    python -m experiments.isoflop_chinchilla --workdir runs/wide --preset cpu --set budgets=1e11,3e11,1e12 --set sizes_per_budget=7 --set spread=12
    python -m experiments.isoflop_chinchilla --workdir runs/rung2 --preset cpu --set prior=runs/demo/fits/approach3_parametric.json --set center_scale=1
    python -m experiments.isoflop_chinchilla --workdir runs/branches --preset cpu_branches      # the branch grid
    python -m experiments.isoflop_chinchilla --workdir runs/same --preset cpu --set grid=branches
    python -m experiments.reports.branch_grid runs/demo runs/branches     # the two grids side by side

The rung2 command is a ladder rung: its sizes are centred on the N_opt(C) that the first study
fitted. The branch grid (``grid=branches``, `branch_runs`) trains one constant-rate stable run per
size and a 1-sqrt cooldown branch ending at each point; ``cpu_branches`` adds ``shared_sizes``
(one size lattice for every budget) so that budgets share stable runs (docs/studies/isoflop.md).
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
  cpu_branches  the cpu grid as branches (7 stable runs + 25 cooldown      15.6 CPU-min for cpu and
         branches, 6.19e12 FLOPs against the cpu grid's 9.69e12)          10.6 for cpu_branches,
         measured side by side 2026-12-07 on a loaded machine (59 and 45 min wall); exponents a
         (Approaches 1-3) 0.467, 0.525, 0.566 (cpu) and 0.366, 0.424, 0.464 (cpu_branches), held-out
         1e12 L_opt errors +6.3%, +0.8%, +3.0% and +7.7%, +2.9%, +0.6% (docs/studies/isoflop.md)
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
from experiments.harness.config import COOLDOWNS
from experiments.reports import isoflop as isoflop_report
from experiments.runner.design import log_spaced, prior_optimal_params
from experiments.runner.recipe import Recipe, command, derive
from experiments.runner.runs import Run
from experiments.runner.study import Rung
from models.transformer import ModelConfig, param_counts

GRIDS = ("cosine", "branches")
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
    grid: "cosine" (every (size, budget) point its own cosine run from scratch) or "branches"
      (`branch_runs`: one constant-rate stable run per size and seed, and a WSD cooldown branch
      of it ending at each of the cosine grid's points).
    shared_sizes: every budget's sizes taken from one log lattice (ratio spread^(1/(n-1)), through
      the smallest budget's sizes): the ``sizes_per_budget`` lattice sizes centred nearest each
      budget's centre, so neighbouring budgets share most sizes and a branch grid needs few
      stable runs (`lattice_models`); off, each budget's sizes are centred on it exactly.
    cooldown_fraction, cooldown: the branches' cooldown, a fraction of each branch's steps, and
      its shape ("linear" or "1-sqrt", Hägele et al. 2024, arXiv:2405.18392, Sec. 3).
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
    grid: str = "cosine"
    shared_sizes: bool = False
    cooldown_fraction: float = 0.2
    cooldown: str = "1-sqrt"

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
        if self.grid not in GRIDS:
            raise ValueError(f"Study.grid={self.grid!r}: one of {GRIDS}")
        if not 0 < self.cooldown_fraction < 1:
            raise ValueError(f"Study.cooldown_fraction={self.cooldown_fraction!r}: must be in (0, 1)")
        if self.cooldown not in COOLDOWNS:
            raise ValueError(f"Study.cooldown={self.cooldown!r}: one of {COOLDOWNS}")

    def runs(self):
        """The grid: `cosine_runs`, or `branch_runs` when ``grid="branches"``."""
        return branch_runs(self) if self.grid == "branches" else cosine_runs(self)

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


def cosine_runs(study: Study):
    """The cosine grid, budget by budget (small to large), sizes small to large, then seeds;
    sizes whose run would take fewer than ``min_steps`` steps are left out (logged)."""
    for budget in sorted(study.budgets):
        for model in models_at(study, budget):
            for seed in study.seeds:
                run = study.run(model, budget=budget, seed=seed)
                if run is not None:
                    yield run


def branch_runs(study: Study):
    """The branch grid: the cosine grid's points (`cosine_runs`: the same sizes, budgets and
    endpoint tokens) grouped by size and seed; per group one stable run (schedule "constant",
    labelled ``role="stable"``) trained to the last step a branch leaves from, and per point a
    WSD branch (``train.parent``, ``role="branch"``) that leaves it at
    steps - round(cooldown_fraction x steps) and cools down to the point's tokens.

    What a group shares, since a branch is its parent's run up to where it leaves: the batch and
    peak learning rate of its longest point (the rules evaluated there; a cosine run of a smaller
    budget has a higher rate under DeepSeek's rule) and a warmup of ``base.train.warmup`` x the
    shortest point's steps (a warmup fraction of the longest would take most of the shortest).
    The stable run saves and keeps a checkpoint at each step a branch leaves from
    (``train.keep_steps``). A branch's FLOPs up to its leave step are its parent's; results.csv's
    ``leaves_at`` column holds the tokens where it leaves (FLOPs spent = stable runs + cooldowns).
    A batch rule that varies with the budget makes a branch's tokens the nearest whole number of
    the shared batch's steps, not exactly the cosine point's.
    """
    groups: dict = {}
    for run in cosine_runs(study):
        model = run.config.model
        groups.setdefault((param_counts(model)[study.count], run.config.train.seed, model), []).append(run)
    seq_len = study.base.data.seq_len
    for key in sorted(groups, key=lambda k: k[:2]):
        points = groups[key]
        longest = max(points, key=lambda r: r.config.train.tokens)
        rows = longest.config.train.batch_size
        steps = [max(1, round(r.config.train.tokens / (rows * seq_len))) for r in points]
        warmup = study.base.train.warmup
        warmup = round(warmup * min(steps)) if warmup < 1 else int(warmup)
        leaves = [s - max(1, round(study.cooldown_fraction * s)) for s in steps]
        if min(leaves) < warmup:
            raise ValueError(f"N={key[0]:.3g}: a cooldown of {study.cooldown_fraction} of {min(steps)} steps "
                             f"would start before the warmup ends (step {warmup}); lower cooldown_fraction")
        stable_cfg = derive(longest.config, train={
            "schedule": "constant", "tokens": max(leaves) * rows * seq_len, "warmup": float(warmup),
            "keep_steps": tuple(sorted(set(leaves)))})
        stable = Run(budget=study.flops_per_token(stable_cfg.model) * stable_cfg.train.tokens,
                     config=stable_cfg, labels={"role": "stable", "leaves_at": 0})
        parent = stable.run_id
        yield stable
        for point, n_steps, leave in zip(points, steps, leaves):
            cfg = derive(stable_cfg, train={
                "schedule": "wsd", "tokens": n_steps * rows * seq_len, "decay_steps": n_steps - leave,
                "cooldown": study.cooldown, "parent": parent, "keep_steps": ()})
            yield Run(budget=point.budget, config=cfg,
                      labels={"role": "branch", "leaves_at": leave * rows * seq_len})


def center_at(study: Study, budget: float) -> float:
    """The centre of a budget's sizes (before ``center_scale``): the prior's N_opt(C) in the
    study's parameter count (see `sizes_at`)."""

    def ratio(n_total):  # our FLOPs per token / (6 N_total)
        model = study.model(n_total, count="total")
        return study.flops_per_token(model) / (6.0 * param_counts(model)["total"])

    center = prior_optimal_params(budget, prior=study.prior, flops_ratio=ratio)
    if study.count != "total":
        center = param_counts(study.model(center, count="total"))[study.count]
    return center


def sizes_at(study: Study, budget: float) -> list[float]:
    """Target sizes at one budget: explicit ``sizes``, or log-spaced around the prior's optimum.

    The prior's N counts every parameter and its C is 6 N D; `design.prior_optimal_params` turns
    our budget into the prior's (``ratio``), and its N_opt is converted to the study's count
    through the shape the rule gives it.
    """
    if study.sizes:
        return [float(s) for s in study.sizes]
    return list(log_spaced(study.center_scale * center_at(study, budget), study.sizes_per_budget,
                           study.spread))


def lattice_window(study: Study, budget: float) -> int:
    """``shared_sizes``: the index, on the lattice of `lattice_models`, of the budget's smallest
    size: the window of ``sizes_per_budget`` lattice points whose centre is nearest (in log) the
    budget's own centre."""
    n = study.sizes_per_budget
    step = math.log(study.spread) / (n - 1)
    first = min(study.budgets)
    return round(math.log(center_at(study, budget) / center_at(study, first)) / step)


def lattice_models(study: Study) -> list[ModelConfig]:
    """``shared_sizes``: the lattice's shapes, from the smallest budget's smallest size up to the
    largest budget's largest, in one pass of `distinct_models` (so a target maps to the same
    shape at every budget)."""
    first = min(study.budgets)
    top = max(lattice_window(study, b) for b in study.budgets) + study.sizes_per_budget - 1
    ratio = study.spread ** (1 / (study.sizes_per_budget - 1))
    lowest = sizes_at(study, first)[0]
    return distinct_models(study, [lowest * ratio ** k for k in range(top + 1)], f"budget {first:.3g}")


def models_at(study: Study, budget: float) -> list[ModelConfig]:
    """Distinct shapes for the budget's target sizes, smallest first.

    The shape lattice is coarse for tiny models, so two targets can give the same shape; the
    later one then moves up to the next larger shape (targets x 1.02 until the shape differs).
    """
    if study.shared_sizes and not study.sizes and study.sizes_per_budget > 1:
        low = lattice_window(study, budget)
        if low < 0:  # the lattice starts at the smallest budget's sizes
            raise ValueError(f"budget {budget:.3g}: shared_sizes needs the prior's N_opt to grow with "
                             f"the budget; {study.prior!r} puts this budget's below the smallest budget's")
        return lattice_models(study)[low:low + study.sizes_per_budget]
    return distinct_models(study, sizes_at(study, budget), f"budget {budget:.3g}")


def distinct_models(study: Study, targets, where: str) -> list[ModelConfig]:
    """Shapes for increasing target sizes, each larger than the one before (see `models_at`)."""
    models: list[ModelConfig] = []
    for n_target in targets:
        try:
            model = study.model(n_target)
        except ValueError as err:
            raise ValueError(f"{where}: the prior {study.prior!r} puts a size at {n_target:.3g} "
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


def cpu_branches() -> Study:
    """The cpu grid as branches: one stable run per size of a shared lattice and a 1-sqrt
    cooldown branch (20% of its steps) at each budget's point; compare with the cpu preset."""
    return derive(cpu(), name="isoflop_chinchilla_branches", grid="branches", shared_sizes=True)


PRESETS = {"smoke": smoke, "cpu": cpu, "cpu_branches": cpu_branches, "gpu": gpu, "pod": pod}
main = command(PRESETS, __doc__)


if __name__ == "__main__":
    cli.run(main)
