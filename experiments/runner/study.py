"""One runner for every study: train -> measure -> analyze, resumable at each stage.

    outcome = run_study("isoflop_chinchilla", "runs/demo", runs, declaration=study,
                        measures=[ptq], analyze=write_report, preset="cpu")

A study is a declaration (a frozen dataclass in the experiment file) that turns into:

* **runs** (`experiments.runner.runs.Run`): the models to train. `train_runs` trains them in order,
  skips finished ones, resumes unfinished ones from their checkpoints and records failed and
  diverged runs with their reason in ``results.csv``.
* **measures** (`experiments.runner.measure.Measure`), optional: per-run measurements of the
  trained models (quantize and evaluate, sample), each to its own ``<name>.csv``, resumable item by
  item.
* **analyze**, optional: ``analyze(StudyContext) -> dict`` fits laws and writes ``fits/``,
  ``plots/``, ``report.md``; it returns at least ``"fitted"`` (the names of the laws it fitted)
  and ``"report"`` (the report's path), and may return ``"notes"`` (why something was not
  fitted). It runs on process 0 only.
* **rung** (`Rung`), optional: the ladder's next step, decided by the fitted laws. Every process
  reads the fits the analysis wrote (``rung.runs(workdir)``: e.g. the predicted compute-optimal
  model at a budget beyond the grid), trains them in ``rung/`` (its own runs/ and results.csv,
  resumable like the grid), and process 0 reports predicted against measured
  (``rung.report(context, rung_results)``, which adds to report.md).

Every stage writes atomically; ``study.json`` records the declaration, the preset and the run
ids. The exit status lives here too (`StudyFailed`, which `experiments.harness.cli.run` turns into
one line on stderr and exit status 1): a study where no run completed, or whose analysis fitted
nothing, fails with the first failure's reason; a study where some runs failed ends with a line
saying how many and why (report.md lists them).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from etils import epath

from experiments.harness import io
from experiments.harness.cli import CommandFailed
from experiments.runner.measure import Measure, measure_runs
from experiments.runner.runs import (RESULTS_FILE, Run, check_runs, is_writer, train_runs)

log = logging.getLogger(__name__)


class StudyFailed(CommandFailed):
    """Nothing useful came out of a study; the message is one line naming the first cause."""


@dataclasses.dataclass(frozen=True)
class StudyContext:
    """What the analyze stage reads: the study's files and tables, already up to date."""

    name: str
    workdir: epath.Path
    results: pd.DataFrame
    measurements: Mapping[str, pd.DataFrame]
    declaration: Any
    preset: str | None
    flop_convention: str
    started: float

    @property
    def title(self) -> str:
        return self.name + (f" (preset {self.preset})" if self.preset else "")

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started


@dataclasses.dataclass(frozen=True)
class Rung:
    """A prediction rung: runs chosen from the study's fitted laws, then a report of how well
    the laws predicted them (see the module docstring)."""

    runs: Callable[[epath.Path], Sequence[Run]]
    report: Callable[[StudyContext, pd.DataFrame], Mapping]
    directory: str = "rung"


def quiet_logging() -> None:
    """INFO for the study, warnings only from the per-step training log and noisy libraries."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    for noisy in ("absl", "orbax", "jax._src", "tensorflow_datasets", "experiments.harness.train",
                  "experiments.harness.data", "experiments.harness.corpus", "grain"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fit_batch_to_mesh(declaration, *, aot: str | None = None, aot_slices: int = 1):
    """A declaration with ``batch_multiple`` raised to a multiple of the global batch divisor of
    its mesh (data x fsdp axes, and the process count), on the devices JAX sees now, or with
    ``aot`` on that TPU topology's devices (`experiments.harness.aot.batch_multiple`)."""
    import jax

    from models.sharding import parse_mesh_spec

    if aot:
        from experiments.harness import aot as aot_lib

        divisor = aot_lib.batch_multiple(declaration.mesh, aot, aot_slices)
    else:
        axes = parse_mesh_spec(declaration.mesh or None, jax.device_count())
        divisor = math.lcm(axes["data"] * axes["fsdp"], jax.process_count())
    multiple = math.lcm(declaration.batch_multiple, divisor)
    if multiple == declaration.batch_multiple:
        return declaration
    return dataclasses.replace(declaration, batch_multiple=multiple)


def shorten(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters (a library's error can list every dataset it knows)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_failure(frame: pd.DataFrame, what: str = "run") -> str:
    bad = frame[frame["status"] != "completed"]
    if bad.empty:
        return ""
    row = bad.iloc[0]
    return f"{what} {row['run_id']}: {row['status']}" + (f" ({shorten(row['reason'])})" if row["reason"] else "")


def summary_line(name: str, results: pd.DataFrame, measurements: Mapping[str, pd.DataFrame],
                 outputs: Mapping | None) -> str:
    """The study's last line: counts, where the files are, and the first failure if any."""
    n = len(results)
    completed = int((results["status"] == "completed").sum())
    parts = [f"{name}: {completed} of {n} runs completed"]
    failed = n - completed
    if failed:
        kinds = results.loc[results["status"] != "completed", "status"].value_counts().to_dict()
        parts[0] += " (" + ", ".join(f"{c} {s}" for s, c in sorted(kinds.items())) + \
            f"; first: {_first_failure(results)})"
    for stage, table in measurements.items():
        done = int((table["status"] == "completed").sum()) if len(table) else 0
        text = f"{stage}: {done} of {len(table)} rows"
        if done < len(table):
            row = table[table["status"] != "completed"].iloc[0]
            text += f" (first failure: {row['run_id']}: {shorten(row['reason'])})"
        parts.append(text)
    if outputs:
        if outputs.get("rung"):
            parts.append(f"rung: {len(outputs['rung'])} runs trained beyond the grid")
        parts.append(f"{len(outputs.get('fitted', ()))} laws fitted; report {outputs['report']}")
    return "; ".join(parts)


def _barrier(name: str) -> None:
    """All processes wait here (process 0 has written files the others read next)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def aot_study(name: str, workdir, runs: Sequence[Run], topology: str, slices: int = 1) -> dict:
    """The ``--aot`` check instead of training: compile every distinct train step of the runs for
    a TPU topology, print the table, write aot.json; `StudyFailed` naming the runs that do not fit
    (or that train's sharding check would refuse) and what to change."""
    from experiments.harness import aot as aot_lib

    try:
        records = aot_lib.aot_check([(r.run_id, r.config) for r in runs], topology, slices)
    except (ImportError, RuntimeError) as err:
        raise StudyFailed(f"{name}: --aot {topology} needs libtpu (pip install -e '.[tpu]'): "
                          f"{shorten(str(err))}") from err
    path = aot_lib.write_aot_json(workdir, records) if is_writer() else None
    print(aot_lib.format_table(records), flush=True)
    problems = aot_lib.failures(records)
    if problems:
        raise StudyFailed(f"{name} on {topology}: {len(problems)} of {len(records)} train steps would fail: "
                          f"{problems[0]}" + (f"; see {path}" if path else ""))
    summary = f"{name}: all {len(records)} distinct train steps fit {topology} (x{slices}); {path}"
    print(summary, flush=True)
    return {"aot": records, "summary": summary}


def run_study(name: str, workdir, runs: Iterable[Run], *, declaration: Any = None,
              preset: str | None = None, flop_convention: str = "6N",
              measures: Sequence[Measure] = (),
              analyze: Callable[[StudyContext], Mapping] | None = None,
              rung: Rung | None = None, train_fn=None, progress: bool = True,
              aot: str | None = None, aot_slices: int = 1, executor=None) -> dict:
    """Train every run, then each measure stage, then the analysis; see the module docstring.

    With ``aot`` (a TPU accelerator type) nothing is trained: `aot_study` checks every distinct
    train step against that topology instead.
    ``executor`` (`experiments.runner.executors`: serial, the default, or Ray) runs each run's
    training and measure rows; the files written and the exit status do not depend on it.
    Returns ``{"results", "measurements", "outputs", "summary"}``; raises `StudyFailed` when no
    run completed or when the analysis fitted nothing. Only process 0 analyzes; when the analysis
    raises there, the other processes of a multi-host study are left waiting at the rung's
    barrier until the job is stopped (without a rung they finish at once).
    """
    from experiments.harness.config import to_dict

    from experiments.harness import metrics_log

    quiet_logging()
    metrics_log.configure(group=name)  # one TensorBoard / W&B view per study
    started = time.perf_counter()
    workdir = io.resolve_workdir(workdir)
    runs = list(runs)
    ids = check_runs(runs)
    names = [m.name for m in measures]
    if len(set(names)) != len(names):
        raise ValueError(f"study {name}: two measure stages share a name ({names})")
    if aot:
        return aot_study(name, workdir, runs, aot, aot_slices)
    described = to_dict(declaration) if dataclasses.is_dataclass(declaration) else declaration
    if is_writer():
        io.write_json(workdir / "study.json", {"study": described, "preset": preset, "run_ids": ids,
                                               "measures": names})
    log.info("%s: %d runs at %d budgets -> %s", name, len(runs), len({r.budget for r in runs}), workdir)
    results = train_runs(runs, workdir, flop_convention=flop_convention, train_fn=train_fn,
                         progress=progress, desc=name, executor=executor)
    completed = results["status"] == "completed"
    if not completed.any():
        raise StudyFailed(f"{name}: all {len(results)} runs failed or diverged; first: "
                          f"{_first_failure(results)}; see {workdir / RESULTS_FILE}")
    measurements = {}
    for measure in measures:
        measurements[measure.name] = measure_runs(measure, runs, results, workdir, progress=progress,
                                                    executor=executor)
    outputs = None
    if analyze is not None and is_writer():
        context = StudyContext(name, workdir, results, measurements, declaration, preset,
                               flop_convention, started)
        outputs = dict(analyze(context))
        if not outputs.get("fitted"):
            notes = list(outputs.get("notes") or [])
            raise StudyFailed(f"{name}: the analysis fitted no law"
                              + (f": {shorten(notes[0])}" if notes else "")
                              + (f"; see {outputs['report']}" if outputs.get("report") else ""))
    if rung is not None and analyze is not None:
        _barrier("analysis written")
        rung_runs = list(rung.runs(workdir))
        if rung_runs:
            rung_results = train_runs(rung_runs, workdir / rung.directory, flop_convention=flop_convention,
                                      train_fn=train_fn, progress=progress, desc=f"{name} rung",
                                      executor=executor)
            if is_writer():
                context = StudyContext(name, workdir, results, measurements, declaration, preset,
                                       flop_convention, started)
                outputs = {**(outputs or {}), **dict(rung.report(context, rung_results))}
    summary = summary_line(name, results, measurements, outputs)
    if is_writer():
        print(summary, flush=True)
    return {"results": results, "measurements": measurements, "outputs": outputs, "summary": summary}


def main(argv, *, description: str, presets, default_preset: str, stages: Callable[[Any], Mapping]) -> dict:
    """An experiment file's ``main``: parse the command line (`experiments.harness.cli.parse`), fit
    the batch to the mesh (or the ``--aot`` topology), then `run_study` with ``stages(study)``:
    ``{"runs": [...], "measures": [...], "analyze": fn, "rung": Rung, "flop_convention": "6N"}``."""
    from experiments.harness import cli

    study, args = cli.parse(argv, description=description, presets=presets, default_preset=default_preset)
    study = fit_batch_to_mesh(study, aot=args.aot, aot_slices=args.aot_slices)
    parts = dict(stages(study))
    runs = parts.pop("runs")
    if getattr(args, "aot_search", None) is not None:
        if not args.aot:
            raise ValueError("--aot_search needs --aot TOPOLOGY (e.g. --aot v5p-256 --aot_search)")
        if args.aot_search < 1:
            raise ValueError(f"--aot_search {args.aot_search}: the largest per-device batch to try, >= 1")
        return aot_search_study(study.name, args.workdir, runs, args.aot, args.aot_slices,
                                max_per_device=args.aot_search)
    from experiments.harness import metrics_log
    from experiments.runner.executors import from_args

    metrics_log.configure(getattr(args, "log", None))
    executor = None if args.aot else from_args(args)
    try:
        return run_study(study.name, args.workdir, runs, declaration=study, preset=args.preset,
                         aot=args.aot, aot_slices=args.aot_slices, executor=executor, **parts)
    finally:
        if executor is not None:
            executor.close()


def aot_search_study(name: str, workdir, runs: Sequence[Run], topology: str, slices: int = 1, *,
                     max_per_device: int = 1024) -> dict:
    """``--aot TOPOLOGY --aot_search``: the largest per-device batch that fits, for each distinct
    model of the runs and each remat policy (`experiments.harness.aot_search`); prints the
    frontier and writes aot_search.json. `StudyFailed` when libtpu is missing or no model fits
    at any batch under any policy."""
    from experiments.harness import aot_search

    quiet_logging()
    workdir = io.resolve_workdir(workdir)
    try:
        records = aot_search.search([(r.run_id, r.config) for r in runs], topology, slices,
                                    max_per_device=max_per_device)
    except (ImportError, RuntimeError) as err:
        raise StudyFailed(f"{name}: --aot {topology} needs libtpu (pip install -e '.[tpu]'): "
                          f"{shorten(str(err))}") from err
    path = aot_search.write_search_json(workdir, records) if is_writer() else None
    print(aot_search.format_frontier(records), flush=True)
    if not any(r["max_per_device_batch"] for r in records):
        raise StudyFailed(f"{name} on {topology}: no model fits at per-device batch 1 under any "
                          f"remat policy; see {path}")
    summary = f"{name}: AOT fit search on {topology} (x{slices}): {len(records)} model x remat rows; {path}"
    print(summary, flush=True)
    return {"aot_search": records, "summary": summary}
