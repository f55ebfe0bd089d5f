"""The train stage of a study: many training runs, one results table, nothing lost when killed.

    runs = [Run(budget=1e11, config=cfg_a), Run(budget=1e11, config=cfg_b, labels={"qat": "int4"})]
    results = train_runs(runs, "runs/demo", flop_convention="6N")   # a pandas DataFrame

Layout of a study workdir (local or ``gs://``; every path goes through ``etils.epath``)::

    runs/<run_id>/      one training run, as experiments.harness.train writes it
                        (config.json, metrics.jsonl, result.json, checkpoints/)
    results.csv         one row per run, rewritten atomically after every run

Run ids are readable and stable: ``C<budget>_N<params>_D<tokens>_s<seed>_<hash>``, e.g.
``C1.0e11_N3.35e4_D4.97e5_s0_1a2b3c4d``; a cooldown branch (``train.parent``, trained after its
parent, whose directory it starts from) is ``<parent id>_b<step it leaves at>_D<tokens>_<hash>``; the hash is the first 8 hex digits of the SHA-256 of
the run's full config (`experiments.harness.config.config_hash`) with the mesh left out, so the
same run keeps its id (and its checkpoints) when the study is resumed on another mesh, and two
runs with different settings never share a directory.

Runs go in the given order, each on the whole mesh (``train(cfg, run_dir)``). A run whose
result.json says "completed" or "diverged" is skipped; an unfinished one resumes from its last
checkpoint (train's job). An exception in a run is recorded (status "failed", reason
"ExceptionType: message") and the study goes on; a failed run is tried again on the next
invocation. Diverged runs keep their row (status "diverged") and are left out of the fits by the
analysis. KeyboardInterrupt and SystemExit stop the study.

results.csv columns (`RESULT_COLUMNS`): run_id, budget, seed, n_params, n_params_nonembedding,
tokens, ``flops_<convention>`` for every convention of `scaling.flops.CONVENTIONS`, eval_loss,
eval_loss_sem, status ("completed", "diverged", "failed", "pending"), reason, then one column per
label of the runs (`Run.labels`, e.g. a QAT format or a run's role). Values come from each run's
result.json (what was trained); rows not finished yet hold the planned sizes, tokens and FLOPs
(`experiments.harness.train.make_plan`) with status "pending" or "failed". Nothing
time-dependent goes in, so a study killed and resumed writes the same file as one never
interrupted.

Progress: a tqdm bar over the runs' total FLOPs (so its ETA weighs runs by cost), with runs done
out of the total and the current run id in its postfix.
"""

from __future__ import annotations

import dataclasses
import io as _io
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from etils import epath
from tqdm import tqdm

from experiments.harness import io
from experiments.harness.config import Config, config_hash
from experiments.runner.design import sci
from scaling import flops as sflops

log = logging.getLogger(__name__)

FLOP_COLUMNS = tuple(f"flops_{c}" for c in sflops.CONVENTIONS)
RESULT_COLUMNS = ("run_id", "budget", "seed", "n_params", "n_params_nonembedding", "tokens",
                  *FLOP_COLUMNS, "eval_loss", "eval_loss_sem", "status", "reason")
FINAL_STATUSES = ("completed", "diverged")  # a run with one of these is never trained again
RESULTS_FILE = "results.csv"
RUNS_DIR = "runs"


# ----------------------------------------------------------------------------- runs and ids


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a study: the compute budget it belongs to, its full config, and
    optional labels (study-specific columns of results.csv, e.g. ``{"role": "wsd_control"}``;
    not part of the run id, which the config alone decides)."""

    budget: float
    config: Config
    labels: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def plan(self):
        """The planned steps, batch, sizes and FLOPs per token (`train.make_plan`)."""
        from experiments.harness.train import make_plan

        return make_plan(self.config)

    @property
    def run_id(self) -> str:
        plan = self.plan()
        tokens = plan.tokens_at(plan.steps)
        digest = config_hash(dataclasses.replace(self.config, mesh=""))[:8]
        if self.config.train.parent:  # a branch: its parent's id, the step it leaves at, its length
            return f"{self.config.train.parent}_b{plan.branch_step}_D{sci(tokens)}_{digest}"
        return (f"C{sci(self.budget, 1)}_N{sci(plan.n_params['total'])}_D{sci(tokens)}"
                f"_s{self.config.train.seed}_{digest}")


def check_runs(runs: Sequence[Run]) -> list[str]:
    """The runs' ids; ``ValueError`` on an empty grid or on two runs with the same config."""
    if not runs:
        raise ValueError("the study has no runs")
    ids = [r.run_id for r in runs]
    seen = {}
    for i, rid in enumerate(ids):
        if rid in seen:
            raise ValueError(f"runs {seen[rid]} and {i} have the same config (run id {rid}); "
                             "every run must differ (size, tokens, seed or settings)")
        seen[rid] = i
    return ids


# ----------------------------------------------------------------------------- results.csv


def _row(run: Run, run_id: str, result: dict | None, status: str, reason: str = "") -> dict:
    """One results.csv row from a result.json (or from the plan when there is none)."""
    result = result or {}
    plan = run.plan()
    planned_tokens = plan.tokens_at(plan.steps)
    flops = result.get("flops") or plan.flops_at(plan.steps)
    row = {
        "run_id": run_id,
        "budget": float(run.budget),
        "seed": int(run.config.train.seed),
        "n_params": int(result.get("n_params", plan.n_params["total"])),
        "n_params_nonembedding": int(result.get("n_params_nonembedding",
                                                plan.n_params["nonembedding"])),
        "tokens": int(result.get("tokens", planned_tokens)),
    }
    for convention, column in zip(sflops.CONVENTIONS, FLOP_COLUMNS):
        row[column] = float(flops[convention]) if flops.get(convention) is not None else math.nan
    for key in ("eval_loss", "eval_loss_sem"):
        value = result.get(key)
        row[key] = float(value) if value is not None else math.nan
    row["status"] = status
    row["reason"] = " ".join(str(reason or result.get("reason") or "").split())  # one line
    row.update(run.labels)
    return row


def label_columns(runs: Sequence[Run]) -> list[str]:
    """The label columns of these runs, in first-seen order; a label may not shadow a column."""
    columns: list[str] = []
    for run in runs:
        for key in run.labels:
            if key in RESULT_COLUMNS:
                raise ValueError(f"run label {key!r} would overwrite the results.csv column {key!r}")
            if key not in columns:
                columns.append(key)
    return columns


def results_frame(rows: Iterable[dict], labels: Sequence[str] = ()) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly `RESULT_COLUMNS` (then ``labels``), in run order."""
    return pd.DataFrame(list(rows), columns=[*RESULT_COLUMNS, *labels])


def write_results(workdir, frame: pd.DataFrame) -> epath.Path:
    """Atomically (re)write ``workdir/results.csv``; floats keep full (round-trip) precision."""
    buffer = _io.StringIO()
    frame.to_csv(buffer, index=False, float_format=None)
    path = epath.Path(workdir) / RESULTS_FILE
    io.write_text_atomic(path, buffer.getvalue())
    return path


def read_results(workdir_or_file) -> pd.DataFrame:
    """Read a study's results.csv (a workdir or the file itself); ``ValueError`` when malformed."""
    path = epath.Path(workdir_or_file)
    if not path.name.endswith(".csv"):
        path = path / RESULTS_FILE
    if not path.exists():
        raise ValueError(f"{path}: no results file (has the study run?)")
    text_columns = {"run_id": str, "status": str, "reason": str}
    frame = pd.read_csv(_io.StringIO(path.read_text()), dtype=text_columns)
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (found {list(frame.columns)})")
    frame["reason"] = frame["reason"].fillna("")
    return frame


def run_dir(workdir, run_id: str) -> epath.Path:
    return epath.Path(workdir) / RUNS_DIR / run_id


def _stored_result(path: epath.Path) -> dict | None:
    result_path = path / "result.json"
    if not result_path.exists():
        return None
    try:
        return io.read_json(result_path)
    except ValueError:  # a torn file cannot happen with atomic writes; treat as not run
        log.warning("%s is not valid JSON; the run will be resumed", result_path)
        return None


def training_curves(workdir, results: pd.DataFrame, flop_convention: str = "6N",
                    params_column: str = "n_params") -> pd.DataFrame:
    """Training-loss curves of the completed runs (for Approach 1), from each metrics.jsonl.

    Columns: run_id, budget, n_params (from ``params_column``), tokens, flops (cumulative, under
    ``flop_convention``), loss (the logged train_loss: the mean over the steps since the
    previous record).
    """
    frames = []
    for row in results[results["status"] == "completed"].itertuples(index=False):
        records = io.read_jsonl(run_dir(workdir, row.run_id) / "metrics.jsonl")
        points = [(r["tokens"], r["flops"][flop_convention], r["train_loss"]) for r in records
                  if r.get("train_loss") is not None and r.get("flops")]
        if not points:
            continue
        tokens, flops, loss = map(np.asarray, zip(*points))
        frames.append(pd.DataFrame({"run_id": row.run_id, "budget": row.budget,
                                    "n_params": getattr(row, params_column), "tokens": tokens,
                                    "flops": flops, "loss": loss}))
    columns = ["run_id", "budget", "n_params", "tokens", "flops", "loss"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


# ----------------------------------------------------------------------------- the grid


def is_writer() -> bool:
    """Process 0 writes the study's files; every process trains."""
    import jax

    return jax.process_index() == 0


def train_runs(runs: Sequence[Run], workdir, *, flop_convention: str = "6N",
               train_fn: Callable[[Config, epath.Path], dict] | None = None,
               progress: bool = True, desc: str = "train", executor=None) -> pd.DataFrame:
    """Train every run (skipping finished ones); returns the results table.

    ``train_fn(cfg, run_dir) -> result dict`` defaults to `experiments.harness.train.train`.
    ``executor`` (`experiments.runner.executors`; default serial, in this process and in order)
    runs each training; with Ray they run concurrently and finish in any order, while the rows
    keep the runs' order.
    ``flop_convention`` names the budgets' convention on the progress bar, whose total is the sum
    of the runs' budgets (so its ETA weighs each run by its cost).
    results.csv is rewritten after every run (process 0 only), so it is always current.
    """
    from experiments.runner.executors import SerialExecutor

    if flop_convention not in sflops.CONVENTIONS:
        raise ValueError(f"unknown FLOP convention {flop_convention!r}; choose one of {sflops.CONVENTIONS}")
    if train_fn is None:
        from experiments.harness.train import train as train_fn
    executor = executor or SerialExecutor()
    workdir = io.resolve_workdir(workdir)
    ids = check_runs(runs)
    labels = label_columns(runs)
    writer = is_writer()
    rows, todo = {}, []
    for run, rid in zip(runs, ids):
        stored = _stored_result(run_dir(workdir, rid))
        status = (stored or {}).get("status")
        if status in FINAL_STATUSES:
            rows[rid] = _row(run, rid, stored, status)
        else:
            rows[rid] = _row(run, rid, None if status != "failed" else stored,
                             "failed" if status == "failed" else "pending")
            todo.append((run, rid))
    if writer:
        write_results(workdir, results_frame((rows[i] for i in ids), labels))

    cost = {rid: max(float(r.budget), 1.0) for r, rid in zip(runs, ids)}
    done_cost = sum(cost[rid] for rid in ids if rows[rid]["status"] in FINAL_STATUSES)
    bar = tqdm(total=sum(cost.values()), initial=done_cost, unit="FLOP", unit_scale=True,
               desc=f"{desc} ({flop_convention})", disable=not (progress and writer), dynamic_ncols=True,
               smoothing=0.0, file=sys.stderr)
    finished = len(ids) - len(todo)
    units = [(train_fn, (run.config, str(run_dir(workdir, rid)))) for run, rid in todo]
    try:
        if todo:
            bar.set_postfix_str(f"runs {finished}/{len(ids)} | {todo[0][1]}")
        for index, outcome in _in_waves(executor, units, todo):
            run, rid = todo[index]
            if outcome.ok:
                result = outcome.value
                status = result.get("status", "failed")
                rows[rid] = _row(run, rid, result, status if status in FINAL_STATUSES else "failed")
            else:  # an exception in the run: recorded, and the study goes on
                log.error("run %s failed:\n%s", rid, outcome.traceback or outcome.error)
                rows[rid] = _row(run, rid, None, "failed", outcome.error)
            finished += 1
            row = rows[rid]
            if writer:
                write_results(workdir, results_frame((rows[i] for i in ids), labels))
                loss = row["eval_loss"]
                bar.write(f"[{finished}/{len(ids)}] {rid}: {row['status']}"
                          + (f", eval_loss {loss:.4f}" if math.isfinite(loss) else "")
                          + (f" ({row['reason']})" if row["reason"] else "")
                          + f", {outcome.elapsed_s:.0f} s", file=sys.stderr)
            bar.update(cost[rid])
            if index + 1 < len(todo) and executor.name == "serial":
                bar.set_postfix_str(f"runs {finished}/{len(ids)} | {todo[index + 1][1]}")
            else:
                bar.set_postfix_str(f"runs {finished}/{len(ids)}")
    finally:
        bar.close()
    return results_frame((rows[i] for i in ids), labels)


def waves(todo: Sequence[tuple[Run, str]]) -> list[list[int]]:
    """The indices of ``todo`` in waves: a branch (``train.parent``) whose parent is also to be
    trained goes in a wave after its parent's, since it starts from the parent's checkpoint; the
    order within a wave is ``todo``'s. One wave when there are no such branches."""
    position = {rid: i for i, (_, rid) in enumerate(todo)}
    depth: dict[int, int] = {}

    def level(i: int, seen: tuple = ()) -> int:
        if i not in depth:
            parent = todo[i][0].config.train.parent
            j = position.get(parent)
            if j is not None and j in seen + (i,):
                raise ValueError(f"run {todo[i][1]}: its parent chain returns to itself")
            depth[i] = 0 if j is None else level(j, seen + (i,)) + 1
        return depth[i]

    out: dict[int, list[int]] = {}
    for i in range(len(todo)):
        out.setdefault(level(i), []).append(i)
    return [out[d] for d in sorted(out)]


def _in_waves(executor, units, todo):
    """``executor.imap`` over ``units``: (index into todo, outcome). A serial executor trains in
    todo's order (a study lists a parent before its branches); any other (Ray: concurrent, in any
    order) wave by wave (`waves`), so that no branch starts before its parent has finished."""
    order = [list(range(len(todo)))] if executor.name == "serial" else waves(todo)
    for wave in order:
        for k, outcome in executor.imap(_train_one, [units[i] for i in wave],
                                        [todo[i][0].config for i in wave]):
            yield wave[k], outcome


def _train_one(train_fn, args):
    """One unit of the train stage (what an executor runs): ``train_fn(config, run_dir)``."""
    config, path = args
    return train_fn(config, epath.Path(path))
