"""Run an isoFLOP grid: many training runs, one results table, nothing lost when killed.

    runs = [grid.Run(budget=1e11, config=cfg_a), grid.Run(budget=1e11, config=cfg_b), ...]
    results = grid.run_grid(runs, "runs/demo", flop_convention="6N")   # a pandas DataFrame

Layout of a grid workdir (local or ``gs://``; every path goes through ``etils.epath``)::

    runs/<run_id>/      one training run, as experiments.harness.train writes it
                        (config.json, metrics.jsonl, result.json, checkpoints/)
    results.csv         one row per grid point, rewritten atomically after every run

Run ids are readable and stable: ``C<budget>_N<params>_D<tokens>_s<seed>_<hash>``, e.g.
``C1.0e11_N3.35e4_D4.97e5_s0_1a2b3c4d``; the hash is the first 8 hex digits of the SHA-256 of
the run's full config (`experiments.harness.config.config_hash`) with the mesh left out, so the
same run keeps its id (and its checkpoints) when the grid is resumed on another mesh, and two
runs with different settings never share a directory.

Runs go in the given order, each on the whole mesh (``train(cfg, run_dir)``). A run whose
result.json says "completed" or "diverged" is skipped; an unfinished one resumes from its last
checkpoint (train's job). An exception in a run is recorded (status "failed", reason
"ExceptionType: message") and the grid goes on; a failed run is tried again on the next
invocation. Diverged runs keep their row (status "diverged") and are left out of the fits by the
analysis. KeyboardInterrupt and SystemExit stop the grid.

results.csv columns (`RESULT_COLUMNS`): run_id, budget, seed, n_params, n_params_nonembedding,
tokens, ``flops_<convention>`` for every convention of `scaling.flops.CONVENTIONS`, eval_loss,
eval_loss_sem, status ("completed", "diverged", "failed", "pending"), reason. Values come from
each run's result.json (what was trained); rows not finished yet hold the planned sizes, tokens
and FLOPs (`experiments.harness.train.make_plan`) with status "pending" or "failed". Nothing
time-dependent goes in, so a grid killed and resumed writes the same file as one never
interrupted.

Progress: a tqdm bar over the grid's total FLOPs (so its ETA weighs runs by cost), with runs done
out of the total and the current run id in its postfix.
"""

from __future__ import annotations

import dataclasses
import io as _io
import logging
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from etils import epath
from tqdm import tqdm

from experiments.harness import io
from experiments.harness.config import Config, config_hash
from scaling import flops as sflops

log = logging.getLogger(__name__)

FLOP_COLUMNS = tuple(f"flops_{c}" for c in sflops.CONVENTIONS)
RESULT_COLUMNS = ("run_id", "budget", "seed", "n_params", "n_params_nonembedding", "tokens",
                  *FLOP_COLUMNS, "eval_loss", "eval_loss_sem", "status", "reason")
FINAL_STATUSES = ("completed", "diverged")
RESULTS_FILE = "results.csv"
RUNS_DIR = "runs"


# ----------------------------------------------------------------------------- sizes and tokens


def log_spaced(center: float, count: int, spread: float) -> np.ndarray:
    """``count`` values spaced evenly in log around ``center``: largest / smallest = ``spread``.

    The geometric mean of the values is ``center``; ``count = 1`` gives ``[center]``.
    """
    if not (math.isfinite(center) and center > 0):
        raise ValueError(f"log_spaced: center must be a positive number, got {center!r}")
    if count < 1:
        raise ValueError(f"log_spaced: count must be >= 1, got {count}")
    if not (math.isfinite(spread) and spread >= 1):
        raise ValueError(f"log_spaced: spread (largest / smallest) must be >= 1, got {spread!r}")
    if count == 1:
        return np.array([float(center)])
    half = math.log(spread) / 2
    return center * np.exp(np.linspace(-half, half, count))


def prior_optimal_params(budget: float, *, prior="hoffmann2022",
                         flops_ratio: Callable[[float], float] | None = None,
                         iterations: int = 20) -> float:
    """Compute-optimal parameter count at ``budget`` predicted by a prior law, in our convention.

    ``prior`` is a `scaling.published` name or a `FittedLaw` whose compute is ``C = k N D``
    (Hoffmann et al. 2022: k = 6, N counting all parameters). Our budget may use another
    convention: ``flops_ratio(N)`` = (our FLOPs per token of the N-parameter model) / (k N). The
    prior's budget equivalent to ours is then ``C_prior = budget / flops_ratio(N)``, and N solves
    ``N = N_opt_prior(budget / flops_ratio(N))`` (fixed-point iteration in log N; the ratio
    varies slowly with N). Without ``flops_ratio`` the budgets are taken as the prior's own.
    """
    import warnings

    import scaling

    law = scaling.published.get(prior) if isinstance(prior, str) else prior
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"prior_optimal_params: budget must be a positive number, got {budget!r}")

    p = law.params
    if law.law.name == "chinchilla":  # closed form (Hoffmann et al. 2022, Eq. 4): no JAX needed
        alpha, beta = p["alpha"], p["beta"]
        g = (alpha * p["A"] / (beta * p["B"])) ** (1.0 / (alpha + beta))

        def n_opt(c):
            return g * (c / law.k) ** (beta / (alpha + beta))
    else:
        def n_opt(c):
            with warnings.catch_warnings():  # tiny budgets lie far outside the fitted range
                warnings.simplefilter("ignore", UserWarning)
                return float(np.asarray(law.compute_optimal(c)["N"]).reshape(-1)[0])

    n = n_opt(budget)
    if flops_ratio is None:
        return n
    for _ in range(iterations):
        ratio = float(flops_ratio(n))
        if not (math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"prior_optimal_params: flops_ratio({n:.4g}) = {ratio!r} is not positive")
        new = n_opt(budget / ratio)
        if abs(math.log(new / n)) < 1e-6:
            return new
        n = math.sqrt(n * new)  # damped: the ratio of a shape rule jumps between discrete shapes
    return n


def steps_for_budget(budget: float, flops_per_token: float, tokens_per_step: int) -> int:
    """Optimizer steps whose tokens spend ``budget`` FLOPs (nearest whole step, at least 1)."""
    if not (budget > 0 and flops_per_token > 0 and tokens_per_step > 0):
        raise ValueError(f"steps_for_budget: budget {budget!r}, flops_per_token {flops_per_token!r} "
                         f"and tokens_per_step {tokens_per_step!r} must all be positive")
    return max(1, round(budget / (flops_per_token * tokens_per_step)))


# ----------------------------------------------------------------------------- runs and ids


def _sci(x: float, digits: int = 2) -> str:
    """Short scientific notation for names: 1e11 -> "1.0e11", 33500 -> "3.35e4"."""
    if x == 0:
        return "0"
    exponent = math.floor(math.log10(abs(x)))
    mantissa = round(x / 10 ** exponent, digits)
    if abs(mantissa) >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    text = f"{mantissa:.{digits}f}".rstrip("0")
    text = text + "0" if text.endswith(".") else text
    return f"{text}e{exponent}"


@dataclasses.dataclass(frozen=True)
class Run:
    """One grid point: the isoFLOP budget it belongs to and the full config of its run."""

    budget: float
    config: Config

    def plan(self):
        """The planned steps, batch, sizes and FLOPs per token (`train.make_plan`)."""
        from experiments.harness.train import make_plan

        return make_plan(self.config)

    @property
    def run_id(self) -> str:
        plan = self.plan()
        tokens = plan.tokens_at(plan.steps)
        digest = config_hash(dataclasses.replace(self.config, mesh=""))[:8]
        return (f"C{_sci(self.budget, 1)}_N{_sci(plan.n_params['total'])}_D{_sci(tokens)}"
                f"_s{self.config.train.seed}_{digest}")


def check_runs(runs: Sequence[Run]) -> list[str]:
    """The runs' ids; ``ValueError`` on an empty grid or on two runs with the same config."""
    if not runs:
        raise ValueError("the grid has no runs")
    ids = [r.run_id for r in runs]
    seen = {}
    for i, rid in enumerate(ids):
        if rid in seen:
            raise ValueError(f"grid runs {seen[rid]} and {i} have the same config (run id {rid}); "
                             "every grid point must differ (size, tokens or seed)")
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
    return row


def results_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly `RESULT_COLUMNS`, in grid order."""
    return pd.DataFrame(list(rows), columns=list(RESULT_COLUMNS))


def write_results(workdir, frame: pd.DataFrame) -> epath.Path:
    """Atomically (re)write ``workdir/results.csv``; floats keep full (round-trip) precision."""
    buffer = _io.StringIO()
    frame.to_csv(buffer, index=False, float_format=None)
    path = epath.Path(workdir) / RESULTS_FILE
    io.write_text_atomic(path, buffer.getvalue())
    return path


def read_results(workdir_or_file) -> pd.DataFrame:
    """Read a grid's results.csv (a workdir or the file itself); ``ValueError`` when malformed."""
    path = epath.Path(workdir_or_file)
    if not path.name.endswith(".csv"):
        path = path / RESULTS_FILE
    if not path.exists():
        raise ValueError(f"{path}: no results file (has the grid run?)")
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


def _is_writer() -> bool:
    import jax

    return jax.process_index() == 0


def run_grid(runs: Sequence[Run], workdir, *, flop_convention: str = "6N",
             train_fn: Callable[[Config, epath.Path], dict] | None = None,
             progress: bool = True) -> pd.DataFrame:
    """Train every run of the grid in order (skipping finished ones); returns the results table.

    ``train_fn(cfg, run_dir) -> result dict`` defaults to `experiments.harness.train.train`.
    ``flop_convention`` names the budgets' convention on the progress bar, whose total is the sum
    of the runs' budgets (so its ETA weighs each run by its cost).
    results.csv is rewritten after every run (process 0 only), so it is always current.
    """
    if flop_convention not in sflops.CONVENTIONS:
        raise ValueError(f"unknown FLOP convention {flop_convention!r}; choose one of {sflops.CONVENTIONS}")
    if train_fn is None:
        from experiments.harness.train import train as train_fn
    workdir = epath.Path(workdir)
    ids = check_runs(runs)
    writer = _is_writer()
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
        write_results(workdir, results_frame(rows[i] for i in ids))

    cost = {rid: max(float(r.budget), 1.0) for r, rid in zip(runs, ids)}
    done_cost = sum(cost[rid] for rid in ids if rows[rid]["status"] in FINAL_STATUSES)
    bar = tqdm(total=sum(cost.values()), initial=done_cost, unit="FLOP", unit_scale=True,
               desc=f"isoFLOP grid ({flop_convention})", disable=not (progress and writer), dynamic_ncols=True,
               smoothing=0.0, file=sys.stderr)
    finished = len(ids) - len(todo)
    try:
        for run, rid in todo:
            bar.set_postfix_str(f"runs {finished}/{len(ids)} | {rid}")
            started = time.perf_counter()
            try:
                result = train_fn(run.config, run_dir(workdir, rid))
                status = result.get("status", "failed")
                rows[rid] = _row(run, rid, result, status if status in FINAL_STATUSES else "failed")
            except Exception as err:  # noqa: BLE001  (a run's failure must not stop the grid)
                log.error("run %s failed:\n%s", rid, traceback.format_exc())
                rows[rid] = _row(run, rid, None, "failed", f"{type(err).__name__}: {err}")
            finished += 1
            row = rows[rid]
            if writer:
                write_results(workdir, results_frame(rows[i] for i in ids))
                loss = row["eval_loss"]
                bar.write(f"[{finished}/{len(ids)}] {rid}: {row['status']}"
                          + (f", eval_loss {loss:.4f}" if math.isfinite(loss) else "")
                          + (f" ({row['reason']})" if row["reason"] else "")
                          + f", {time.perf_counter() - started:.0f} s", file=sys.stderr)
            bar.update(cost[rid])
    finally:
        bar.close()
    return results_frame(rows[i] for i in ids)


# ----------------------------------------------------------------------------- a whole study


def fit_batch_to_mesh(study):
    """``study`` with ``batch_multiple`` raised to a multiple of the global batch divisor of its
    mesh (data x fsdp axes, and the process count), on the devices JAX sees now."""
    import jax

    from models.sharding import parse_mesh_spec

    axes = parse_mesh_spec(study.mesh or None, jax.device_count())
    divisor = math.lcm(axes["data"] * axes["fsdp"], jax.process_count())
    multiple = math.lcm(study.batch_multiple, divisor)
    return study if multiple == study.batch_multiple else dataclasses.replace(study, batch_multiple=multiple)


def quiet_logging() -> None:
    """INFO for the grid, warnings only from the per-step training log and noisy libraries."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    for noisy in ("absl", "orbax", "jax._src", "tensorflow_datasets", "experiments.harness.train",
                  "experiments.harness.data", "experiments.harness.corpus", "grain"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_study(study, workdir, runs: Iterable[Run], *, preset: str | None = None) -> dict:
    """The main job of an isoFLOP experiment file: grid, then analysis, fits, plots, report.

    ``study`` is the experiment's frozen dataclass; its fields ``name``, ``flop_convention``,
    ``bootstrap``, ``analyze`` and (when present) ``bootstrap_curves`` and ``start_grid`` are read. Writes study.json (the declaration and the run ids),
    then `run_grid`, then (``study.analyze``, process 0) `experiments.harness.report.write_outputs`.
    Returns ``{"results": DataFrame, "outputs": dict | None}`` and prints a summary.
    """
    from experiments.harness.config import to_dict

    quiet_logging()
    started = time.perf_counter()
    workdir = epath.Path(workdir)
    runs = list(runs)
    ids = check_runs(runs)
    description = to_dict(study)
    if _is_writer():
        io.write_json(workdir / "study.json", {"study": description, "preset": preset,
                                               "run_ids": ids})
    log.info("%s: %d runs at %d budgets -> %s", study.name, len(runs),
             len({r.budget for r in runs}), workdir)
    results = run_grid(runs, workdir, flop_convention=study.flop_convention)
    outputs = None
    if study.analyze and _is_writer():
        from experiments.harness import report

        title = study.name + (f" (preset {preset})" if preset else "")
        outputs = report.write_outputs(
            workdir, results, flop_convention=study.flop_convention, title=title,
            study=description, bootstrap=study.bootstrap,
            bootstrap_curves=getattr(study, "bootstrap_curves", None),
            approach3_starts=getattr(study, "start_grid", "coarse"),
            wall_time_s=time.perf_counter() - started)
    if _is_writer():
        counts = results["status"].value_counts().to_dict()
        print(f"{study.name}: {len(results)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
              f"results {workdir / RESULTS_FILE}"
              + (f"; report {outputs['report']}" if outputs else ""))
    return {"results": results, "outputs": outputs}
