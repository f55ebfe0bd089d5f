"""The report kit: an analyze stage declared, not written. A `Report` names which laws to fit on
which table (`Fit`), which held-out checks to run (`HeldOut`), which figures to draw (`Plot`), which
tables to write and which report sections to render (`Section`), which laws to rank by how well
they extrapolate (`Select`) and which two recipes to compare (`Compare`,
`experiments.reports.choose`); `Report.stage` (a study's
analyze stage) does the fitting, writes fits/<name>.json, plots/<name>.png, the tables and
report.md, and returns what `experiments.runner.study.run_study` expects.

    REPORT = Report(
        title="Learning-rate study",
        fits=[Fit("lr_opt", "power_law_2d", table=best_lr, columns={"N": "n_params", "D": "tokens",
                                                                    "y": "lr"}, bootstrap=200)],
        held_out=[HeldOut("lr_opt", lambda t: t["tokens"] == t["tokens"].max(),
                          what="the longest runs' optimal learning rate")],
        plots=[Plot("lr_opt", lambda a: plot_law(a.laws["lr_opt"], a.tables["best_lr"]))],
        sections=[Section("What was run", lambda a: [f"- {len(a.results)} runs"])])

    class Study(Recipe):
        def analysis(self):
            return REPORT.stage

report.md is, in order: ``# {title}: {study title}``, the declared sections, "Law selection: ..."
(each `Select`: the candidates ranked by extrapolation error and the law the report used),
"Recipe comparison: ..." (each `Compare`: the compute multiplier with its band, the crossover,
the residual diagnostics), "Fitted laws" (each
`Fit`: its parameters and 95% intervals, or why it was not fitted), one "Held-out check" section per
`HeldOut` (measured against predicted with the band, the error, whether the band covers it),
"Failed, diverged and unfinished runs", "Notes" (when any) and "Files". A study whose fitting
does not fit this shape (per-model fits, derived quantities) computes it in ``compute(context)
-> {"laws": {name: FittedLaw}, "notes": [...], ...}``; its sections and plots read the result
from ``analysis.out``. Bands are `experiments.reports.files.predict_with_band` (the fitted law's
bootstrap draws).
"""

from __future__ import annotations

import dataclasses
import io as _io
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from experiments.harness import io
from experiments.reports import choose
from experiments.reports import files as files_lib
from experiments.reports.choose import Compare, Select

__all__ = ["Analysis", "Compare", "Fit", "HeldOut", "Plot", "Report", "Section", "Select", "fmt", "interval", "table"]

log = logging.getLogger(__name__)

Table = str | Callable[[Any], pd.DataFrame]  # "results", a measure's name, or f(context) -> DataFrame


@dataclasses.dataclass(frozen=True)
class Fit:
    """One law fitted to one table, written to fits/<name>.json.

    law: a registered law name or a `scaling.Law`. table: "results" (completed runs), a measure
    stage's name (its completed rows), or ``f(context) -> DataFrame`` (a derived table, e.g. the
    best learning rate per size). rows: ``f(table) -> table`` chooses the rows (default all).
    columns: law covariate/target name -> column. The remaining fields go to `scaling.fit`.
    """

    name: str
    law: Any
    table: Table = "results"
    columns: Mapping[str, str] = dataclasses.field(default_factory=dict)
    rows: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    target: str | None = None
    bootstrap: int = 0
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def fit(self, data: pd.DataFrame, bootstrap: int | None = None):
        import scaling

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return scaling.fit(self.law, data, self.target, columns=dict(self.columns) or None,
                               bootstrap=self.bootstrap if bootstrap is None else bootstrap, **self.options)


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Refit the `Fit` named ``fit`` without the rows ``held_out(table)`` selects (a boolean mask)
    and predict those rows, with the law's band; ``what`` says what is held out (the section's
    title). ``bootstrap``: draws of the refit (the band), default the Fit's own."""

    fit: str
    held_out: Callable[[pd.DataFrame], Any]
    what: str = ""
    bootstrap: int | None = None
    level: float = 0.95


@dataclasses.dataclass(frozen=True)
class Plot:
    """plots/<name>.png from ``make(analysis) -> Figure`` (skipped with a warning on ValueError)."""

    name: str
    make: Callable[["Analysis"], Any]


@dataclasses.dataclass(frozen=True)
class Section:
    """A report section: ``## {title}`` (a string, or ``f(analysis) -> str``) and the lines
    ``render(analysis)`` returns."""

    title: str | Callable[["Analysis"], str]
    render: Callable[["Analysis"], Iterable[str]]


@dataclasses.dataclass
class Analysis:
    """What sections and plots read: the study's context, the fitted laws, the held-out checks,
    the derived tables, the study-specific results of ``compute`` (``out``) and the notes."""

    context: Any
    laws: dict[str, Any]
    held_out: dict[str, list[dict]]
    tables: dict[str, pd.DataFrame]
    out: dict
    notes: list[str]
    selections: dict = dataclasses.field(default_factory=dict)   # Select name -> choose.run_select's dict
    comparisons: dict = dataclasses.field(default_factory=dict)  # Compare name -> choose.run_compare's dict

    @property
    def results(self) -> pd.DataFrame:
        return self.context.results

    @property
    def declaration(self) -> Any:
        return self.context.declaration


def table(context, which: Table) -> pd.DataFrame:
    """A Fit's table: the completed rows of results.csv or of a measure's CSV, or a derived table."""
    if callable(which):
        return which(context)
    frame = context.results if which == "results" else context.measurements[which]
    return frame[frame["status"] == "completed"].reset_index(drop=True)


def fmt(x, digits: int = 3) -> str:
    """A number for a report ("n/a" for None and non-finite values)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def interval(band, digits: int = 3) -> str:
    """An interval ``(lo, hi)`` for a report ("n/a" when there is none or a bound is missing)."""
    if band is None or any(b is None or not math.isfinite(float(b)) for b in band):
        return "n/a"
    return f"[{fmt(band[0], digits)}, {fmt(band[1], digits)}]"


def held_out_rows(spec: HeldOut, fit: Fit, data: pd.DataFrame) -> list[dict]:
    """Measured against predicted for the held-out rows of one check (rows of dicts; one row with
    ``skipped`` when the check cannot run)."""
    import scaling

    mask = np.asarray(spec.held_out(data), bool)
    train, test = data[~mask], data[mask]
    if test.empty or len(train) < 3:
        return [{"skipped": f"{len(train)} rows to refit on, {len(test)} held out"}]
    try:
        law = fit.fit(train, spec.bootstrap)
    except ValueError as err:
        return [{"skipped": f"refit failed: {err}"}]
    spec_law = scaling.laws.get(fit.law) if isinstance(fit.law, str) else fit.law
    columns = dict(fit.columns)
    target = columns.get(fit.target or spec_law.target, fit.target or spec_law.target)
    rows = []
    for row in test.to_dict("records"):
        point, band = files_lib.predict_with_band(
            law, spec.level, **{c: float(row[columns.get(c, c)]) for c in spec_law.covariates})
        measured = float(row[target])
        error = point / measured - 1 if measured else None
        rows.append({"run_id": row.get("run_id", ""), **{c: float(row[columns.get(c, c)]) for c in spec_law.covariates},
                     "measured": measured, "predicted": point, "interval": band, "rel_error": error,
                     "covers": None if band is None else bool(band[0] <= measured <= band[1])})
    return rows


def fitted_laws_section(analysis: Analysis, fits: Sequence[Fit]) -> list[str]:
    lines = ["| law | parameter | value | 95% |", "|---|---|---|---|"]
    missing = []
    for spec in fits:
        law = analysis.laws.get(spec.name)
        if law is None:
            missing.append(spec.name)
            continue
        for param, value in law.params.items():
            band = law.interval(param) if law.samples is not None else None
            lines.append(f"| {spec.name} | {param} | {fmt(value, 4)} | {interval(band)} |")
    flagged = [line for spec in fits if (law := analysis.laws.get(spec.name)) is not None
               and (line := law.diagnostics_markdown(spec.name))]
    return (lines + ([""] + flagged if flagged else [])
            + ([""] + [f"Not fitted: {name} (see Notes)." for name in missing] if missing else []))


def held_out_section(rows: list[dict]) -> list[str]:
    done = [r for r in rows if "skipped" not in r]
    if not done:
        return [f"Not run: {rows[0]['skipped'] if rows else 'nothing held out'}"]
    covariates = [k for k in done[0] if k not in ("run_id", "measured", "predicted", "interval", "rel_error", "covers")]
    runs = any(r["run_id"] for r in done)  # a derived table (one row per size, say) has no run ids
    lines = [("| run " if runs else "") + "| " + " | ".join(covariates) + " | measured | predicted | 95% | error | covers |",
             ("|---" if runs else "") + "|" + "---|" * len(covariates) + "---|---|---|---|---|"]
    for r in done:
        err = "n/a" if r["rel_error"] is None else f"{100 * r['rel_error']:+.1f}%"
        lines.append((f"| {r['run_id']} " if runs else "") + "| " + " | ".join(fmt(r[c]) for c in covariates) +
                     f" | {fmt(r['measured'], 4)} | {fmt(r['predicted'], 4)} | {interval(r['interval'])} | {err} | "
                     f"{'n/a' if r['covers'] is None else ('yes' if r['covers'] else 'no')} |")
    errors = [abs(r["rel_error"]) for r in done if r["rel_error"] is not None]
    covers = [r["covers"] for r in done if r["covers"] is not None]
    if errors:
        lines += ["", f"Median |error| {100 * float(np.median(errors)):.1f}%" +
                  (f", band covers {sum(covers)}/{len(covers)}." if covers else ".")]
    return lines


def failed_runs_section(results: pd.DataFrame) -> list[str]:
    bad = results[results["status"] != "completed"]
    return ["None: every run completed."] if bad.empty else [f"- {r.run_id}: {r.status} ({r.reason})"
                                                            for r in bad.itertuples()]


@dataclasses.dataclass(frozen=True)
class Report:
    """An analyze stage declared (see the module docstring).

    title: the report's heading (the study's title follows it). compute: ``f(context) -> dict``
    for what the declarations cannot say; its ``"laws"`` are written to fits/ with the Fits' and
    its ``"notes"`` join the report's notes. tables: ``{file name: f(analysis) -> DataFrame}``
    written as CSV beside report.md (``frontier.csv``). measurements: the study's own CSVs to list
    under Files (default: every measure stage's). json: ``f(analysis) -> dict`` written as
    analysis.json, when given.
    """

    title: str
    fits: Sequence[Fit] = ()
    held_out: Sequence[HeldOut] = ()
    plots: Sequence[Plot] = ()
    sections: Sequence[Section] = ()
    compute: Callable[[Any], Mapping] | None = None
    tables: Mapping[str, Callable[[Analysis], pd.DataFrame]] = dataclasses.field(default_factory=dict)
    measurements: Sequence[str] | None = None
    json: Callable[[Analysis], Mapping] | None = None
    selects: Sequence[Select] = ()
    compares: Sequence[Compare] = ()
    show_notes: bool = True
    fitted_laws_title: str = "Fitted laws (95% bootstrap intervals)"

    def analyze(self, context) -> Analysis:
        """Fit, check and compute, writing nothing."""
        out = dict(self.compute(context)) if self.compute is not None else {}
        laws = dict(out.get("laws") or {})
        notes = list(out.get("notes") or [])
        tables = {}
        by_name = {}
        for spec in self.fits:
            by_name[spec.name] = spec
            data = table(context, spec.table)
            data = spec.rows(data) if spec.rows is not None else data
            if not callable(spec.table):
                tables.setdefault(str(spec.table), data)
            try:
                laws[spec.name] = spec.fit(data)
            except ValueError as err:
                notes.append(f"{spec.name} not fitted: {err}")
        checks = {}
        for spec in self.held_out:
            fit = by_name[spec.fit]
            data = table(context, fit.table)
            data = fit.rows(data) if fit.rows is not None else data
            checks[spec.fit] = held_out_rows(spec, fit, data.reset_index(drop=True))
        analysis = Analysis(context, laws, checks, tables, out, notes)
        for spec in self.selects:
            data = table(context, spec.table)
            data = spec.rows(data) if spec.rows is not None else data
            analysis.selections[spec.name] = choose.run_select(spec, data.reset_index(drop=True))
        for spec in self.compares:
            a = table(context, spec.table)
            b = None if spec.table_b is None else table(context, spec.table_b)
            try:
                a, b = choose.split_tables(spec, a, b)
            except ValueError as err:
                analysis.comparisons[spec.name] = {"comparison": None, "skipped": str(err), "tables": ()}
                continue
            analysis.comparisons[spec.name] = choose.run_compare(spec, a, b)
        return analysis

    def used(self, spec: Select, analysis: Analysis) -> str:
        """The label of the law the report used (a `Select`'s ``used``)."""
        return spec.used(analysis) if callable(spec.used) else spec.used

    def render(self, analysis: Analysis, files: Mapping[str, Sequence[str]]) -> str:
        lines = [f"# {self.title}: {analysis.context.title}"]
        chosen = []   # (after, lines) of the law selections and recipe comparisons
        for spec in self.selects:
            chosen.append((spec.after, [f"## Law selection: {spec.what or spec.name}", "",
                                        *choose.select_lines(spec, analysis.selections[spec.name],
                                                             self.used(spec, analysis))]))
        for spec in self.compares:
            title = spec.what or f"{spec.names[1]} against {spec.names[0]}"
            chosen.append((spec.after, [f"## Recipe comparison: {title}", "",
                                        *choose.compare_lines(analysis.comparisons[spec.name])]))
        for section in self.sections:
            title = section.title(analysis) if callable(section.title) else section.title
            body = list(section.render(analysis))
            while body and body[-1] == "":
                body.pop()
            lines += ["", f"## {title}", "", *body]
            for after, block in chosen:
                if after is not None and after == title:
                    lines += ["", *block]
        titles = {s.title for s in self.sections if not callable(s.title)}
        for after, block in chosen:
            if after is None or after not in titles:
                lines += ["", *block]
        if self.fits:
            lines += ["", f"## {self.fitted_laws_title}", "", *fitted_laws_section(analysis, self.fits)]
        for spec in self.held_out:
            title = f"Held-out check: {spec.what}" if spec.what else f"Held-out check: {spec.fit}"
            lines += ["", f"## {title}", "", *held_out_section(analysis.held_out[spec.fit])]
        lines += ["", "## Failed, diverged and unfinished runs", "", *failed_runs_section(analysis.results)]
        if analysis.notes and self.show_notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in analysis.notes]
        lines += ["", "## Files", ""] + [f"- {k}: " + ", ".join(f"`{p}`" for p in v) for k, v in files.items() if v]
        return "\n".join(lines) + "\n"

    def stage(self, context) -> dict:
        """The study's analyze stage: analyze, then fits/, plots/, tables, analysis.json, report.md."""
        analysis = self.analyze(context)
        workdir = context.workdir
        fits = files_lib.write_fits(workdir, analysis.laws)
        figures = {p.name: (lambda p=p: p.make(analysis)) for p in self.plots}
        figures.update({f"select_{s.name}": (lambda s=s: choose.select_figure(analysis.selections[s.name]))
                        for s in self.selects})
        figures.update({f"compare_{c.name}": (lambda c=c: choose.compare_figure(analysis.comparisons[c.name]))
                        for c in self.compares})
        plots = files_lib.write_figures(workdir, figures)
        chosen = []
        for spec in self.selects:
            io.write_json(workdir / f"select_{spec.name}.json",
                          choose.select_json(analysis.selections[spec.name], self.used(spec, analysis)))
            chosen.append(f"select_{spec.name}.json")
        for spec in self.compares:
            io.write_json(workdir / f"compare_{spec.name}.json", choose.compare_json(analysis.comparisons[spec.name]))
            chosen.append(f"compare_{spec.name}.json")
        written = []
        for name, make in self.tables.items():
            buffer = _io.StringIO()
            make(analysis).to_csv(buffer, index=False)
            io.write_text_atomic(workdir / name, buffer.getvalue())
            written.append(name)
        measured = list(context.measurements) if self.measurements is None else list(self.measurements)
        files = {"measurements": [f"{m}.csv" for m in measured] + written,
                 "fits": [f"fits/{p.name}" for p in fits], "plots": [f"plots/{p.name}" for p in plots.values()],
                 "law selection and recipe comparison": chosen}
        if self.json is not None:
            io.write_json(workdir / "analysis.json", dict(self.json(analysis)))
            files["analysis"] = ["analysis.json"]
        report = workdir / "report.md"
        io.write_text_atomic(report, self.render(analysis, files))
        return {"fitted": [p.stem for p in fits], "report": report, "notes": analysis.notes,
                "analysis": analysis.out, "plots": list(plots.values()), "held_out": analysis.held_out}
