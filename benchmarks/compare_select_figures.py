"""The figures and numbers of docs/compare_and_select.md: recipe comparison, law selection by
extrapolation, two-step task prediction, on simulated data with known answers and on Gadre et
al. 2024's public runs.

    python -m benchmarks.compare_select_figures            # writes docs/*.png, prints the numbers
    python -m benchmarks.compare_select_figures --out /tmp  # elsewhere

Cost: ~6 CPU-min (most of it compiling the fits), single process.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import scaling  # noqa: E402
from scaling.laws.loss import chinchilla_frontier  # noqa: E402

REF = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
TASK = {"E": 0.6, "A": 60.0, "B": 300.0, "alpha": 0.3, "beta": 0.3}
SIGMOID = {"a": 0.7, "L0": 1.0, "k": -8.0, "b": 0.25}


def isoflop_grid(params, seed, m_N=1.0, m_D=1.0, budgets=np.geomspace(1e18, 1e21, 5), sizes=6, noise=0.005):
    """The same simulated grid as tests/test_compare_select.py."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        n_opt = chinchilla_frontier(params, C=C)["N"]
        for N in n_opt * np.geomspace(0.25, 4.0, sizes):
            D = C / (6 * N)
            loss = params["E"] + params["A"] * (m_N * N) ** -params["alpha"] + params["B"] * (m_D * D) ** -params["beta"]
            rows.append((N, D, C, loss * np.exp(noise * rng.standard_normal()), noise * loss))
    return pd.DataFrame(rows, columns=["N", "D", "C", "loss", "sem"])


def ladder(seed, accuracy):
    rng = np.random.default_rng(seed)
    rows = []
    for N in np.geomspace(2e7, 1.5e9, 6):
        for tpp in (5, 10, 20, 40):
            D = tpp * N
            loss = (TASK["E"] + TASK["A"] * N ** -TASK["alpha"] + TASK["B"] * D ** -TASK["beta"]) * np.exp(
                0.01 * rng.standard_normal())
            rows.append((N, D, loss, rng.binomial(1000, accuracy(loss)) / 1000))
    return pd.DataFrame(rows, columns=["N", "D", "task_loss", "accuracy"])


def _band(b):
    return f"{float(b.value):.3g} [{float(b.lower):.3g}, {float(b.upper):.3g}]"


def main(out: str) -> None:
    t_all = time.perf_counter()
    warnings.simplefilter("ignore")
    # 1. recipe comparison, simulated: b = a with 2x effective N and D -> multiplier 4 at every C
    a, b = isoflop_grid(REF, 0), isoflop_grid(REF, 1, m_N=2.0, m_D=2.0)
    for form in ("efficiency", "free"):
        t = time.perf_counter()
        comp = scaling.compare(a, b, names=("base", "better"), form=form, bootstrap=200)
        print(f"[compare, simulated m=4, form={form}] ({time.perf_counter() - t:.0f} s)")
        for C in (1e18, 1e21, 1e23):
            print(f"  m({C:.0e}) = {_band(comp.compute_multiplier(C))}")
        print(f"  m_N(1e9) = {_band(comp.parameter_multiplier(1e9))}  m_D(1e11) = {_band(comp.data_multiplier(1e11))}")
        d = comp.diagnostics
        print(f"  reduced chi2 = {d['reduced_chi2']:.2f} (dof {d['dof']}, p = {d['p_value']:.2f})")
    # crossover, simulated
    b2 = dict(REF, A=10000.0, B=60000.0, alpha=0.5, beta=0.5)
    budgets = np.geomspace(1e18, 1e22, 5)
    ta, tb = isoflop_grid(REF, 2, budgets=budgets), isoflop_grid(b2, 3, budgets=budgets)
    fa, fb = chinchilla_frontier(REF), chinchilla_frontier(b2)
    true_cross = 6 * np.exp((np.log(fa["loss_coefficient"]) - np.log(fb["loss_coefficient"])) / (fa["gamma"] - fb["gamma"]))
    comp = scaling.compare(ta, tb, names=("standard", "steeper"), bootstrap=200)
    cross = comp.crossover()
    print(f"[compare, simulated crossover] true {true_cross:.3g}; fitted {cross['C']:.3g} "
          f"[{cross['lower']:.3g}, {cross['upper']:.3g}] ({cross['fraction_of_draws']:.0%} of draws cross)")
    scaling.plots.plot_comparison(comp, (ta, tb)).savefig(os.path.join(out, "compare_crossover.png"), dpi=110)

    # Gadre et al.'s runs: RefinedWeb vs C4 as pretraining data, both evaluated on Paloma's RedPajama split
    g = scaling.published.dataset("overtraining_gadre2024")
    col = {"loss": "loss_paloma_redpajama"}
    rw, c4 = g[g["dataset"] == "rw_original"], g[g["dataset"] == "c4_original"]
    t = time.perf_counter()
    comp = scaling.compare(c4, rw, names=("C4", "RefinedWeb"), columns=col, bootstrap=200)
    print(f"[compare, Gadre et al. C4 -> RefinedWeb, loss on Paloma RedPajama] ({time.perf_counter() - t:.0f} s)")
    print(comp.summary().to_string(index=False))
    print("  crossover", comp.crossover())
    print("  diagnostics", comp.diagnostics)
    scaling.plots.plot_comparison(comp, (c4.rename(columns={"loss_paloma_redpajama": "loss"}),
                                         rw.rename(columns={"loss_paloma_redpajama": "loss"}))
                                  ).savefig(os.path.join(out, "compare_gadre_c4_rw.png"), dpi=110)

    # 2. selection
    true = {"E": 1.8, "A": 400.0, "B": 4000.0, "alpha": 0.25, "beta": 0.5}
    df = isoflop_grid(true, 5, budgets=np.geomspace(1e18, 1e21, 6), sizes=5, noise=0.002)
    sel = scaling.select(["overtraining", "kaplan", "chinchilla"], df, holdout="budget", splits=3)
    print("[select, simulated chinchilla with alpha=0.25, beta=0.5, 3 held-out budgets]")
    print(sel.markdown())
    for dataset in ("rw_original", "c4_original", "rpj"):
        sel = scaling.select(["chinchilla", "overtraining", "kaplan"], g[g["dataset"] == dataset], holdout="size",
                             splits=2, columns={"loss": "loss_c4_val"})
        print(f"[select, Gadre et al. {dataset}, C4 val loss, 2 largest sizes held out]")
        print(sel.markdown())
        if dataset == "rw_original":
            scaling.plots.plot_selection(sel).figure.savefig(os.path.join(out, "select_gadre_rw.png"), dpi=110)

    # 3. two-step task prediction
    sigmoid = lambda L: SIGMOID["a"] / (1 + np.exp(-SIGMOID["k"] * (L - SIGMOID["L0"]))) + SIGMOID["b"]  # noqa: E731
    lad = ladder(0, sigmoid)
    tp = scaling.fit_two_step(lad, bootstrap=200)
    N, D = 1e10, 2e11
    true_loss = TASK["E"] + TASK["A"] * N ** -TASK["alpha"] + TASK["B"] * D ** -TASK["beta"]
    print(f"[two-step, simulated] ladder max accuracy {lad['accuracy'].max():.3f}; at N=1e10, D=2e11: "
          f"task loss true {true_loss:.3f} predicted {_band(tp.predict_loss(N, D, level=0.95))}; accuracy true "
          f"{sigmoid(true_loss):.3f} predicted {_band(tp.predict(N, D, level=0.95))}; step 2 alone at the "
          f"predicted loss {_band(tp.predict_from_loss(float(tp.predict_loss(N, D)), level=0.95))}")
    scaling.plots.plot_two_step(tp, lad, targets=[(N, D, sigmoid(true_loss))]).figure.savefig(
        os.path.join(out, "two_step_sigmoid.png"), dpi=110)
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs"))
    main(parser.parse_args().out)
