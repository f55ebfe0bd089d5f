"""Hyperparameter laws from the project's own sweeps: at every cell (model size N, tokens D),
train a log-spaced learning-rate grid crossed with two or three batch sizes, find the cell's
optimal learning rate and batch (a parabola in ln lr per batch, near the minimum, weighted by each
run's eval-loss SEM, with bootstrap intervals over the cell's runs), then fit

    eta_opt(N, D) = A N^b_N D^b_D   (Step Law's form, `power_law_2d`)  -> fits/lr_optimum.json
    eta_opt(C)    = A C^b           (DeepSeek's form, `pure_power_law`) -> fits/lr_optimum_C.json
    B_opt(D)      = A D^b           (Step Law's form; tokens per step)  -> fits/batch_optimum.json
    B_opt(C)      = A C^b           (DeepSeek's form; tokens per step)  -> fits/batch_optimum_C.json

each with a bootstrap band and a held-out check (the largest cell refitted out and predicted, with
the loss the predicted setting costs on that cell's measured curve). Extra seeds at each cell's
best grid point (trained after the grid, in ``rung/``) measure the seed noise. A cell whose optimum
is on its grid's edge is flagged and left out of the law fits (report.md says which way to move
its grid). The fitted files are learning-rate and batch rules for every other study:

    python -m experiments.studies.hyperparameter_laws --workdir runs/hp --preset cpu
    python -m experiments.studies.hyperparameter_laws --workdir runs/hp_ci --preset smoke
    python -m experiments.studies.hyperparameter_laws --workdir runs/hp_mup --preset cpu_mup
    python -m experiments.studies.hyperparameter_laws --workdir runs/hp --preset cpu_batch
    python -m experiments.studies.isoflop_chinchilla --workdir runs/iso_hp --preset cpu \\
        --set lr=runs/hp/fits/lr_optimum.json --set lr_scale=1   # + rows_per_step=<batch_optimum.json> once fitted
    python -m experiments.reports.branch_grid runs/iso_deepseek runs/iso_hp   # beside the preset's own rules

Presets (2-core CPU machine): smoke 1 size x 2 token counts (2 cells of a ~2k-parameter model) x
6 learning rates x 2 batch sizes, 1 extra seed per cell (26 runs, 0.7M tokens): 1.5 CPU-minutes
measured (2026-12-07: 91 CPU-s, of which ~2.3 CPU-s per run is per-run overhead and ~12 per
compiled batch shape). cpu: 3 sizes x 2 tokens-per-parameter (6 cells) x 6 learning rates x 3
batch sizes + 1 extra seed per cell (114 runs, 36M tokens): 11.8 CPU-minutes measured
(2026-12-07: 708 CPU-s, training and both analyses; 8% of the runs' wall time compiling; the
fitted exponents and the held-out check are in docs/studies/hyperparameter_laws.md). cpu_batch:
the cpu cells at batches 2, 4, 8, 16 and 8 learning rates (1/32-4 x the center; 192 runs + 6
seeds), trained in a copy of the cpu workdir in three steps (2026-12-07: the batch-4 runs 6.0,
the batch-2 runs and seeds 8.8, the two lowest rates 5.6 CPU-minutes): every cell's rate optimum
inside, 3 cells with an inside batch optimum: B_opt(D) exponent +0.61 [+0.45, +0.89] (Step Law
+0.571), eta_opt(N, D) b_N -0.96 [-1.51, -0.42]; the 3 larger cells still prefer the smallest
batch, so the batch law does not extrapolate to them (held out: +2.1 in ln). cpu_mup:
widths 16/32/64 at depth 2, one token count, 8 learning rates (1/64-2 x the center), standard
and muP side by side (48 runs; measured in three invocations, 5.9 + 3.0 + 2.8 CPU-minutes,
2026-12-07): every cell inside; exponent of N in eta_opt muP +0.005 [-0.11, +0.22], standard
-0.46 [-0.56, -0.38]. The ladder (2026-12-07): the cpu isoFLOP grid at rules fitted from the
cpu_batch sweep reached a best measured loss 0.079, 0.053, 0.048, 0.033, 0.003 nats below the
preset's own rules (0.5 x DeepSeek's rate, 16 sequences) at its five budgets (19.1 CPU-minutes;
docs/studies/hyperparameter_laws.md).

Runs that differ only in their learning rate share one compiled train step: the schedule's
numbers (peak rate included) are data in the train state (`experiments.harness.step`), so a
cell's grid compiles once per batch size; report.md gives the compile time's share.
"""

from __future__ import annotations

import dataclasses
import math

from experiments.harness import cli
from experiments.runner.recipe import Recipe, command, derive
from experiments.runner.study import Rung
from models.transformer import ModelConfig

SMOKE = {"fixture": "hp_smoke", "workdir": "runs/hp_ci", "notebook": "HP_WORKDIR",
         "command": "python -m experiments.studies.hyperparameter_laws --workdir runs/hp_ci --preset smoke"}

PARAMETERIZATIONS = ("sp", "mup")


@dataclasses.dataclass(frozen=True)
class Study(Recipe):
    """Cells (size x length) x learning rates x batch sizes (x parameterizations).

    sizes: target parameter counts (the shape rule, `Recipe.model`), or, with ``widths``, ignored.
    widths, depth: models of these widths at this depth instead (the muP transfer check: widths
      varied at fixed depth; heads of ``head_dim`` each).
    tokens_per_param: each cell's D = tpp x N; tokens: absolute token counts instead (the same
      D for every size: the N exponent at fixed D).
    lr_multipliers: the learning-rate grid, multiples of the cell's center rate (``lr_scale`` x
      the ``lr`` rule at the cell's N, D, C); log-spaced, at least 6.
    batches: sequences per step (2-3 of them): each cell's grid is trained at each.
    parameterizations: "sp" (standard) and/or "mup" (``model.mup``, base width ``mup_base_width``).
    extra_seeds: seeds trained after the grid at each cell's best grid point (rung/).
    bootstrap: draws of the per-cell optimum (runs resampled within the cell) and of the laws.
    fit_steps: the parabola uses the grid points within this many grid steps of the best one.
    """

    name: str = "hyperparameter_laws"
    sizes: tuple[float, ...] = (6e3, 1.2e4, 2.4e4)
    widths: tuple[int, ...] = ()
    depth: int = 2
    head_dim: int = 16
    tokens_per_param: tuple[float, ...] = (10.0, 40.0)
    tokens: tuple[float, ...] = ()
    lr_multipliers: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
    batches: tuple[int, ...] = (8, 16, 32)
    parameterizations: tuple[str, ...] = ("sp",)
    mup_base_width: int = 32
    extra_seeds: int = 1
    bootstrap: int = 200
    fit_steps: int = 2
    min_cells: int = 3
    lr_scale: float = 4.0
    min_steps: int = 10

    def __post_init__(self):
        super().__post_init__()
        grid = sorted(self.lr_multipliers)
        if len(grid) < 6 or grid[0] <= 0 or len(set(grid)) != len(grid):
            raise ValueError(f"lr_multipliers={self.lr_multipliers}: give at least 6 distinct positive multiples")
        ratios = [b / a for a, b in zip(grid, grid[1:])]
        if max(ratios) / min(ratios) > 1.01:
            raise ValueError(f"lr_multipliers={self.lr_multipliers}: the grid must be log-spaced (equal ratios)")
        if not self.batches or any(int(b) != b or b < 1 for b in self.batches):
            raise ValueError(f"batches={self.batches}: sequences per step, positive integers")
        if not self.widths and not self.sizes:
            raise ValueError("give sizes (the shape rule) or widths (fixed depth)")
        if bool(self.tokens) == bool(self.tokens_per_param) and not self.tokens:
            raise ValueError("give tokens_per_param or tokens")
        bad = [p for p in self.parameterizations if p not in PARAMETERIZATIONS]
        if bad or not self.parameterizations:
            raise ValueError(f"parameterizations={self.parameterizations}: some of {PARAMETERIZATIONS}")
        if self.extra_seeds < 0 or self.bootstrap < 0 or self.fit_steps < 1 or self.min_cells < 2:
            raise ValueError("extra_seeds and bootstrap must be >= 0, fit_steps >= 1, min_cells >= 2")
        if self.widths and any(w % self.head_dim or w // self.head_dim < 1 for w in self.widths):
            raise ValueError(f"widths={self.widths}: multiples of head_dim={self.head_dim}")

    # ----------------------------------------------------------------------------- the grid

    def models(self) -> list[ModelConfig]:
        """The cells' models: the shape rule's at ``sizes``, or ``widths`` at fixed ``depth``."""
        if not self.widths:
            return [self.model(n) for n in self.sizes]
        base = self.base.model
        return [dataclasses.replace(base, d_model=int(w), n_layers=self.depth, n_heads=int(w) // self.head_dim,
                                    n_kv_heads=None, head_dim=None, d_ff=None,
                                    max_seq_len=self.base.data.seq_len) for w in self.widths]

    def cell_tokens(self, model: ModelConfig) -> list[float]:
        from models.transformer import param_counts

        if self.tokens:
            return [float(t) for t in self.tokens]
        return [tpp * param_counts(model)[self.count] for tpp in self.tokens_per_param]

    def center_lr(self, model: ModelConfig, tokens: float) -> float:
        """The cell's center rate: ``lr_scale`` x the ``lr`` rule at (N non-embedding, D, C)."""
        from models.transformer import param_counts

        n_ne = param_counts(model)["nonembedding"]
        return self.learning_rate(n_ne, tokens, self.flops_per_token(model) * tokens)

    def grid_run(self, model: ModelConfig, tokens: float, multiplier: float, rows: int,
                 parameterization: str, seed: int = 0, role: str = "grid"):
        """One run of the grid: ``model`` at ``tokens`` and ``multiplier`` x the center rate, at
        ``rows`` sequences per step (labels: the cell, lr, rows, parameterization, role)."""
        if parameterization == "mup":
            model = dataclasses.replace(model, mup=True, mup_base_width=self.mup_base_width)
        center = self.center_lr(model, tokens)
        study = derive(self, rows_per_step=int(rows), lr=center * multiplier, lr_scale=1.0)
        return study.run(model, tokens=tokens, seed=seed, keep_short=role != "grid", labels={
            "cell_tokens": float(tokens), "d_model": model.d_model, "parameterization": parameterization,
            "lr": float(center * multiplier), "lr_multiplier": float(multiplier), "rows_per_step": int(rows),
            "role": role})

    def grid(self):
        """``(run, (model, tokens, multiplier, rows, parameterization))``: parameterization, then
        size, then length; each cell's learning rates at each batch."""
        for parameterization in self.parameterizations:
            for model in self.models():
                for tokens in self.cell_tokens(model):
                    for rows in self.batches:
                        for m in sorted(self.lr_multipliers):
                            for seed in self.seeds:
                                run = self.grid_run(model, tokens, m, rows, parameterization, seed)
                                if run is not None:
                                    yield run, (model, tokens, m, rows, parameterization)

    def runs(self):
        return (run for run, _ in self.grid())

    def analysis(self):
        from experiments.reports.hyperparameter_laws import REPORT

        return REPORT.stage

    def rung(self):
        """Extra seeds at each cell's best grid point, trained after the grid (rung/); the report
        is then rewritten with them (seed noise per cell)."""
        if not self.extra_seeds:
            return None
        from experiments.reports import hyperparameter_laws as report

        return Rung(runs=lambda workdir: report.seed_runs(self, workdir), report=report.seed_report)


def smoke() -> Study:
    """CI: one ~2k-parameter model, 2 token counts, 6 learning rates x 2 batch sizes, 1 extra seed."""
    return derive(Study(), name="hyperparameter_laws_smoke", sizes=(2e3,), tokens_per_param=(),
                  tokens=(2e4, 4e4), lr_multipliers=tuple(2.0 ** k for k in range(-3, 3)),
                  batches=(4, 8), extra_seeds=1, bootstrap=40, lr=0.1, lr_scale=1.0, min_cells=2,
                  base={"data": {"eval_sequences": 32}, "train": {"checkpoint_every": 1000, "log_every": 50,
                                                                  "eval_batch_size": 32}})


def cpu() -> Study:
    return Study()


def cpu_batch() -> Study:
    """The cpu cells with batches 2, 4, 8, 16 sequences (128-1024 tokens per step): at these budgets
    the cpu preset's smallest batch won in every cell, so the batch laws need smaller batches. Run
    in a copy of the cpu preset's workdir it trains only the batches that preset lacks (run ids
    depend on the config alone). The rate grid reaches 4x lower than the cpu preset's (1/32 to
    4 x the center, 8 rates): with 6 rates the smallest batches' best rate was the grid's lowest in
    half the cells."""
    return derive(Study(), name="hyperparameter_laws_batch", batches=(2, 4, 8, 16),
                  lr_multipliers=(0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0))


def cpu_mup() -> Study:
    """The muP transfer check: widths 16, 32, 64 at depth 2 on one token count, standard and
    muP side by side (base width 16), one batch size; 8 rates from 1/64 to 2 x the center (the
    standard parameterization's optimum falls ~4x from width 16 to 64, muP's stays put: the grid
    brackets both)."""
    return derive(Study(), name="hyperparameter_laws_mup", widths=(16, 32, 64), depth=2, tokens_per_param=(),
                  tokens=(2e5,), batches=(16,), parameterizations=("sp", "mup"), mup_base_width=16,
                  lr_multipliers=tuple(2.0 ** k for k in range(-6, 2)), extra_seeds=0)


PRESETS = {"smoke": smoke, "cpu": cpu, "cpu_batch": cpu_batch, "cpu_mup": cpu_mup}
main = command(PRESETS, __doc__)

if __name__ == "__main__":
    cli.run(main)
