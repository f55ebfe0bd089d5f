"""What a fit is unsure about: parameters at a bound or a domain edge, intervals that span decades.

`scaling.fit` records these in ``fit["diagnostics"]`` (saved in the fitted-law file) and warns;
`FittedLaw.diagnostics()` returns them (recomputed from the parameters and intervals for a fit made
before they were recorded, e.g. a published table) and `FittedLaw.diagnostics_markdown()` writes the
line a study report prints beside the fit. Each entry is a dict::

    {"param": name, "kind": "edge" | "bound" | "wide_interval" | "paths", "message": str}

- ``edge``: a ``log``, ``lower`` or ``upper`` parameter whose internal value passed `EDGE` (e^23 ~
  1e10 from its reference: the parameter ran towards 0, a one-sided bound, or infinity; the data do
  not bound it).
- ``bound``: a ``bounded`` parameter within `BOUND_RTOL` of its range's width from a bound (the
  optimum lies on the constraint, not inside it).
- ``wide_interval``: a 95% interval with both ends of one sign whose ratio is at least
  ``10 ** WIDE_DECADES`` (e.g. E = 5e-7 [8e-17, 0.01]): the parameter is barely identified, and
  quantities derived from it (compute optima, turning points) are unreliable.
- ``paths``: the continuation's optimum was beaten by a direct refinement (`scaling.fit`); the
  better one is kept, the entry says by how much.
"""

from __future__ import annotations

import math

import numpy as np

EDGE = 23.0           # |internal value| of a log/lower/upper parameter past which it counts as unbounded
BOUND_RTOL = 1e-6     # a bounded parameter this close (fraction of upper - lower) to a bound is at it
WIDE_DECADES = 2.0    # an interval whose ends differ by this many decades spans orders of magnitude
ONE_SIDED = ("log", "lower", "upper")


def at_edges(law, params) -> list[dict]:
    """``edge`` and ``bound`` entries for natural ``params`` of ``law`` (see the module docstring)."""
    out = []
    for p in law.params:
        value = float(params[p.name])
        if p.transform in ONE_SIDED:
            z = float(p.to_internal(value)) if p.contains(value) else math.inf
            if abs(z) >= EDGE:
                if p.transform == "log":
                    where = "0" if z < 0 else "infinity"
                elif p.transform == "lower":
                    where = f"its lower bound {p.lower:g}" if z < 0 else "infinity"
                else:
                    where = f"its upper bound {p.upper:g}" if z < 0 else "-infinity"
                out.append({"param": p.name, "kind": "edge",
                            "message": f"parameter {p.name!r} = {value:.4g} ran to the edge of its {p.transform} "
                                       f"domain (towards {where}; |internal value| >= {EDGE:g}): the data do "
                                       "not bound it"})
        elif p.transform == "bounded":
            width = p.upper - p.lower
            for side, bound in (("lower", p.lower), ("upper", p.upper)):
                if abs(value - bound) <= BOUND_RTOL * width:
                    out.append({"param": p.name, "kind": "bound",
                                "message": f"parameter {p.name!r} = {value:.6g} is at its {side} bound {bound:g}: "
                                           "the optimum lies on the constraint"})
    return out


def wide_intervals(intervals: dict, level: float = 0.95) -> list[dict]:
    """``wide_interval`` entries for ``{param: (lo, hi) | None}`` (see the module docstring)."""
    out = []
    for name, iv in intervals.items():
        if iv is None:
            continue
        lo, hi = (float(v) for v in iv)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo * hi <= 0:
            continue
        decades = abs(math.log10(abs(hi) / abs(lo)))
        if decades >= WIDE_DECADES:
            out.append({"param": name, "kind": "wide_interval",
                        "message": f"parameter {name!r}: its {round(100 * level)}% interval [{lo:.3g}, {hi:.3g}] "
                                   f"spans {decades:.1f} orders of magnitude: barely identified, and what is "
                                   "derived from it is unreliable"})
    return out


def markdown(law_name: str, entries: list[dict]) -> str:
    """One markdown line for a report: ``""`` when the fit has nothing to say, else a warning line."""
    if not entries:
        return ""
    parts = "; ".join(e["message"] for e in entries)
    return f"**Warning ({law_name}: unreliable fit):** {parts}. Quantities derived from this fit are unreliable."
