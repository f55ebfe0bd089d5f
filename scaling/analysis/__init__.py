"""Analyses built on fitted laws, all through the one engine (`scaling.fitting`).

- `isoflop`: compute-optimal N_opt(C), D_opt(C), L_opt(C) by Hoffmann et al. 2022's three
  approaches (`approach1`, `approach2`, `approach3`), the extrapolation check and `analyze`;
  `runs` validates the input tables, `power_laws` fits the laws in C, `results` holds the outputs.
- `compare`: two recipes fitted jointly with a shared irreducible loss; the compute, parameter and
  data multipliers of one over the other with bootstrap bands, the crossover, residual diagnostics;
- `select`: candidate laws ranked by their error on held-out largest budgets, sizes or token counts;
- `task_accuracy`: two-step task prediction, (N, D) -> task loss -> accuracy, bands through both.
- `data_constrained`: Muennighoff et al. 2023's law fitted two-stage or jointly (R*_D, R*_N with
  intervals), held out by epochs and by unique-token budget, what repeating buys, the
  compute-optimal (N, D, epochs) at a fixed U; for the published runs and the study's own.
"""
