"""Analyses built on fitted laws, all through the one engine (`scaling.fitting`).

- `isoflop`: compute-optimal N_opt(C), D_opt(C), L_opt(C) by Hoffmann et al. 2022's three
  approaches (`approach1`, `approach2`, `approach3`), the extrapolation check and `analyze`;
  `runs` validates the input tables, `power_laws` fits the laws in C, `results` holds the outputs.
"""
