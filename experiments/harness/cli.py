"""The shared command line of every experiment file.

    python -m experiments.NAME --workdir DIR [--preset NAME] [--mesh data=2,fsdp=2,tensor=2]
                               [--set key=value ...] [--host_devices 8]
                               [--coordinator_address HOST:PORT --num_processes N --process_id I]

An experiment file defines ``PRESETS`` (name -> zero-argument function returning its frozen
config dataclass) and calls ``parse(argv, ...)``, which returns the config and the parsed
arguments after JAX has been set up:

* ``--host_devices N`` simulates N CPU devices (``jax_num_cpu_devices``), so a sharded mesh runs
  on a laptop; it must act before JAX initializes its backends, which ``parse`` guarantees.
* Multi-process runs: when ``--num_processes`` (or ``$JAX_NUM_PROCESSES``) is above 1,
  ``jax.distributed.initialize`` is called with ``--coordinator_address``
  (``$JAX_COORDINATOR_ADDRESS``) and ``--process_id`` (``$JAX_PROCESS_ID``); on CPU the
  cross-process collectives use gloo (``jax_cpu_collectives_implementation``). On TPU pods and
  SLURM clusters, ``--distributed auto`` lets JAX detect all three.

Errors: a bad flag, preset, ``--set`` or workdir (a regular file, under one, read-only, no
permission) is one line on stderr, ``<command>: error: <what and where>``, and exit status 2;
no traceback. ``--workdir`` is resolved once here (`io.check_workdir`: relative paths become
absolute, ``gs://`` stays) so every later step sees the same absolute path.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from experiments.harness import io
from experiments.harness.config import apply_overrides

Presets = Mapping[str, Callable[[], Any]]


class CommandFailed(RuntimeError):
    """The command ran but produced nothing useful; its message is one line naming the cause."""


def run(main: Callable[[], Any]) -> None:
    """Call an experiment's ``main()``; a `CommandFailed` becomes ``<command>: error: <message>``
    on stderr and exit status 1 (the traceback, if any, was logged where it happened), a
    ``ValueError`` (bad input found after parsing: a study's design, a prior file) the same line
    with exit status 2."""
    try:
        main()
    except CommandFailed as err:
        fail(command_name(), str(err), status=1)
    except ValueError as err:  # bad input found after parsing (a study's design, a prior file)
        fail(command_name(), str(err), status=2)


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: message``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


OneLineErrors = _OneLineErrors  # for other commands (experiments.reports.branch_grid)


def command_name() -> str:
    """How the user ran this: ``python -m experiments.NAME`` for an experiment file."""
    path = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    parent, stem = os.path.basename(os.path.dirname(path)), os.path.splitext(os.path.basename(path))[0]
    if parent == "experiments" and stem:
        return f"python -m experiments.{stem}"
    if parent == "studies" and stem:  # experiments/studies/<stem>.py
        return f"python -m experiments.studies.{stem}"
    return os.path.basename(path) or "experiment"


def fail(prog: str, message: str, status: int = 2):
    """Print ``prog: error: message`` as one line on stderr and exit with ``status``."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(status)


def make_parser(description: str, presets: Presets, default_preset: str) -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog=command_name(), description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True,
                        help="where the run writes config, metrics, results and checkpoints "
                             "(local path or gs://); rerunning resumes")
    parser.add_argument("--preset", default=default_preset, choices=sorted(presets),
                        help=f"starting configuration (default {default_preset})")
    parser.add_argument("--mesh", default=None,
                        help='device mesh, e.g. "data=2,fsdp=2,tensor=2" (default: all data)')
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override one config field, e.g. model.d_model=256 or "
                             "train.tokens=2e7 (repeatable)")
    parser.add_argument("--host_devices", type=int, default=None,
                        help="simulate this many CPU devices (sets jax_num_cpu_devices)")
    parser.add_argument("--aot", metavar="TOPOLOGY", default=None,
                        help="compile every distinct train step for a Cloud TPU accelerator type "
                             "(e.g. v5p-256, v5e-16) on this machine and check it fits in HBM, "
                             "without training; writes aot.json (needs pip install -e '.[tpu]')")
    parser.add_argument("--aot_slices", type=int, default=1,
                        help="with --aot: the number of slices (multi-slice, DCN data axis)")
    parser.add_argument("--aot_search", metavar="MAX", type=int, nargs="?", const=1024, default=None,
                        help="with --aot: for each remat policy, the largest per-device batch (up "
                             "to MAX, default 1024) of each distinct model that fits (the "
                             "frontier; aot_search.json); nothing is trained")
    group = parser.add_argument_group("executor (where a study's runs train; docs/distributed.md)")
    group.add_argument("--executor", choices=("serial", "ray"), default="serial",
                       help="serial: one run after another in this process (default); ray: each "
                            "run a Ray task (pip install -e '.[ray]')")
    group.add_argument("--ray_address", default=None,
                       help="with --executor ray: the cluster to join (e.g. auto, ray://HOST:10001); "
                            "default: start a local cluster")
    group.add_argument("--ray_workers", type=int, default=None,
                       help="with a local Ray cluster: how many runs train at once (default: CPUs)")
    group.add_argument("--ray_resources", default="cpu",
                       help="what each run's task asks for: cpu (1 CPU), gpu (the GPUs its mesh "
                            "names, else 1) or a TPU slice type such as v5p-8 (one task per slice)")
    group = parser.add_argument_group("multi-process (jax.distributed)")
    group.add_argument("--coordinator_address", default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
                       help="HOST:PORT of process 0 (default $JAX_COORDINATOR_ADDRESS)")
    group.add_argument("--num_processes", type=int,
                       default=_env_int("JAX_NUM_PROCESSES"),
                       help="number of processes (default $JAX_NUM_PROCESSES, else 1)")
    group.add_argument("--process_id", type=int, default=_env_int("JAX_PROCESS_ID"),
                       help="this process's index (default $JAX_PROCESS_ID)")
    group.add_argument("--distributed", choices=("off", "auto"), default="off",
                       help="auto: let jax.distributed.initialize() detect the cluster "
                            "(TPU pods, SLURM, Open MPI)")
    return parser


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name}={value!r} is not an integer") from None


def setup_jax(args: argparse.Namespace) -> None:
    """Simulated host devices and jax.distributed, before anything touches a JAX backend."""
    import jax

    if getattr(args, "aot", None):  # compile-only TPU devices; the process itself stays on the CPU
        os.environ.setdefault("TPU_ACCELERATOR_TYPE", args.aot)
        os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
        if not jax.config.jax_platforms:
            jax.config.update("jax_platforms", "cpu")
    else:  # libtpu (the `tpu` extra, for --aot) must not try to start a TPU that is not there
        from scaling.fitting.solver import skip_absent_tpu

        skip_absent_tpu()

    if args.host_devices is not None:
        if args.host_devices < 1:
            raise ValueError(f"--host_devices {args.host_devices}: must be >= 1")
        jax.config.update("jax_num_cpu_devices", args.host_devices)
    if args.distributed == "auto":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize()
        return
    num_processes = args.num_processes or 1
    if num_processes > 1:
        if not args.coordinator_address or args.process_id is None:
            raise ValueError(
                f"--num_processes {num_processes} needs --coordinator_address and --process_id "
                "(or $JAX_COORDINATOR_ADDRESS and $JAX_PROCESS_ID)")
        if not 0 <= args.process_id < num_processes:
            raise ValueError(f"--process_id {args.process_id}: must be in [0, {num_processes})")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=args.coordinator_address,
                                   num_processes=num_processes, process_id=args.process_id)


def config_from_args(args: argparse.Namespace, presets: Presets):
    """The preset, then --mesh, then each --set in order."""
    cfg = presets[args.preset]()
    if args.mesh is not None:
        if not (dataclasses.is_dataclass(cfg)
                and "mesh" in {f.name for f in dataclasses.fields(cfg)}):
            raise ValueError(f"--mesh: the {type(cfg).__name__} config has no mesh field")
        cfg = dataclasses.replace(cfg, mesh=args.mesh)
    return apply_overrides(cfg, args.overrides)


def parse(argv: Sequence[str] | None, *, description: str, presets: Presets,
          default_preset: str) -> tuple[Any, argparse.Namespace]:
    """Parse the command line, build the config (errors exit with a usage message), set up JAX."""
    parser = make_parser(description, presets, default_preset)
    args = parser.parse_args(argv)
    try:
        from experiments.harness import metrics_log

        args.overrides, args.log = metrics_log.split_overrides(args.overrides)
        cfg = config_from_args(args, presets)
        args.workdir = io.check_workdir(args.workdir)
        setup_jax(args)
    except ValueError as err:
        parser.error(str(err))
    return cfg, args
