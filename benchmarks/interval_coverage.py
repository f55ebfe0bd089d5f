"""Do the bootstrap intervals of `scaling.fit` cover the truth? One row per registered law.

    python -m benchmarks.interval_coverage                         # every law, 100 draws each
    python -m benchmarks.interval_coverage --laws chinchilla --draws 200 --starts grid

For every law that has ``reference`` parameters and a ``design``: draw ``--draws`` datasets of n
points (``scaling.fitting.simulate``: the law's own ``simulate`` when it has one, else the
prediction times lognormal noise ``exp(noise * N(0, 1))``), fit each with the law's default
objective and ``--bootstrap`` resamples, and count how often the 95% interval of each
``--methods`` (``FittedLaw.interval(..., method=...)``: percentile, bc, bca, and profile for the
maximum-likelihood laws; the same fits for all)
contains the true value, per parameter. A calibrated interval covers 95% of the time; with D draws the
binomial standard error of a coverage near 0.95 is sqrt(0.95 * 0.05 / D) (0.022 for D = 100).

``--starts reference`` (default) starts each fit at the true parameters, which isolates the
interval from multistart luck and keeps the run to minutes; ``--starts grid`` uses the law's full
default grid, as a user would.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import scaling
from scaling import fitted as fitted_lib
from scaling import fitting, laws


def coverage(law, *, draws: int, bootstrap: int, n_points: int, noise: float, starts: str, seed: int = 0,
             methods=("percentile", "bca")) -> dict:
    """Coverage per method: ``{method: {"per_param": {name: fraction}, "mean": fraction}}`` and run info."""
    truth = dict(law.reference)
    hits, failures, t0 = {m: [] for m in methods}, 0, time.perf_counter()
    start = {k: [v] for k, v in truth.items()} if starts == "reference" else None
    for d in range(draws):
        data = fitting.simulate(law, n_points, noise=noise, seed=seed * 100_000 + d)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted = scaling.fit(law, data, starts=start, bootstrap=bootstrap, seed=d)
        except ValueError:
            failures += 1
            continue
        for m in methods:
            if m == "profile" and fitted.profile is None:
                continue                                  # not a maximum-likelihood fit
            bounds = [fitted.interval(name, 0.95, method=m) for name in truth]
            hits[m].append([lo <= value <= hi for (lo, hi), value in zip(bounds, truth.values())])
    out = {"fits": draws - failures, "failures": failures, "seconds": time.perf_counter() - t0,
           "objective": law.objective if law.nll is None else "nll"}
    for m in methods:
        h = np.array(hits[m], dtype=float).reshape(-1, len(truth))
        out[m] = {"per_param": dict(zip(truth, h.mean(axis=0))) if len(h) else {},
                  "mean": float(h.mean()) if len(h) else float("nan")}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--laws", default="",
                        help="comma-separated law names (default: every law with reference and design)")
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--points", type=int, default=0, help="points per dataset (default: max(40, 10 * params))")
    parser.add_argument("--noise", type=float, default=0.01, help="lognormal noise sd for laws without simulate")
    parser.add_argument("--starts", choices=("reference", "grid"), default="reference")
    parser.add_argument("--methods", default="percentile,bca,profile",
                        help=f"comma-separated interval methods of {fitted_lib.INTERVAL_METHODS}")
    args = parser.parse_args(argv)
    methods = tuple(args.methods.split(","))
    if not set(methods) <= set(fitted_lib.INTERVAL_METHODS):
        parser.error(f"--methods must be among {fitted_lib.INTERVAL_METHODS}, got {args.methods!r}")

    names = [n for n in (args.laws.split(",") if args.laws else laws.names())
             if laws.get(n).reference is not None and laws.get(n).design is not None]
    print(f"{args.draws} draws x {args.bootstrap} bootstrap resamples per law, noise {args.noise}, "
          f"starts: {args.starts}")
    print(f"{'law':22s} {'objective':10s} {'n':>4s} {'fits':>5s} {'method':>10s} {'mean':>6s}  "
          "per-parameter coverage of the 95% interval")
    for name in names:
        law = laws.get(name)
        n_points = args.points or max(40, 10 * len(law.params))
        r = coverage(law, draws=args.draws, bootstrap=args.bootstrap, n_points=n_points, noise=args.noise,
                     starts=args.starts, methods=methods)
        extra = f"  ({r['failures']} fits failed)" if r["failures"] else ""
        shown = [m for m in methods if r[m]["per_param"]]
        for i, m in enumerate(shown):
            per = "  ".join(f"{k}={v:.2f}" for k, v in r[m]["per_param"].items())
            head = f"{name:22s} {r['objective']:10s} {n_points:4d} {r['fits']:5d}" if i == 0 else " " * 43
            tail = f"{extra}  [{r['seconds']:.0f} s]" if i == len(shown) - 1 else ""
            print(f"{head} {m:>10s} {r[m]['mean']:6.3f}  {per}{tail}", flush=True)


if __name__ == "__main__":
    main()
