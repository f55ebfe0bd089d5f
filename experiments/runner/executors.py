"""Where a study's runs execute: one after another in this process (the default), or as Ray tasks.

    executor = make_executor("ray", address=None, workers=2, resources="cpu")
    for index, outcome in executor.imap(train_one, [(cfg, run_dir), ...], [cfg, ...]):
        ...   # outcomes as they finish: Outcome(ok, value, error, traceback, elapsed_s)

The runner (`experiments.runner.runs.train_runs`, `experiments.runner.measure.measure_runs`)
hands each unit of work (one run's training; one run's pending measure items) to an executor and
writes results.csv / ``<name>.csv`` itself as outcomes arrive, so resume, skip-finished, failure
recording, the progress bar and the exit status are the same whichever executor runs them; rows
keep the runs' order, so the files are the same bytes.

* `SerialExecutor`: calls the function in order, in this process; nothing to install.
* `RayExecutor` (``--executor ray``, ``pip install -e '.[ray]'``): one Ray task per unit, each
  asking for what its config needs (`task_resources`): ``cpu`` one CPU; ``gpu`` the GPUs its mesh
  names (``data=2,fsdp=4`` -> 8; an empty mesh -> 1), Ray setting ``CUDA_VISIBLE_DEVICES``; a TPU
  slice type such as ``v5p-8`` the whole slice, through the ``TPU-<type>-head`` resource Ray's TPU
  nodes advertise (one such resource per slice), so one run owns one slice. With no
  ``--ray_address`` a local cluster starts with ``--ray_workers`` CPUs (default: all); otherwise
  ``ray.init(address)`` joins a running cluster (``auto``, ``ray://host:10001``).
  The workers run with the driver's environment variables (``JAX_*``, ``XLA_FLAGS``, the W&B
  and emulator settings; `worker_env`) and the driver's log settings, and import this repository
  (on a local cluster through ``PYTHONPATH``; on a cluster, install it on every node or ship it
  with a Ray ``runtime_env``). An exception in a run comes back as its type and message, exactly
  as the serial runner records it; a task that dies (out of memory, node lost) is recorded as
  ``RayTaskError``/``WorkerCrashedError`` and the study goes on.

A multi-host TPU slice (v5p-16 and up) needs one JAX process per host; this module asks for the
slice's head only (one task per slice), which is enough for single-host slices. Multi-host slices
are not run here yet: see docs/distributed.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

ENV_PREFIXES = ("JAX_", "XLA_", "TPU_", "WANDB_", "STORAGE_EMULATOR_HOST", "TENSORSTORE_",
                "GOOGLE_", "TF_CPP_", "PYTHONPATH")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one unit of work returned (``ok``, ``value``) or raised (``error``: "Type: message")."""

    ok: bool
    value: Any = None
    error: str = ""
    traceback: str = ""
    elapsed_s: float = 0.0


def call(fn: Callable, args: tuple, log_settings=None) -> Outcome:
    """Run ``fn(*args)``; an exception becomes a failed `Outcome` (KeyboardInterrupt and
    SystemExit propagate)."""
    if log_settings is not None:
        from experiments.harness import metrics_log

        metrics_log.configure(log_settings)
    started = time.perf_counter()
    try:
        value = fn(*args)
    except Exception as err:  # noqa: BLE001  (a run's failure must not stop the study)
        return Outcome(False, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(),
                       elapsed_s=time.perf_counter() - started)
    return Outcome(True, value, elapsed_s=time.perf_counter() - started)


class SerialExecutor:
    """Units in order, in this process (the default; the runner's behaviour before executors)."""

    name = "serial"

    def imap(self, fn: Callable, args: Sequence[tuple], configs: Sequence = ()) -> Iterator[tuple[int, Outcome]]:
        for index, unit in enumerate(args):
            yield index, call(fn, unit)

    def close(self) -> None:
        pass


def mesh_devices(mesh: str) -> int | None:
    """The device count a mesh spec names ("data=2,fsdp=4" -> 8); None for "" (all devices)."""
    if not mesh:
        return None
    sizes = []
    for part in mesh.split(","):
        _, _, size = part.partition("=")
        sizes.append(int(size))
    return math.prod(sizes) if sizes and all(s > 0 for s in sizes) else None


def task_resources(config, kind: str = "cpu") -> dict:
    """Ray task options for one run of ``config`` (see the module docstring)."""
    kind = (kind or "cpu").strip().lower()
    if kind == "cpu":
        return {"num_cpus": 1}
    if kind == "gpu":
        return {"num_cpus": 1, "num_gpus": mesh_devices(getattr(config, "mesh", "")) or 1}
    if kind.startswith("v") and "-" in kind:  # a Cloud TPU slice type: the whole slice
        return {"num_cpus": 1, "resources": {f"TPU-{kind}-head": 1}}
    raise ValueError(f"--ray_resources {kind!r}: cpu, gpu or a TPU slice type such as v5p-8")


def worker_env() -> dict[str, str]:
    """The driver's environment variables that a worker must share to compute the same numbers
    and reach the same stores (JAX/XLA flags, W&B, the storage endpoints, the import path)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([repo, *env.get("PYTHONPATH", "").split(os.pathsep),
                                                       *paths[:1]]))
    env["PYTHONPATH"] = env["PYTHONPATH"].strip(os.pathsep)
    return env


class RayExecutor:
    """One Ray task per unit; outcomes in the order they finish."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, resources: str = "cpu"):
        try:
            import ray
        except ImportError as err:
            raise ImportError("--executor ray needs Ray: pip install -e '.[ray]'") from err
        import jax

        if jax.process_count() > 1:  # each Ray task is a whole JAX program of its own
            raise ValueError("--executor ray: each run is one Ray task, one JAX process; drop "
                             "--num_processes/--distributed (for a multi-host slice see docs/distributed.md)")
        self.ray, self.kind = ray, resources
        task_resources(None, resources)  # a bad kind fails before the cluster starts
        self.started_cluster = not ray.is_initialized() and not address
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave the machine
            options = dict(runtime_env={"env_vars": worker_env()}, include_dashboard=False,
                           log_to_driver=False, configure_logging=False)
            with warnings.catch_warnings():  # fork+exec of Ray's daemons after JAX started: harmless
                warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
                if address:
                    ray.init(address=address, **options)
                else:  # a local cluster, on the loopback interface only
                    ray.init(num_cpus=workers or os.cpu_count() or 1, object_store_memory=200 * 2**20,
                             _node_ip_address="127.0.0.1", **options)
        self._remote = ray.remote(max_retries=0)(call)

    def imap(self, fn: Callable, args: Sequence[tuple], configs: Sequence = ()) -> Iterator[tuple[int, Outcome]]:
        from experiments.harness import metrics_log

        ray = self.ray
        settings = metrics_log.current()  # the study's, as run_study set them (group = its name)
        futures = {}
        for index, unit in enumerate(args):
            config = configs[index] if index < len(configs) else None
            options = task_resources(config, self.kind)
            futures[self._remote.options(**options).remote(fn, unit, settings)] = index
        try:
            while futures:
                done, _ = ray.wait(list(futures), num_returns=1)
                ref = done[0]
                index = futures.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as err:  # the task died, not the run's code
                    outcome = Outcome(False, error=f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")
                yield index, outcome
        finally:
            for ref in futures:  # the study stopped (Ctrl-C, an error in the driver)
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started_cluster and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(name: str = "serial", *, address: str | None = None, workers: int | None = None,
                  resources: str = "cpu"):
    """The executor a study's command line asks for (``--executor``, ``--ray_*``)."""
    if name in (None, "", "serial"):
        return SerialExecutor()
    if name == "ray":
        return RayExecutor(address, workers, resources)
    raise ValueError(f"--executor {name!r}: serial or ray")


def from_args(args):
    """The executor of a parsed command line (``--executor``, ``--ray_address``, ...)."""
    return make_executor(getattr(args, "executor", "serial"), address=getattr(args, "ray_address", None),
                         workers=getattr(args, "ray_workers", None),
                         resources=getattr(args, "ray_resources", "cpu"))
