"""``isoflop_parabola``: loss as a parabola in log N along one isoFLOP curve (Hoffmann et al. 2022, Approach 2).

    loss = c0 + c1 x + c2 x^2,  x = ln(N / N_ref);  N_opt = N_ref exp(-c1 / (2 c2)),  L_opt = c0 - c1^2 / (4 c2)

Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv:2203.15556,
Sec. 3.2: "We fit a parabola to each IsoFLOPs curve". `scaling.analysis.isoflop` fits one per
budget (least squares, no log: ``objective="mse"``).
"""

from __future__ import annotations

from scaling.laws.law import Law, Param, register

HOFFMANN_CITATION = ("Hoffmann et al. 2022, 'Training Compute-Optimal Large Language Models', "
                     "arXiv:2203.15556, Sec. 3")


def _parabola(p, x):
    u = x["x"]
    return p["c0"] + p["c1"] * u + p["c2"] * u * u


PARABOLA = register(Law(
    name="isoflop_parabola",
    objective_source='least squares on loss along one isoFLOP curve (Hoffmann et al. 2022, Approach 2)',
    params=(Param("c0", doc="loss at N = N_ref"), Param("c1", doc="slope in ln N"),
            Param("c2", doc="curvature in ln N (> 0 for a minimum)")),
    covariates=("x",),
    target="loss",
    fn=_parabola,
    objective="mse",
    positive=(),
    formula="loss = c0 + c1 x + c2 x^2,  x = ln(N / N_ref);  N_opt = N_ref exp(-c1 / (2 c2)),  "
            "L_opt = c0 - c1^2 / (4 c2)",
    citation=HOFFMANN_CITATION + ".2 ('We fit a parabola to each IsoFLOPs curve')",
))
