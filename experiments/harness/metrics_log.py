"""A run's metrics where researchers look: metrics.jsonl, TensorBoard event files, Weights & Biases.

    log = MetricsLog(workdir, cfg, writer=True, start_step=0)   # in train's loop (process 0)
    log.append(record)        # one metrics.jsonl record -> the file, TensorBoard, W&B
    log.close()

Every record train writes to ``metrics.jsonl`` also goes, as scalars, to TensorBoard event files
beside it (``<run dir>/events.out.tfevents.*``, written with tensorboardX, which needs no
TensorFlow) and, when a project is set, to Weights & Biases. Tags: ``train/loss``,
``train/learning_rate``, ``train/grad_norm``, ``perf/step_time_s``, ``perf/tokens_per_s``,
``perf/mfu``, ``eval/loss``, ``eval/loss_sem``, and ``progress/tokens`` and
``progress/flops_<convention>`` (so a plot against compute is one click away); x is the step.

One view per study: a study's runs live in ``<workdir>/runs/<run_id>/``, so
``tensorboard --logdir <workdir>/runs`` names each curve by its run id; on W&B each run is named
by its run id and grouped by the study's name (`configure`, which `run_study` calls).

Settings (`LogSettings`) come from the command line's ``--set log.KEY=VALUE`` (`split_overrides`;
they are not part of any run's config, so run ids do not change):
``log.tensorboard=false`` turns the event files off, ``log.wandb=PROJECT`` turns W&B on,
``log.wandb_entity=TEAM`` and ``log.wandb_mode=offline`` (or set ``WANDB_MODE``) as W&B takes them.

Resume: a run resumed from its checkpoint at step s rewrites metrics.jsonl up to s and opens a new
event file whose first event purges every event past s (TensorBoard's own mechanism, a
``SessionLog.START`` at ``purge_step``), so the curve has no doubled segment; W&B resumes the same
run id (its id is the run id plus a hash of the workdir, so two studies' runs never collide) and
drops steps it has seen. On ``gs://`` (any URL) workdirs the event file is buffered in memory and
rewritten whole through ``etils.epath`` at each flush (object stores cannot append). A logging
backend that fails (W&B unreachable, tensorboardX missing) logs one warning and is turned off for
that run: metrics.jsonl, the record the study reads, never depends on them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io as _io
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath

from experiments.harness import io

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TAGS = {"train_loss": "train/loss", "learning_rate": "train/learning_rate",
        "grad_norm": "train/grad_norm", "step_time_s": "perf/step_time_s",
        "tokens_per_s": "perf/tokens_per_s", "mfu": "perf/mfu", "eval_loss": "eval/loss",
        "eval_loss_sem": "eval/loss_sem", "curve_loss": "eval/curve_loss", "curve_loss_sem": "eval/curve_loss_sem",
        "tokens": "progress/tokens"}


@dataclasses.dataclass(frozen=True)
class LogSettings:
    """Where metrics go besides metrics.jsonl (see the module docstring)."""

    tensorboard: bool = True
    wandb: str = ""           # W&B project; "" = off
    wandb_entity: str = ""
    wandb_mode: str = ""      # "", "online", "offline" or "disabled" ("" = W&B's default / $WANDB_MODE)
    group: str = ""           # the study's name (W&B group); set by the runner

    def __post_init__(self):
        if self.wandb_mode not in ("", "online", "offline", "disabled"):
            raise ValueError(f"log.wandb_mode={self.wandb_mode!r}: online, offline or disabled")


_settings = LogSettings()


def configure(settings: LogSettings | None = None, **changes) -> LogSettings:
    """Set this process's settings (``settings`` and/or field changes); returns the new ones."""
    global _settings
    _settings = dataclasses.replace(settings or _settings, **changes)
    return _settings


def current() -> LogSettings:
    return _settings


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], LogSettings]:
    """``--set`` strings -> (the ones for the config, `LogSettings` from the ``log.*`` ones).
    ``ValueError`` naming an unknown ``log.`` key or a bad value."""
    from experiments.harness.config import coerce

    rest, changes = [], {}
    fields = {f.name: f for f in dataclasses.fields(LogSettings) if f.name != "group"}
    for text in overrides:
        key, sep, value = text.partition("=")
        if not key.strip().startswith("log."):
            rest.append(text)
            continue
        name = key.strip()[len("log."):]
        if not sep or name not in fields:
            raise ValueError(f"--set {text}: log settings are {', '.join('log.' + n for n in fields)}"
                             " (log.KEY=VALUE)")
        changes[name] = coerce(value, bool if name == "tensorboard" else str)
    return rest, dataclasses.replace(LogSettings(), **changes)


# ----------------------------------------------------------------------------- TensorBoard


class _URLRecordWriter:
    """tensorboardX's record writer for URLs (gs://...): buffered, rewritten whole through epath."""

    def __init__(self, path: str):
        self.path, self.buffer = epath.Path(path), _io.BytesIO()

    def write(self, data: bytes):
        self.buffer.write(data)

    def flush(self):
        io.write_bytes_atomic(self.path, self.buffer.getvalue())

    def close(self):
        self.flush()


def _register_url_writers() -> None:
    from tensorboardX import record_writer

    class Factory:
        def open(self, path):
            return _URLRecordWriter(path)

        def directory_check(self, path):  # object stores have no directories to create
            pass

    for scheme in ("gs", "s3"):
        record_writer.register_writer_factory(scheme, Factory())


def _tensorboard(run_dir: epath.Path, start_step: int):
    from tensorboardX import SummaryWriter

    if io.is_url(run_dir):
        _register_url_writers()
    # a unique file per session (a resumed run's writer may start within the same second)
    suffix = f".{os.getpid()}.s{start_step}"  # tensorboardX names the file by time and host
    # purge_step: TensorBoard drops an earlier session's events from this step on, on a resume
    # (start_step > 0) and on a fresh start alike (a run killed before its first checkpoint
    # restarts at step 0: its earlier curve must not double the new one)
    return SummaryWriter(os.fspath(run_dir), purge_step=start_step + 1,
                         filename_suffix=suffix, flush_secs=30)


# ----------------------------------------------------------------------------- W&B


def wandb_id(run_dir: epath.Path) -> str:
    """The W&B run id of a run directory: its name (W&B's allowed characters) and 8 hex digits
    of the workdir's path, so a study rerun continues the same W&B run and two studies'
    identically configured runs stay apart."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", run_dir.name)
    digest = hashlib.sha256(os.fspath(run_dir).encode()).hexdigest()[:8]
    return f"{name}-{digest}"[-128:]


def _wandb(run_dir: epath.Path, cfg, settings: LogSettings):
    import wandb

    from experiments.harness.config import to_dict

    local = os.fspath(run_dir) if not io.is_url(run_dir) else tempfile.mkdtemp(prefix="wandb-")
    kwargs = dict(project=settings.wandb, entity=settings.wandb_entity or None, id=wandb_id(run_dir),
                  name=run_dir.name, group=settings.group or None, dir=local, resume="allow",
                  config={**to_dict(cfg), "run_dir": os.fspath(run_dir)}, reinit="create_new")
    if settings.wandb_mode:
        kwargs["mode"] = settings.wandb_mode
    return wandb.init(**kwargs)


# ----------------------------------------------------------------------------- the log


class MetricsLog:
    """metrics.jsonl plus the sinks `current` settings turn on (process 0 writes; the others
    get a log that does nothing)."""

    def __init__(self, run_dir, cfg, *, writer: bool = True, start_step: int = 0,
                 settings: LogSettings | None = None):
        self.run_dir = epath.Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.writer = writer
        settings = settings or current()
        self.tb = self.wandb = None
        if not writer:
            return
        if settings.tensorboard:
            self.tb = self._start("TensorBoard", lambda: _tensorboard(self.run_dir, start_step))
        if settings.wandb:
            self.wandb = self._start("W&B", lambda: _wandb(self.run_dir, cfg, settings))

    @staticmethod
    def _start(what: str, opener):
        try:
            return opener()
        except Exception as err:  # noqa: BLE001  (metrics.jsonl must not depend on it)
            log.warning("%s logging is off for this run: %s: %s", what, type(err).__name__, err)
            return None

    @staticmethod
    def scalars(record: Mapping[str, Any]) -> dict[str, float]:
        """The tagged scalars of one metrics.jsonl record (None values left out)."""
        out = {tag: float(record[key]) for key, tag in TAGS.items() if record.get(key) is not None}
        for convention, value in (record.get("flops") or {}).items():
            if value is not None:
                out[f"progress/flops_{convention}"] = float(value)
        return out

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record to metrics.jsonl, then to every sink that is on."""
        if not self.writer:
            return
        io.append_jsonl(self.path, [record])
        step, values = int(record["step"]), self.scalars(record)
        if self.tb is not None:
            try:
                for tag, value in values.items():
                    self.tb.add_scalar(tag, value, step, walltime=time.time())
            except Exception as err:  # noqa: BLE001
                log.warning("TensorBoard logging stopped: %s: %s", type(err).__name__, err)
                self.tb = None
        if self.wandb is not None:
            try:
                self.wandb.log(values, step=step)
            except Exception as err:  # noqa: BLE001
                log.warning("W&B logging stopped: %s: %s", type(err).__name__, err)
                self.wandb = None

    def flush(self) -> None:
        """Write what the sinks hold (TensorBoard's events; W&B streams on its own)."""
        if self.tb is not None:
            try:
                self.tb.flush()
            except Exception as err:  # noqa: BLE001
                log.warning("TensorBoard flush failed: %s: %s", type(err).__name__, err)

    def close(self, status: str | None = None) -> None:
        """Flush and close the sinks (``status``, e.g. "completed", goes to W&B's summary)."""
        if self.tb is not None:
            try:
                self.tb.close()
            except Exception as err:  # noqa: BLE001
                log.warning("TensorBoard close failed: %s: %s", type(err).__name__, err)
            self.tb = None
        if self.wandb is not None:
            try:
                if status:
                    self.wandb.summary["status"] = status
                self.wandb.finish(exit_code=0 if status in (None, "completed") else 1)
            except Exception as err:  # noqa: BLE001
                log.warning("W&B finish failed: %s: %s", type(err).__name__, err)
            self.wandb = None
