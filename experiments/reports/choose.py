"""Two report sections a study declares on the report kit (`experiments.reports.kit`): which law
to trust (`Select`, `scaling.select`) and which of two recipes is better (`Compare`,
`scaling.compare`).

    REPORT = Report(..., selects=[Select("loss", {"chinchilla": "chinchilla", "kaplan": "kaplan"},
                                         used="chinchilla", used_for="the loss fit",
                                         columns={"N": "n_params", "D": "tokens", "loss": "eval_loss"})],
                    compares=[Compare("wsd_vs_cosine", ("cosine", "wsd"), by="schedule",
                                      columns={"N": "n_params", "D": "tokens", "loss": "eval_loss"})])

**Law selection** ("Law selection: {what}" in report.md, ``select_<name>.json``,
``plots/select_<name>.png``): every candidate refitted on each split that holds out one of the
largest levels of ``holdout`` (budget, size, tokens or a column) and trains on the smaller ones,
ranked by extrapolation error (`scaling.analysis.select`); then the law the report used (``used``)
and whether it is the one ranked first. A table with fewer levels than ``splits +
min_train_levels`` is held out on fewer splits (down to one split trained on two levels), and the
section says so; with fewer than three levels the section says why it was not run.

**Recipe comparison** ("Recipe comparison: {what}", ``compare_<name>.json``,
``plots/compare_<name>.png``): two tables of runs (``table`` and ``table_b``, or one table split
by the label column ``by`` whose values are ``names``) fitted jointly with a shared irreducible
loss (`scaling.analysis.compare`); the compute multiplier of ``names[1]`` over ``names[0]`` with
its 95% bootstrap band over compute, the crossover, the parameter and data multipliers and the
residual diagnostics.

This module does not import the kit (the kit imports it); `run_select` and `run_compare` take
the tables, so reports that are not on the kit (the isoFLOP report) use them too.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _band(lo, hi, digits: int = 3) -> str:
    return "n/a" if lo is None or hi is None else f"[{_fmt(float(lo), digits)}, {_fmt(float(hi), digits)}]"


def _finite(value):
    """JSON-safe: non-finite floats -> None, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# ---------------------------------------------------------------------------------- law selection


@dataclasses.dataclass(frozen=True)
class Select:
    """A law-selection section (module docstring).

    name: the selection's name (files). candidates: ``{label: law name | Law | {"law": ...,
    **fit kwargs}}`` (`scaling.select`; ``"starts": "coarse"``: `coarse_starts`). used: the label of the law the report's fits use (or
    ``f(analysis) -> label``); used_for: what the report uses it for. table / rows: as a kit
    `Fit` (``"results"``, a measure's name or ``f(context) -> DataFrame``; ``rows(table) ->
    table``). holdout, splits, min_train_levels, metric, columns, k: `scaling.select`'s.
    options: fit kwargs for every candidate (``starts``, ``max_iter``, ...). what: the title.
    after: the title of the declared section this one follows (default: after all of them).
    """

    name: str
    candidates: Mapping[str, Any]
    used: str | Callable[[Any], str]
    used_for: str = "its fits"
    table: Any = "results"
    rows: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    holdout: str = "budget"
    splits: int = 2
    min_train_levels: int = 3
    metric: str = "median_abs_rel"
    columns: Mapping[str, str] = dataclasses.field(default_factory=dict)
    k: float = 6.0
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    what: str = ""
    after: str | None = None


def _levels(spec: Select, data) -> int:
    from scaling.analysis.select import _levels as levels_of

    return len(np.unique(levels_of(data, spec.holdout, dict(spec.columns), spec.k)[0]))


def coarse_starts(law) -> dict:
    """Every other value of each parameter's default grid (chinchilla: 243 starts in place of
    4,500, over the same span), as the isoFLOP report's Approach 3 uses."""
    import itertools

    import scaling

    law = scaling.laws.get(law)
    rows = list(itertools.product(*[p.grid[::2] for p in law.params]))
    return {name: np.array([r[i] for r in rows], np.float64) for i, name in enumerate(law.param_names)}


def _candidates(spec: Select) -> dict:
    """The candidates, with ``"starts": "coarse"`` made into `coarse_starts`."""
    out = {}
    for label, c in spec.candidates.items():
        if isinstance(c, Mapping) and isinstance(c.get("starts"), str):
            if c["starts"] != "coarse":
                raise ValueError(f"Select {spec.name!r}: candidate {label!r} starts={c['starts']!r}: 'coarse' or values")
            c = {**c, "starts": coarse_starts(c["law"])}
        out[label] = c
    return out


def run_select(spec: Select, data: pd.DataFrame) -> dict:
    """``{"selection": Selection | None, "skipped": reason | None, "reduced": note | None}``."""
    import scaling

    try:
        n = _levels(spec, data)
    except ValueError as err:
        return {"selection": None, "skipped": str(err), "reduced": None}
    splits, train = spec.splits, spec.min_train_levels
    reduced = None
    if n < splits + train:
        if n < 3:
            return {"selection": None, "reduced": None,
                    "skipped": f"{n} distinct level(s) of {spec.holdout} in the table; a split needs 2 to train on and 1 to hold out"}
        splits = max(1, n - train)
        train = n - splits
        reduced = (f"the table has {n} levels of {spec.holdout}, fewer than the {spec.splits} + "
                   f"{spec.min_train_levels} asked for: {splits} split(s), each trained on at least {train} levels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sel = scaling.select(_candidates(spec), data, spec.holdout, splits=splits, min_train_levels=train,
                                 metric=spec.metric, columns=dict(spec.columns) or None, k=spec.k,
                                 **dict(spec.options))
    except ValueError as err:
        return {"selection": None, "skipped": str(err), "reduced": reduced}
    return {"selection": sel, "skipped": None, "reduced": reduced}


def select_lines(spec: Select, result: dict, used: str) -> list[str]:
    """The section's Markdown lines."""
    sel = result["selection"]
    if sel is None:
        return [f"Not run: {result['skipped']}.", "",
                f"This report uses **{used}** for {spec.used_for} (not checked by extrapolation here)."]
    lines = [f"Each candidate refitted on every split that holds out one of the largest levels of "
             f"{spec.holdout} and trains on the smaller levels only, then asked for the held-out rows; "
             f"score: the median over splits of the {sel.metric.replace('_', ' ')} (min and max over "
             "splits beside it; bias > 0 over-predicts; failed: splits whose fit failed, scored as an "
             "infinite error)." + (f" Note: {result['reduced']}." if result["reduced"] else ""), "",
             *sel.markdown().splitlines()]
    if used == sel.chosen:
        lines += ["", f"This report uses **{used}** for {spec.used_for}: the law that extrapolates best here."]
    else:
        rank = sel.table.set_index("law")["rank"].get(used)
        lines += ["", f"This report uses **{used}** for {spec.used_for}"
                  + (f", ranked {rank} of {len(sel.table)} here: " if rank is not None else ": ")
                  + f"**{sel.chosen}** extrapolates better on these runs; read what the report derives "
                    f"from {used} with that in mind."]
    return lines


def select_json(result: dict, used: str) -> dict:
    sel = result["selection"]
    return _finite({"used": used, "skipped": result["skipped"], "reduced": result["reduced"],
                    **(sel.to_dict() if sel is not None else {})})


def select_figure(result: dict):
    from scaling.plots import plot_selection

    if result["selection"] is None:
        raise ValueError(f"no selection: {result['skipped']}")
    ax = plot_selection(result["selection"])
    ax.figure.tight_layout()
    return ax.figure


# ---------------------------------------------------------------------------------- recipe comparison


@dataclasses.dataclass(frozen=True)
class Compare:
    """A recipe-comparison section (module docstring).

    name: files. names: the two recipes, (a, b): multipliers are of b over a. table: recipe a's
    table (``"results"``, a measure's name or ``f(context) -> DataFrame``), or both recipes'
    when ``by`` is given; table_b: recipe b's. by: a label column of ``table`` whose values
    ``names[0]`` and ``names[1]`` pick the two recipes' rows. rows: ``rows(table) -> table`` on
    each table (say, the completed runs of one size range). columns: N, D (or C), loss, sem ->
    column names. form, k, bootstrap, options: `scaling.compare`'s. what: the title. after: as
    `Select`'s.
    """

    name: str
    names: tuple[str, str]
    table: Any = "results"
    table_b: Any = None
    by: str | None = None
    rows: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    columns: Mapping[str, str] = dataclasses.field(default_factory=dict)
    form: str = "free"
    k: float = 6.0
    bootstrap: int = 200
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    what: str = ""
    after: str | None = None

    def __post_init__(self):
        if (self.by is None) == (self.table_b is None):
            raise ValueError(f"Compare {self.name!r}: give either table_b (two tables) or by (a label column "
                             "splitting one table), not both or neither")


def split_tables(spec: Compare, table_a: pd.DataFrame, table_b: pd.DataFrame | None) -> tuple:
    """The two recipes' tables (``by`` splits ``table_a`` when given), each through ``rows``."""
    if spec.by is not None:
        if spec.by not in table_a:
            raise ValueError(f"Compare {spec.name!r}: no column {spec.by!r} to split the table by "
                             f"(columns: {list(table_a.columns)})")
        labels = table_a[spec.by].astype(str)
        table_a, table_b = table_a[labels == str(spec.names[0])], table_a[labels == str(spec.names[1])]
    out = []
    for t in (table_a, table_b):
        t = spec.rows(t) if spec.rows is not None else t
        out.append(t.reset_index(drop=True))
    return tuple(out)


def run_compare(spec: Compare, table_a: pd.DataFrame, table_b: pd.DataFrame) -> dict:
    """``{"comparison": Comparison | None, "skipped": reason | None, "tables": (a, b)}``."""
    import scaling

    tables = (table_a, table_b)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            comp = scaling.compare(table_a, table_b, names=tuple(map(str, spec.names)), form=spec.form,
                                   columns=dict(spec.columns) or None, k=spec.k, bootstrap=spec.bootstrap,
                                   **dict(spec.options))
    except ValueError as err:
        return {"comparison": None, "skipped": str(err), "tables": tables, "columns": dict(spec.columns)}
    return {"comparison": comp, "skipped": None, "tables": tables, "columns": dict(spec.columns)}


FORM_TEXT = {"free": "each recipe its own A, B, alpha, beta: the multiplier may change with compute",
             "efficiency": "recipe b is recipe a with m_N times the parameters and m_D times the tokens: "
                           "a constant multiplier",
             "parameters": "recipe b is recipe a with m_N times the parameters and the same tokens: a constant "
                           "multiplier"}


def compare_lines(result: dict) -> list[str]:
    """The section's Markdown lines."""
    comp = result["comparison"]
    if comp is None:
        return [f"Not run: {result['skipped']}."]
    a, b = comp.names
    n_a, n_b = (len(t) for t in result["tables"])
    lines = [f"`scaling.compare`: {n_a} {a} runs and {n_b} {b} runs fitted jointly with a shared irreducible "
             f"loss E (form `{comp.form}`: {FORM_TEXT[comp.form]}). Compute multiplier of {b} over {a}: how "
             f"many times the compute {a} needs to reach the loss {b} reaches with C (> 1: {b} is better), on "
             f"each recipe's compute-optimal frontier under C = {comp.k:g} N D; 95% bootstrap bands.", "",
             f"| C (FLOPs) | multiplier | 95% | L*_{a} | L*_{b} |", "|---|---|---|---|---|"]
    table = comp.summary()
    for r in table.to_dict("records"):
        mark = " (beyond the runs)" if r["extrapolated"] else ""
        lines.append(f"| {_fmt(r['C'])}{mark} | {_fmt(r['multiplier'])} | {_band(r['lower'], r['upper'])} | "
                     f"{_fmt(r[f'loss_{a}'], 4)} | {_fmt(r[f'loss_{b}'], 4)} |")
    cross = comp.crossover()
    lo, hi = cross["C_range"]
    if comp.form in ("efficiency", "parameters"):
        lines += ["", f"Crossover: none (the {comp.form} form's multiplier is the same at every compute)."]
    elif cross["C"] is None:
        frac = cross["fraction_of_draws"]
        lines += ["", f"Crossover: the fitted frontiers do not cross between {_fmt(lo)} and {_fmt(hi)} FLOPs"
                  + (f" ({frac:.0%} of the bootstrap draws do)." if frac else ".")]
    else:
        lines += ["", f"Crossover: the frontiers cross at C = {_fmt(cross['C'])} FLOPs, 95% "
                  f"{_band(cross['lower'], cross['upper'])} over the {cross['fraction_of_draws']:.0%} of bootstrap "
                  f"draws that cross between {_fmt(lo)} and {_fmt(hi)}."]
    n_mid, d_mid = _middle(result)
    m_n, m_d = comp.parameter_multiplier(n_mid), comp.data_multiplier(d_mid)
    lines += [f"Parameter multiplier at N = {_fmt(n_mid)}: {_fmt(float(m_n.value))} {_band(m_n.lower, m_n.upper)}; "
              f"data multiplier at D = {_fmt(d_mid)}: {_fmt(float(m_d.value))} {_band(m_d.lower, m_d.upper)} "
              f"(how many times the parameters, or tokens, {a} needs for its term of the loss to match {b}'s)."]
    lines += ["", *diagnostics_lines(comp)]
    return lines


def _nd_loss(result: dict) -> list[pd.DataFrame]:
    """Each recipe's N, D, loss (the columns `compare` read; D = C / (k N) without a D column)."""
    cols, k = result["columns"], result["comparison"].k
    out = []
    for t in result["tables"]:
        n = np.asarray(t[cols.get("N", "N")], np.float64)
        d = (np.asarray(t[cols.get("D", "D")], np.float64) if cols.get("D", "D") in t
             else np.asarray(t[cols.get("C", "C")], np.float64) / (k * n))
        out.append(pd.DataFrame({"N": n, "D": d, "loss": np.asarray(t[cols.get("loss", "loss")], np.float64)}))
    return out


def _middle(result: dict) -> tuple[float, float]:
    """Geometric middle N and D of the two tables."""
    both = pd.concat(_nd_loss(result), ignore_index=True)
    return float(np.exp(np.log(both["N"]).mean())), float(np.exp(np.log(both["D"]).mean()))


def diagnostics_lines(comp) -> list[str]:
    d = comp.diagnostics
    lines = [f"Residuals: shared E = {_fmt(d['E_joint'], 4)}; each recipe fitted alone: "
             + ", ".join(f"E = {_fmt(e, 4)} ({n})" for n, e in d["E_separate"].items()) + ".", "",
             "| recipe | runs | RMS log residual, joint fit | alone | largest |log residual| |", "|---|---|---|---|---|"]
    for name, r in d["recipes"].items():
        lines.append(f"| {name} | {r['n']} | {_fmt(r['rms_log_residual'])} | {_fmt(r['rms_log_residual_separate_fit'])} | "
                     f"{_fmt(r['max_abs_log_residual'])} |")
    if d.get("chi2") is not None:
        verdict = ("lack of fit beyond the runs' noise: the shared-E joint law does not describe both recipes"
                   if d["lack_of_fit"] else "no lack of fit beyond the runs' noise")
        lines += ["", f"Chi-square over both tables (per-run standard errors): {_fmt(d['chi2'])} on {d['dof']} "
                  f"degrees of freedom (reduced {_fmt(d['reduced_chi2'])}, p = {_fmt(d['p_value'])}): {verdict}."]
    else:
        lines += ["", str(d.get("note", ""))]
    return lines


def compare_json(result: dict) -> dict:
    comp = result["comparison"]
    if comp is None:
        return {"skipped": result["skipped"]}
    return _finite(comp.to_dict())


def compare_figure(result: dict):
    from scaling.plots import plot_comparison

    comp = result["comparison"]
    if comp is None:
        raise ValueError(f"no comparison: {result['skipped']}")
    return plot_comparison(comp, _nd_loss(result))
