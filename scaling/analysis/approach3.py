"""Approach 3 of Hoffmann et al. 2022 (Sec. 3.3, Eqs. 2 and 4): fit L(N, D) to every run, then its frontier.

``L(N, D) = E + A/N^alpha + B/D^beta`` is fitted with `scaling.fit` (Huber, delta = 1e-3, on log
loss); minimizing it under ``C = k N D`` gives the frontier in closed form
(`scaling.laws.loss.chinchilla_frontier`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from scaling import flops
from scaling.analysis.power_laws import exponents, tokens_per_param
from scaling.analysis.results import APPROACH_NAMES, ApproachResult, predict_band
from scaling.analysis.runs import check_common, prepare_runs
from scaling.fitting.fitted import FittedLaw
from scaling.fitting.fitter import fit
from scaling.laws.loss import chinchilla_frontier
from scaling.laws.parabola import HOFFMANN_CITATION


def approach3(runs, *, columns: Mapping[str, str] | None = None, flop_convention: str | None = None,
              k: float | None = None, bootstrap: int = 1000, seed: int = 0, level: float = 0.95,
              starts=None, delta: float = 1e-3) -> ApproachResult:
    """Approach 3: fit Chinchilla's L(N, D) to every completed run with `scaling.fit`, then its frontier.

    Huber (``delta``) on log loss from ``starts`` (default: the law's 4,500-start grid, Epoch AI's
    protocol; pass a smaller grid for speed). The frontier is exact (Hoffmann et al. Eq. 4):
    ``N_opt = G k^-a C^a``, ``D_opt = G^-1 k^-b C^b``, ``L_opt = E + (A G^-alpha + B G^beta) k^gamma C^-gamma``
    with a = beta/(alpha+beta), b = alpha/(alpha+beta), gamma = alpha beta/(alpha+beta); these are
    returned as `pure_power_law` / `power_law` FittedLaws whose samples are the transformed
    bootstrap draws of the parametric fit. A ``budget`` column is optional (it sets the C range).
    """
    check_common(bootstrap, level)
    k_val, conv = flops.convention_k(flop_convention, k)
    prep = prepare_runs(runs, columns, need_budget=False)
    df = prep.df
    data = {"N": df["n_params"].to_numpy(), "D": df["tokens"].to_numpy(), "loss": df["eval_loss"].to_numpy()}
    param = fit("chinchilla", data, bootstrap=int(bootstrap), seed=seed, starts=starts, delta=delta,
                        flop_convention=flop_convention, k=k,
                        provenance={"notes": "Approach 3 of the isoFLOP analysis (scaling.isoflop)"})
    if "budget" in df:
        budgets = np.sort(df["budget"].unique())
    else:  # the runs' compute, C = flops or k N D, to 6 significant digits
        c = df["flops"].to_numpy() if "flops" in df else k_val * data["N"] * data["D"]
        budgets = np.unique(10 ** np.round(np.log10(c), 6))
    c_range = [float(budgets.min()), float(budgets.max())]

    def frontier(p):
        f = chinchilla_frontier(p)
        a, b, g, gamma = f["a"], f["b"], f["G"], f["gamma"]
        return ({"A": g * k_val ** -a, "b": a}, {"A": k_val ** -b / g, "b": b},
                {"E": p["E"], "A": f["loss_coefficient"] * k_val ** gamma, "alpha": gamma})

    if not (param.params["alpha"] > 0 and param.params["beta"] > 0):
        raise ValueError(f"Approach 3: the fitted exponents alpha = {param.params['alpha']:.4g}, beta = "
                         f"{param.params['beta']:.4g} are not both > 0, so L(N, D) has no compute-optimal "
                         "frontier; the grid does not constrain the parametric law (add budgets or sizes)")
    point = frontier(param.params)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):   # bad draws are dropped below
        sampled = frontier(param.samples) if param.samples is not None else (None, None, None)
    laws = []
    for name, law_name, pp, ss, eq in (
            ("N_opt", "pure_power_law", point[0], sampled[0], "N_opt = G (C/k)^a, a = beta/(alpha+beta)"),
            ("D_opt", "pure_power_law", point[1], sampled[1], "D_opt = G^-1 (C/k)^b, b = alpha/(alpha+beta)"),
            ("loss_opt", "power_law", point[2], sampled[2],
             "L_opt = E + (A G^-alpha + B G^beta) (C/k)^-gamma, gamma = alpha beta/(alpha+beta)")):
        if ss is not None:
            keep = np.all([np.isfinite(v) for v in ss.values()], axis=0)
            keep &= ss["A"] > 0
            ss = {n: v[keep] for n, v in ss.items()}
        laws.append(FittedLaw(
            law_name, {n: float(v) for n, v in pp.items()}, samples=ss, flop_convention=flop_convention, k=k,
            data={"n_points": int(len(df)), "ranges": {"x": c_range}, "target": name},
            fit={"objective": "derived from the chinchilla fit", "bootstrap": (param.fit or {}).get("bootstrap")},
            provenance={"citation": HOFFMANN_CITATION + ".3, Eq. 4", "equation": eq,
                        "notes": f"Approach 3 frontier of the fitted L(N, D) (G = (alpha A / (beta B))^(1/(alpha+beta))); "
                                 f"x = compute C in FLOPs ({conv})"}))
    n_law, d_law, l_law = laws
    ex = exponents(n_law, d_law, None, level)
    for name in ("alpha", "beta", "E"):
        ex.extra[name] = {"value": param.params[name],
                          "interval": param.interval(name, level) if param.samples is not None else None}
    ex.extra["loss_exponent"] = {"law": "power_law", "param": "alpha", "value": l_law.params["alpha"],
                                 "interval": l_law.interval("alpha", level) if l_law.samples is not None else None}
    ex.extra["relations"] = "a = beta/(alpha+beta), b = alpha/(alpha+beta) (Hoffmann et al. 2022, Eq. 4)"
    points = {"C": budgets, "N_opt": predict_band(n_law, budgets)[0], "D_opt": predict_band(d_law, budgets)[0],
              "loss_opt": predict_band(l_law, budgets)[0]}
    tpp = tokens_per_param(n_law, d_law, budgets, level)
    notes = []
    if param.fit and param.fit.get("n_starts_at_best", 0) < 2:
        notes.append("only one start reached the best objective: the optimum may be poorly determined")
    return ApproachResult(3, APPROACH_NAMES[3], conv, n_law, d_law, l_law, ex, points, tpp,
                          parametric=param, notes=notes, bootstrap=(param.fit or {}).get("bootstrap"))


