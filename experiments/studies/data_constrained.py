"""Data-constrained scaling (Muennighoff et al. 2023) from the project's own runs: model sizes x
unique-token budgets U x epochs, each run capped at U unique tokens (``data.unique_tokens``,
`experiments.harness.subsets`) and repeating them for its epochs; fits the ``data_constrained``
law (R*_D, R*_N with intervals, beside the published 15.4 and 5.3), checks it on held-out runs
(the highest epochs; the largest U), and reports the compute-optimal (N, D, epochs) at a fixed U
and where repeating stops paying.

    python -m experiments.studies.data_constrained --workdir runs/dc --preset cpu
    python -m experiments.studies.data_constrained --workdir runs/dc_ci --preset smoke

Presets (2-core CPU machine): smoke 2 sizes x 2 U x 3 epochs (12 runs of 2k-5k-parameter
models, 1.6M tokens in all; fitted jointly, 20 bootstrap draws): 1.8 CPU-minutes measured
(2026-12-06: 83 CPU-s training + 23 CPU-s analysis; 9 min wall on the heavily shared machine);
the report's law selection (3 candidate laws, the 9-epoch runs held out) adds ~16 CPU-s of
analysis (2026-12-07: 41 CPU-s against 27 without it; not in the cpu measurement below).
cpu 3 sizes x 3 U x 5 epochs (45 runs of 5e3-5e4 parameters, U 45k-180k, 1 to 16 epochs, 2.9e7
tokens in all; two-stage fit, 200 draws; plus the authors' procedure on Muennighoff et al.'s runs):
10.8 CPU-minutes measured (2026-12-07: the whole command 649 CPU-s, of which the analysis, re-run
alone, 92 CPU-s; 32 min wall on the shared machine). Result (docs/studies/data_constrained.md): R*_D 2.66 [2.14, 4.23], R*_N not
identified (1.3e11 [3.4, 1.5e12]); held out, the 16-epoch runs 4.2% mean / 9.6% max error, 67% in
the band; the largest U 3.2% / 7.2%, 0% in the band. On the authors' 182 runs with their procedure:
R*_D 47.0, R*_N 2.33 (their published 15.4 / 5.3 is a local minimum of the same objective).

Every run of the grid is its own run (its own cosine schedule to its own length), as in the
paper; the caps are nested (a smaller U is a subset of a larger one), so budgets differ in how
much data they hold, not in which. Outputs, under the workdir: runs/, results.csv (with the
labels unique_tokens and epochs), data_constrained_runs.csv (N, D read, U, epochs, loss),
fits/data_constrained.json, plots/loss_vs_epochs.png, plots/effective_data.png, analysis.json,
report.md.
"""

from __future__ import annotations

import dataclasses

from experiments.harness import cli
from experiments.harness.subsets import check_cap
from experiments.reports.data_constrained import REPORT
from experiments.runner.recipe import Recipe, command, derive

SMOKE = {"fixture": "data_constrained_smoke", "workdir": "runs/dc_ci",
         "command": "python -m experiments.studies.data_constrained --workdir runs/dc_ci --preset smoke"}


@dataclasses.dataclass(frozen=True)
class Study(Recipe):
    """sizes x unique_budgets x epochs; the analysis's procedure, bootstrap and budgets."""

    name: str = "data_constrained"
    sizes: tuple[float, ...] = (5e3, 1.5e4, 5e4)
    unique_budgets: tuple[int, ...] = (45_000, 90_000, 180_000)
    epochs: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    procedure: str = "two_stage"  # scaling.analysis.data_constrained.PROCEDURES
    bootstrap: int = 200
    optimal_budgets: tuple[float, ...] = (1e12, 1e13, 1e14)
    with_published: bool = True  # the authors' procedure on Muennighoff et al.'s runs, in the report

    def __post_init__(self):
        super().__post_init__()
        for u in self.unique_budgets:
            if u < 1:
                raise ValueError(f"unique_budgets: {u} is not a positive token count")
        if any(e < 1 for e in self.epochs):
            raise ValueError(f"epochs={self.epochs}: each must be >= 1 (a run reads its U tokens at least once)")
        if self.procedure not in ("two_stage", "joint", "muennighoff2023"):
            raise ValueError(f"procedure={self.procedure!r}: 'two_stage', 'joint' or 'muennighoff2023'")

    def runs(self):
        seq_len = self.base.data.seq_len
        for n in self.sizes:
            for u in self.unique_budgets:
                for e in self.epochs:
                    # tokens read = steps x rows x (seq_len + 1) = e x U: tokens (inputs) = e U L / (L + 1)
                    run = self.run(n, tokens=e * u * seq_len / (seq_len + 1),
                                   data={"unique_tokens": int(u)},
                                   labels={"unique_tokens": int(u), "epochs": float(e)})
                    if run is not None:
                        if n == self.sizes[0] and e == self.epochs[0]:  # bad caps: exit 2, before training
                            check_cap(run.config.data, global_batch_size=run.config.train.batch_size)
                        yield run

    def analysis(self):
        return REPORT.stage


def smoke() -> Study:
    """CI: 2 sizes x 2 U x 3 epochs, a joint fit with few draws, no published analysis."""
    return derive(Study(), name="data_constrained_smoke", sizes=(2e3, 5e3), unique_budgets=(21_000, 42_000),
                  epochs=(1.0, 3.0, 9.0), procedure="joint", bootstrap=20, with_published=False,
                  optimal_budgets=(1e10, 1e11),
                  base={"data": {"eval_sequences": 64}, "train": {"checkpoint_every": 200, "log_every": 20}})


def cpu() -> Study:
    return Study()


PRESETS = {"smoke": smoke, "cpu": cpu}
main = command(PRESETS, __doc__)

if __name__ == "__main__":
    cli.run(main)
