"""How long `scaling.isoflop.analyze` takes on tables of different shapes, once the engine is warm.

    python -m benchmarks.analysis_speed                 # 15 tables, Approaches 2 and 3 + extrapolation
    python -m benchmarks.analysis_speed --tables 5      # fewer

Each table is a noisy isoFLOP grid from L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al.'s
Approach 3 fit) with its own number of budgets (3 to 8) and sizes per budget (4 to 12), so every
table has a different number of runs (15 to 96) and the compiled code can only be reused if the
engine pads shapes into buckets (`scaling.fitting.solver.padded_size`: 64, 96, 128, 192, ... for
`scaling.fit`; `scaling.fitting.fit_many`: each start's own points, padded to 8, 16, 32, ...).
Two warm-up tables (the smallest and the largest shape) compile first; then every table is
analysed once, timed (wall), with the settings of the experiments' report: 200 bootstrap draws,
Approach 3 from the 243-start coarse grid. Goal (issue 14): every table within 2x of the median
and all 15 under a minute on 2 cores. The engine runs on the CPU in float64
(`scaling.fitting.describe_engine`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
import warnings

import numpy as np
import pandas as pd

from scaling import fitting, isoflop, laws

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def coarse_starts() -> dict:
    """Every other value of each parameter's default grid of `chinchilla` (3^5 = 243 starts)."""
    law = laws.get("chinchilla")
    grids = [p.grid[::2] for p in law.params]
    product = np.array(list(itertools.product(*grids)))
    return {p.name: product[:, j] for j, p in enumerate(law.params)}


def table(n_budgets: int, n_sizes: int, seed: int) -> pd.DataFrame:
    """A noisy isoFLOP grid: n_sizes sizes over a factor 16 around each budget's optimum."""
    rng = np.random.default_rng(seed)
    al, be = TRUE["alpha"], TRUE["beta"]
    g = (al * TRUE["A"] / (be * TRUE["B"])) ** (1 / (al + be))
    rows = []
    for C in np.geomspace(1e17, 1e17 * 10 ** (0.5 * (n_budgets - 1)), n_budgets):
        centre = g * (C / 6) ** (be / (al + be)) * np.exp(rng.uniform(-0.3, 0.3))
        for N in np.geomspace(centre / 4, centre * 4, n_sizes):
            D = C / (6 * N)
            loss = TRUE["E"] + TRUE["A"] * N ** -al + TRUE["B"] * D ** -be
            rows.append({"budget": C, "n_params": N, "tokens": D, "eval_loss": loss * np.exp(0.003 * rng.standard_normal())})
    return pd.DataFrame(rows)


SHAPES = [(3, 5), (4, 4), (4, 7), (5, 5), (5, 9), (6, 6), (6, 11), (7, 4), (7, 8), (8, 5),
          (8, 12), (3, 12), (5, 12), (6, 8), (8, 9)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, default=15)
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args(argv)
    starts = coarse_starts()
    kwargs = dict(bootstrap=args.bootstrap, approaches=(2, 3), approach3_starts=starts)
    print(f"engine: {fitting.describe_engine()}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for budgets, sizes in ((3, 4), (8, 12)):   # the smallest and the largest shape compile the buckets
            t0 = time.perf_counter()
            isoflop.analyze(table(budgets, sizes, seed=100), **kwargs)
            print(f"warm-up table ({budgets} budgets x {sizes} sizes, compiles): {time.perf_counter() - t0:.1f} s",
                  flush=True)
        passes = []
        for label in ("first pass (a table may still compile a new bucket)", "second pass (everything compiled)"):
            print(label, flush=True)
            times = []
            for i, (budgets, sizes) in enumerate(SHAPES[:args.tables]):
                runs = table(budgets, sizes, seed=i)
                t0 = time.perf_counter()
                result = isoflop.analyze(runs, **kwargs)
                times.append(time.perf_counter() - t0)
                print(f"table {i + 1:2d}: {budgets} budgets x {sizes:2d} sizes = {len(runs):3d} runs: {times[-1]:6.2f} s "
                      f"(a = {result.approaches[2].exponents.a:.3f} / {result.approaches[3].exponents.a:.3f})",
                      flush=True)
            passes.append((label, np.array(times)))
    for label, times in passes:
        median = float(np.median(times))
        print(f"\n{label}: {len(times)} tables, total {times.sum():.1f} s, median {median:.2f} s, "
              f"min {times.min():.2f} s ({times.min() / median:.2f}x median), max {times.max():.2f} s "
              f"({times.max() / median:.2f}x median); within 2x of the median: {bool((times <= 2 * median).all())}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[1]:.1f} (5 min)")


if __name__ == "__main__":
    main()
