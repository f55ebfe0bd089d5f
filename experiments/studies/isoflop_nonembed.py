"""The isoFLOP study of `experiments.isoflop_chinchilla` under Kaplan et al.'s convention:
C = 6 N D with N the NON-embedding parameters (Kaplan et al. 2020, arXiv:2001.08361, Sec. 2.1).

    python -m experiments.isoflop_nonembed --workdir runs/nonembed --preset cpu
    python -m experiments.isoflop_nonembed --workdir runs/nonembed_ci --preset smoke

Presets and expected cost on the 2-core CPU machine: smoke 3 budgets x 3 sizes, ~2 min (measured
1.8 min while the machine was shared); cpu 5 budgets (2e10-3.2e11 non-embedding FLOPs) x 5 sizes,
4.5e7 tokens in all, measured 5.8 min wall (8 CPU-min) on the idle machine: a = 0.555 / 0.555 /
0.539 (Approaches 1-3), Approach 2's held-out optimal loss -0.77%; the smallest budget's minimum
fell below its sampled sizes (the report says so and suggests smaller models there). Budgets
count non-embedding FLOPs, so they are smaller than the Chinchilla study's for the same models:
at these sizes most parameters of a byte-level model are its embeddings.

What changed from isoflop_chinchilla (this is the whole of a new study): the name, the FLOP
convention and the budgets. The sizes are still centred on Hoffmann et al.'s N_opt(C), converted
to this convention by `experiments.isoflop_chinchilla.sizes_at` (the prior's budget is 6 N_total D;
its N_opt is mapped to the non-embedding count of the shape the rule gives it), and the shape rule
matches the non-embedding count. The grid, the analysis (which reads n_params_nonembedding and
flops_6N_nonembed from results.csv) and the report are reused as they are. A study that needs
other rules sets the recipe's fields or writes its own runs (docs/writing_a_study.md).
"""

from __future__ import annotations

import dataclasses

from experiments.runner.recipe import command
from experiments.studies import isoflop_chinchilla as chinchilla

Study = chinchilla.Study
NONEMBED = {"flop_convention": "6N_nonembed"}


def smoke() -> Study:
    return dataclasses.replace(chinchilla.smoke(), name="isoflop_nonembed_smoke",
                               budgets=(5e9, 1e10, 2e10), **NONEMBED)


def cpu() -> Study:
    return dataclasses.replace(chinchilla.cpu(), name="isoflop_nonembed",
                               budgets=(2e10, 4e10, 8e10, 1.6e11, 3.2e11), **NONEMBED)


PRESETS = {"smoke": smoke, "cpu": cpu}
main = command(PRESETS, __doc__)


if __name__ == "__main__":
    from experiments.harness import cli

    cli.run(main)
