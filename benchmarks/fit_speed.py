"""Epoch AI's Chinchilla fitting protocol: `scaling.fit` against scipy L-BFGS-B, side by side.

    python -m benchmarks.fit_speed                      # full protocol, then 7 alternating blocks
    python -m benchmarks.fit_speed --scipy-every 10     # scipy on every 10th start/resample, x10
    python -m benchmarks.fit_speed --blocks-only        # only the alternating blocks (about a minute)

Protocol (Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", Sec. 2 and their
notebook): Huber (delta = 1e-3) on log loss, log-sum-exp form, the 4,500-start grid
alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}, then 4,000
bootstrap refits, on ``scaling/data/chinchilla_points.csv`` (234 points).

- ours, cold: the first `scaling.fit` call in this process (jit compilation included).
- ours, warm: the same call again (compiled solver reused); the solver runs on one thread
  per available core. "1 thread" pins it to one core, like scipy.
- scipy: ``scipy.optimize.minimize(method="L-BFGS-B")`` with default tolerances (Epoch's call), and
  again with ``ftol=1e-15, gtol=1e-12`` (the precision our solver converges to), one start at a
  time, with an exact analytic numpy gradient of the very same float64 objective (checked against
  `scaling.fitting.point_losses` at startup; ~1.8x faster per start than calling a jit-compiled
  ``jax.value_and_grad``, whose dispatch dominates at 234 points); bootstrap: the same
  multinomial resamples (same seed), each refitted from the same number of best distinct optima
  of scipy's own multistart. With ``--scipy-every K`` scipy runs on every K-th start and resample and its times
  are multiplied by K (reported as extrapolated).

Robust ratio (``--blocks B``, default 7): single runs on a loaded machine gave 27.6x, 44.7x and
980x, because the load changes between one side's run and the other's. So the multistart alone
(4,500 starts, warm) is timed in B blocks that alternate the two sides (ours then scipy, then
scipy then ours, ...); scipy runs every ``--block-every``-th start of the grid (a different
offset each block) and is scaled up. Each block gives a ratio of the two sides' wall times, taken
close together in time, and the report is their median with the range (min, max).

The timing goal: ours >= 30x faster than scipy (goal 100x) at the same or lower best objective.
Timings on a shared machine are noisy; the ratios are measured in one run, in wall-clock seconds
and in CPU seconds of this process (``time.process_time``, summed over threads; XLA's idle worker
threads add to our side, so the CPU ratio is only a cross-check). BLAS runs on one thread (set at
the top of this file).
"""

from __future__ import annotations

import os

# scipy's L-BFGS-B calls BLAS on vectors of 5: a multi-threaded OpenBLAS only adds spinning worker
# threads (twice the CPU seconds for the same wall time), so the baseline gets one BLAS thread, as a
# start-by-start loop should. Set before numpy is imported; our solver's 5 x 5 LAPACK calls are
# single-threaded either way.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from importlib import resources  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

import scaling  # noqa: E402
from scaling import fitting, laws  # noqa: E402


def load_points() -> pd.DataFrame:
    with resources.files("scaling").joinpath("data/chinchilla_points.csv").open() as fh:
        return pd.read_csv(fh)


def chinchilla_objective(df: pd.DataFrame, delta: float):
    """Analytic numpy value and gradient of the same objective, for scipy (faster per call than a jit-
    compiled JAX gradient, whose dispatch dominates at 234 points: about 2.8 vs 5 ms per start).

    Internal parameters z = (log E, log A, log B, alpha, beta), the order of ``laws.get("chinchilla")``;
    log L = LSE(log A - alpha log N, log B - beta log D, log E) (Besiroglu et al. 2024), Huber on
    log L - log y, weighted sum.
    """
    log_n, log_d = np.log(df["N"].to_numpy(np.float64)), np.log(df["D"].to_numpy(np.float64))
    log_y = np.log(df["loss"].to_numpy(np.float64))

    def value_and_grad(z, w):
        log_e, log_a, log_b, alpha, beta = z
        t1, t2 = log_a - alpha * log_n, log_b - beta * log_d
        m = np.maximum(np.maximum(t1, t2), log_e)
        e1, e2, e3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(log_e - m)
        s = e1 + e2 + e3
        r = m + np.log(s) - log_y
        inside = np.abs(r) <= delta
        f = np.sum(w * np.where(inside, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)))
        psi = w * np.where(inside, r, delta * np.sign(r)) / s
        q1, q2 = psi * e1, psi * e2
        return f, np.array([np.sum(psi * e3), q1.sum(), q2.sum(), -(q1 * log_n).sum(), -(q2 * log_d).sum()])

    return value_and_grad


def scipy_protocol(law, df: pd.DataFrame, starts: np.ndarray, counts: np.ndarray, bootstrap_starts: int,
                   delta: float, every: int, options: dict | None = None) -> dict:
    """Epoch's protocol with scipy, start by start. Returns times, best objective and optima."""
    value_and_grad = chinchilla_objective(df, delta)
    # the analytic objective is the engine's objective: check value and gradient at a few starts
    loss = fitting.point_losses(law, "huber_log")
    with jax.enable_x64(True):
        x = {c: jnp.asarray(df[c].to_numpy(np.float64)) for c in law.covariates}
        logy = jnp.asarray(np.log(df[law.target].to_numpy(np.float64)))
        reference = jax.jit(jax.value_and_grad(lambda z: jnp.sum(loss(z, x, logy, delta))))
        for z in starts[::997]:
            f_ref, g_ref = reference(jnp.asarray(z))
            f, g = value_and_grad(z, 1.0)
            assert np.isclose(f, float(f_ref), rtol=1e-12) and np.allclose(g, np.asarray(g_ref), rtol=1e-9, atol=1e-12)

    def run(z0, w):
        return minimize(lambda z: value_and_grad(z, w), z0, jac=True, method="L-BFGS-B", options=options)

    t0, c0 = time.perf_counter(), time.process_time()
    results = [run(z0, 1.0) for z0 in starts[::every]]
    t_multistart, c_multistart = (time.perf_counter() - t0) * every, (time.process_time() - c0) * every
    z = np.array([r.x for r in results])
    f = np.array([r.fun if np.isfinite(r.fun) else np.inf for r in results])
    ok = np.isfinite(f)
    seeds = fitting.distinct_optima(z, f, ok & np.array([r.success for r in results]), bootstrap_starts)
    if not len(seeds):
        seeds = np.array([int(np.argmin(f))])
    t0, c0 = time.perf_counter(), time.process_time()
    boot = [min((run(z[s], c) for s in seeds), key=lambda r: r.fun) for c in counts[::every]]
    t_bootstrap, c_bootstrap = (time.perf_counter() - t0) * every, (time.process_time() - c0) * every
    return {"multistart_s": t_multistart, "bootstrap_s": t_bootstrap, "cpu_s": c_multistart + c_bootstrap,
            "best": float(f.min()),
            "n_at_best": int((f <= f.min() * (1 + 1e-6)).sum()), "n_run": len(results),
            "n_success": int(sum(r.success for r in results)), "nit_median": float(np.median([r.nit for r in results])),
            "best_params": fitting.natural_values(law, z[np.argmin(f)]),
            "boot_nit_median": float(np.median([r.nit for r in boot])),
            "boot_params": fitting.natural_values(law, np.array([r.x for r in boot]))}


def alternating_blocks(law, df: pd.DataFrame, starts: np.ndarray, blocks: int, every: int) -> dict:
    """Multistart wall times of the two sides in ``blocks`` alternating blocks; ratios scipy / ours."""
    value_and_grad = chinchilla_objective(df, 1e-3)
    scaling.fit(law, df)   # compile outside the blocks

    def ours():
        t0 = time.perf_counter()
        scaling.fit(law, df)
        return time.perf_counter() - t0

    def scipy_side(offset):
        subset = starts[offset::every]
        t0 = time.perf_counter()
        for z0 in subset:
            minimize(lambda z: value_and_grad(z, 1.0), z0, jac=True, method="L-BFGS-B")
        return (time.perf_counter() - t0) * len(starts) / len(subset)

    rows = []
    for b in range(blocks):
        if b % 2 == 0:
            t_ours, t_scipy = ours(), scipy_side(b % every)
        else:
            t_scipy, t_ours = scipy_side(b % every), ours()
        rows.append((t_ours, t_scipy, t_scipy / t_ours))
        print(f"block {b + 1}/{blocks}: ours {t_ours:.2f} s, scipy {t_scipy:.1f} s (every {every}th start, scaled), "
              f"ratio {t_scipy / t_ours:.1f}x", flush=True)
    ratios = np.array([r[2] for r in rows])
    return {"ratios": ratios, "median": float(np.median(ratios)), "min": float(ratios.min()),
            "max": float(ratios.max()), "ours_s": [r[0] for r in rows], "scipy_s": [r[1] for r in rows]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", type=int, default=4000)
    parser.add_argument("--scipy-every", type=int, default=1, help="run scipy on every K-th start/resample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-tight", dest="tight", action="store_false",
                        help="skip the second scipy run with tolerances tightened to our precision")
    parser.add_argument("--blocks", type=int, default=7, help="alternating blocks for the robust ratio (0: none)")
    parser.add_argument("--block-every", type=int, default=30, help="scipy runs every K-th start in a block")
    parser.add_argument("--blocks-only", action="store_true", help="only the alternating blocks")
    args = parser.parse_args(argv)

    law = laws.get("chinchilla")
    df = load_points()
    starts = law.default_grid()
    print(f"Epoch protocol: {len(df)} points, {len(starts)} starts, {args.bootstrap} bootstrap resamples, "
          f"huber_log delta=1e-3; jax {jax.__version__}, {jax.devices()[0].platform}")

    if args.blocks_only:
        report_blocks(law, df, starts, args)
        return
    rows = []
    cores = fitting.available_cores()
    for label, threads in (("ours, cold", None), ("ours, warm", None), ("ours, warm, 1 thread", 1)):
        t0, c0 = time.perf_counter(), time.process_time()
        fitted = scaling.fit(law, df, bootstrap=args.bootstrap, seed=args.seed, threads=threads)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        info = fitted.fit
        label = label if threads == 1 or cores == 1 else f"{label}, {cores} threads"
        rows.append((label, info["time_s"]["multistart"], info["time_s"]["bootstrap"], total, cpu,
                     info["objective_value"], info["n_starts_at_best"], info["n_converged"]))
        print(f"{label}: {total:.2f} s, best {info['objective_value']:.12e}, at best {info['n_starts_at_best']}, "
              f"converged {info['n_converged']}/{info['n_starts']}, iterations median "
              f"{info['iterations_median']:.0f} max {info['iterations_max']}, bootstrap {info['bootstrap']}",
              flush=True)

    n = len(df)
    counts = np.random.default_rng(args.seed).multinomial(n, np.full(n, 1.0 / n), size=args.bootstrap).astype(float)
    nb = fitted.fit["bootstrap"]["starts_per_resample"]
    variants = [("scipy L-BFGS-B, defaults", None)]
    if args.tight:
        variants.append(("scipy L-BFGS-B, tight", {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 15000}))
    scipy_rows = []
    for label, options in variants:
        t0 = time.perf_counter()
        sp = scipy_protocol(law, df, starts, counts, nb, 1e-3, args.scipy_every, options)
        wall = time.perf_counter() - t0
        label += f" (x{args.scipy_every} extrapolated)" if args.scipy_every > 1 else ""
        scipy_rows.append((label, sp["multistart_s"], sp["bootstrap_s"], sp["multistart_s"] + sp["bootstrap_s"],
                           sp["cpu_s"], sp["best"], sp["n_at_best"], sp["n_success"]))
        print(f"{label}: wall {wall:.1f} s over {sp['n_run']} starts; iterations median {sp['nit_median']:.0f} "
              f"(bootstrap refits: {sp['boot_nit_median']:.0f}); "
              f"best params { {k: round(float(v), 5) for k, v in sp['best_params'].items()} }", flush=True)
        intervals = {k: tuple(round(float(q), 4) for q in np.percentile(v, [2.5, 97.5]))
                     for k, v in sp["boot_params"].items()}
        print(f"  95% intervals: {intervals}")
    rows += scipy_rows

    print()
    print(f"{'':44s} {'multistart s':>12s} {'bootstrap s':>11s} {'total s':>8s} {'CPU s':>7s} "
          f"{'best objective':>19s} {'at best':>8s} {'converged':>9s}")
    for label, tm, tb, tt, cpu, best, at_best, conv in rows:
        print(f"{label:44s} {tm:12.2f} {tb:11.2f} {tt:8.2f} {cpu:7.1f} {best:19.12e} {at_best:8d} {conv:9d}")
    print()
    ours = rows[:-len(scipy_rows)]
    print(f"{'speed-up (wall / CPU)':44s} " + "  ".join(f"{s[0].split(',')[1].strip():>17s}" for s in scipy_rows))
    for o in ours:
        print(f"{o[0]:44s} " + "  ".join(f"{s[3] / o[3]:7.1f}x /{s[4] / o[4]:6.1f}x" for s in scipy_rows))
    ours_best = rows[1][5]
    for s in scipy_rows:
        print(f"best objective: ours {ours_best:.13e} vs {s[0]} {s[5]:.13e} "
              f"({'ours lower or equal' if ours_best <= s[5] * (1 + 1e-12) else 'SCIPY LOWER'})")
    print("fitted (ours):", {k: round(v, 5) for k, v in fitted.params.items()})
    print("95% intervals (ours):", {k: tuple(round(v, 4) for v in fitted.interval(k)) for k in fitted.params})
    if args.blocks:
        report_blocks(law, df, starts, args)


def report_blocks(law, df, starts, args):
    print(f"\nalternating blocks: multistart of {len(starts)} starts, ours (warm, "
          f"{fitting.available_cores()} threads) vs scipy L-BFGS-B defaults", flush=True)
    out = alternating_blocks(law, df, starts, max(args.blocks, 1), args.block_every)
    print(f"multistart speed-up, median of {len(out['ratios'])} alternating blocks: {out['median']:.1f}x "
          f"(range {out['min']:.1f}x - {out['max']:.1f}x)")


if __name__ == "__main__":
    main()
