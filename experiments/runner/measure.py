"""The measure stage of a study: rows measured on each trained run, to ``<name>.csv``, resumable.

    ptq = Measure(name="ptq", key=("qtype", "method"),
                  items=lambda run: [{"qtype": q, "method": "rtn"} for q in ("int8", "int4")],
                  measure=lambda run, items: (evaluate(run.run_dir, **item) for item in items))
    table = measure_runs(ptq, runs, results, workdir)     # a DataFrame, also in workdir/ptq.csv

A measurement (quantize a checkpoint and evaluate it, sample from a model, ...) is split into
*items*, each a small dict of key columns (``key``), e.g. one per quantization format. For each
trained run whose status is in ``statuses`` (default: completed), ``measure(run, pending_items)``
is called once with the items not measured yet and yields one row per item (a dict holding the
item's key columns and whatever it measured), so a measurement that must load a model or a data
set does so once per run. The runner adds ``run_id``, ``status`` and ``reason``.

Nothing lost: ``<name>.csv`` is rewritten atomically after every row, so a killed study resumes
measuring where it stopped and finished rows are not redone (an item is done when its row has
status "completed"). An exception marks the run's remaining items "failed" with the reason and
the stage goes on with the next run; failed items are tried again on the next invocation. Rows
are kept in run order, then item order, so a resumed stage writes the same file as one never
interrupted.
"""

from __future__ import annotations

import dataclasses
import io as _io
import logging
import math
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from etils import epath
from tqdm import tqdm

from experiments.harness import io
from experiments.runner.runs import Run, is_writer, run_dir

log = logging.getLogger(__name__)

MEASURE_STATUSES = ("completed", "failed")


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What a measurement sees of one run: its id, directory, declaration and results.csv row."""

    run_id: str
    run_dir: epath.Path
    run: Run
    result: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Measure:
    """A per-run measurement: ``name`` (the CSV is ``<name>.csv``), the key columns of an item,
    ``items(run) -> [dict]``, ``measure(run, items) -> rows`` and the run statuses it applies to."""

    name: str
    key: tuple[str, ...]
    items: Callable[[TrainedRun], Sequence[Mapping[str, Any]]]
    measure: Callable[[TrainedRun, list[dict]], Iterable[Mapping[str, Any]]]
    statuses: tuple[str, ...] = ("completed",)

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"Measure.name {self.name!r}: use letters, digits and underscores")
        if not self.key:
            raise ValueError(f"Measure {self.name!r}: give the key columns of an item")
        reserved = {"run_id", "status", "reason"} & set(self.key)
        if reserved:
            raise ValueError(f"Measure {self.name!r}: key columns {sorted(reserved)} are the runner's")

    def path(self, workdir) -> epath.Path:
        return epath.Path(workdir) / f"{self.name}.csv"


def _key(measure: Measure, run_id: str, item: Mapping[str, Any]) -> tuple:
    missing = [k for k in measure.key if k not in item]
    if missing:
        raise ValueError(f"measure {measure.name!r}: item or row {dict(item)} lacks key columns {missing}")
    return (run_id, *(_canonical(item[k]) for k in measure.key))


def _canonical(value):
    """Key values compare equal after a CSV round trip (3 and 3.0, "8" and 8 are one key)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
        return None if math.isnan(value) else value
    return value


def read_measurements(path) -> pd.DataFrame:
    """A measure stage's CSV (``ValueError`` when malformed); empty when it does not exist."""
    path = epath.Path(path)
    if not path.exists():
        return pd.DataFrame(columns=["run_id", "status", "reason"])
    frame = pd.read_csv(_io.StringIO(path.read_text()), dtype={"run_id": str, "status": str, "reason": str})
    missing = [c for c in ("run_id", "status", "reason") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (found {list(frame.columns)})")
    bad = sorted(set(frame["status"]) - set(MEASURE_STATUSES))
    if bad:
        raise ValueError(f"{path}: unknown status values {bad}")
    frame["reason"] = frame["reason"].fillna("")
    return frame


def _write(path: epath.Path, rows: list[dict]) -> None:
    columns: list[str] = ["run_id"]
    for row in rows:
        columns += [c for c in row if c not in columns and c not in ("status", "reason")]
    frame = pd.DataFrame(rows, columns=[*columns, "status", "reason"])
    buffer = _io.StringIO()
    frame.to_csv(buffer, index=False)
    io.write_text_atomic(path, buffer.getvalue())


def measure_runs(measure: Measure, runs: Sequence[Run], results: pd.DataFrame, workdir, *,
                 progress: bool = True, executor=None) -> pd.DataFrame:
    """Run one measure stage over the trained runs (see the module docstring); returns its table.

    ``executor`` (`experiments.runner.executors`): serial by default; with Ray each run's pending
    items are one task, whose rows are written here, in run order, when the task ends (a study
    killed meanwhile measures that run's items again on the next invocation)."""
    workdir = io.resolve_workdir(workdir)
    path = measure.path(workdir)
    writer = is_writer()
    by_id = {r["run_id"]: r for r in results.to_dict("records")}
    stored = {}
    for row in read_measurements(path).to_dict("records"):
        stored[_key(measure, row["run_id"], row)] = {k: v for k, v in row.items()
                                                     if not (isinstance(v, float) and math.isnan(v))}
    plan: list[tuple[TrainedRun, list[dict]]] = []
    for run in runs:
        rid = run.run_id
        row = by_id.get(rid)
        if row is None or row["status"] not in measure.statuses:
            continue
        trained = TrainedRun(rid, run_dir(workdir, rid), run, row)
        items = [dict(item) for item in measure.items(trained)]
        keys = [_key(measure, rid, item) for item in items]
        if len(set(keys)) != len(keys):
            raise ValueError(f"measure {measure.name!r}: run {rid} has two items with the same key")
        plan.append((trained, items))

    order = [_key(measure, t.run_id, item) for t, items in plan for item in items]
    rows = {k: stored[k] for k in order if k in stored}

    def save():
        if writer:
            _write(path, [rows[k] for k in order if k in rows])

    todo = [(t, [i for i in items if rows.get(_key(measure, t.run_id, i), {}).get("status") != "completed"])
            for t, items in plan]
    todo = [(t, items) for t, items in todo if items]
    total, done = len(order), len(order) - sum(len(items) for _, items in todo)
    bar = tqdm(total=total, initial=done, unit="row", desc=f"measure {measure.name}",
               disable=not (progress and writer), dynamic_ncols=True, file=sys.stderr)

    def accept(trained: TrainedRun, items: list[dict], measured_rows: Iterable[Mapping[str, Any]]):
        """Record a run's measured rows as they arrive; an exception fails its remaining items."""
        pending = {_key(measure, trained.run_id, i): i for i in items}
        try:
            for measured in measured_rows:
                k = _key(measure, trained.run_id, measured)
                if k not in pending:
                    raise ValueError(f"measure {measure.name!r} returned a row for {k[1:]}, "
                                     "which is not one of the pending items")
                del pending[k]
                rows[k] = {"run_id": trained.run_id, **dict(measured), "status": "completed", "reason": ""}
                save()
                bar.update(1)
        except Exception as err:  # noqa: BLE001  (one run's failure must not stop the stage)
            log.error("measure %s on %s failed:\n%s", measure.name, trained.run_id,
                      getattr(err, "remote_traceback", None) or traceback.format_exc())
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            if isinstance(err, _RemoteFailure):
                reason = " ".join(str(err).split())
            for k, item in pending.items():
                rows[k] = {"run_id": trained.run_id, **item, "status": "failed", "reason": reason}
            pending = {}
            save()
        for k, item in pending.items():  # the measurement yielded fewer rows than items
            rows[k] = {"run_id": trained.run_id, **item, "status": "failed",
                       "reason": f"measure {measure.name!r} returned no row for this item"}
        if pending:
            save()

    try:
        if executor is None or executor.name == "serial":
            for trained, items in todo:
                bar.set_postfix_str(trained.run_id)
                accept(trained, items, measure.measure(trained, list(items)))
        else:
            units = [(measure, trained, items) for trained, items in todo]
            configs = [trained.run.config for trained, _ in todo]
            for index, outcome in executor.imap(_measure_one, units, configs):
                trained, items = todo[index]
                bar.set_postfix_str(trained.run_id)
                measured, error, remote_tb = outcome.value if outcome.ok else ([], outcome.error, outcome.traceback)
                accept(trained, items, _replay(measured, error, remote_tb))
    finally:
        bar.close()
    save()
    return read_measurements(path) if writer else pd.DataFrame([rows[k] for k in order if k in rows])


class _RemoteFailure(Exception):
    """A measurement that raised in an executor's worker; the message is its "Type: message"."""


def _replay(measured: list, error: str, remote_tb: str):
    """A worker's rows, then its failure (if any), as the serial stage would have seen them."""
    yield from measured
    if error:
        failure = _RemoteFailure(error)
        failure.remote_traceback = remote_tb
        raise failure


def _measure_one(measure: Measure, trained: TrainedRun, items: list[dict]):
    """One unit of a measure stage in an executor's worker: (rows, error, traceback); the rows
    measured before an exception are kept, as the serial stage keeps them."""
    measured = []
    try:
        for row in measure.measure(trained, list(items)):
            measured.append(dict(row))
    except Exception as err:  # noqa: BLE001
        return measured, f"{type(err).__name__}: {err}", traceback.format_exc()
    return measured, "", ""
