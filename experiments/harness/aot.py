"""Ahead-of-time check of a study for a Cloud TPU topology, on a CPU machine, before reserving it.

    records = aot_check([(run_id, cfg), ...], "v5p-256")      # compiles, trains nothing
    print(format_table(records)); write_aot_json(workdir, records)
    problems = failures(records)                              # [] when every shape fits

For each distinct train step of the study (a :class:`experiments.harness.train.StepKey`: model
shape, optimizer settings, batch, mesh; runs that share one are compiled once), the step is
lowered from abstract values and compiled by libtpu for the topology's devices
(``jax.experimental.topologies.get_topology_desc``), with the run's own mesh over them, as
MaxText's ``train_compile.py`` does. Nothing is trained and no device buffer is touched.

Needs libtpu (``pip install -e '.[tpu]'``, which pins the libtpu of jax's ``tpu`` extra); the
process may keep ``JAX_PLATFORMS=cpu``. libtpu's start-up noise ("Failed to find host bounds",
"unexpected worker hostname") is silenced by setting ``TPU_ACCELERATOR_TYPE`` and
``TPU_WORKER_HOSTNAMES=localhost``, and ``ALLOW_MULTIPLE_LIBTPU_LOAD=1`` lets several checks run
at once (done here, unless already set).

Accelerator-type names are Cloud TPU's: ``v4-N`` and ``v5p-N`` count TensorCores (2 per chip,
one "megacore" JAX device per chip: N/2 chips in a 3-D torus), ``v5e-N`` and ``v6e-N`` count
chips (2-D). Shapes follow the Cloud TPU slice shapes for power-of-two sizes (v5p-16 = 2x2x2,
v5p-256 = 4x4x8, v5e-256 = 16x16); other sizes are a ValueError.

Each record: ``run_id`` (the first run with that step; ``runs`` lists all of them), ``topology``,
``slices``, ``chips``, ``mesh``, ``batch``, ``seq_len``, ``remat``, ``attention``,
``peak_bytes_per_chip`` = argument + output - aliased (the donated state) + temporary bytes of
the compiled step (``Compiled.memory_analysis()``; when the compiler itself refuses the program,
e.g. RESOURCE_EXHAUSTED, its message is in ``error`` and the peak is the temporaries it quotes,
a lower bound, or None), ``hbm_bytes_per_chip``, ``fits``, ``flops_per_step``
(analytic, ``scaling.flops`` "exact" convention x tokens per step; XLA's ``cost_analysis``
counts a scanned layer's while-loop body once), ``mfu_assumed`` and ``step_time_s`` =
flops_per_step / (chips x peak bf16 FLOP/s per chip x MFU), ``param_bytes_ratio`` (parameter
bytes per chip / the ideal, ``models.sharding.sharding_report``), ``sharding_ok`` (whether
``train``'s sharding check would accept it) and ``compile_s``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import time
from collections.abc import Sequence

import jax
from etils import epath
from jax.sharding import AxisType, Mesh

from experiments.harness import io
from experiments.harness.config import Config
from experiments.harness.plan import make_plan
from experiments.harness.step import StepKey, build
from models import sharding as msharding
from scaling import flops as sflops

log = logging.getLogger(__name__)

GiB = 2**30
MFU = 0.4  # the MFU at which step times are estimated (a typical dense-LM figure on TPU)
FLOP_CONVENTION = "exact"

# generation -> (topology prefix, chip config, cores per chip in the name, dims, HBM per chip).
# HBM per chip from the Cloud TPU system-architecture pages: v4 32 GiB, v5e 16 GiB, v5p 95 GiB,
# v6e (Trillium) 32 GiB (libtpu reports 95.74 GiB available on v5p). Peak FLOP/s come from
# scaling.flops.PEAK_TFLOPS.
GENERATIONS = {
    "v4": ("v4", "megacore", 2, 3, 32 * GiB),
    "v5p": ("v5", "megacore", 2, 3, 95 * GiB),
    "v5e": ("v5e", "default", 1, 2, 16 * GiB),
    "v6e": ("v6e", "default", 1, 2, 32 * GiB),
}


@dataclasses.dataclass(frozen=True)
class TpuTopology:
    """A Cloud TPU accelerator type resolved to what ``get_topology_desc`` takes."""

    name: str  # "v5p-16"
    generation: str  # "v5p"
    chips: int
    topology_name: str  # "v5:2x2x2"
    chip_config_name: str
    chips_per_host_bounds: tuple[int, int, int]
    hbm_bytes_per_chip: int

    @property
    def hosts(self) -> int:
        return max(1, self.chips // math.prod(self.chips_per_host_bounds))


def _slice_shape(chips: int, dims: int) -> tuple[int, ...]:
    """Power-of-two slice shape: start at 1x1(x1), double the last of the smallest dimensions
    (v5p: 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8, ...; v5e: 2x2, 2x4, 4x4, 4x8, 8x8, ...)."""
    shape = [1] * dims
    if dims == 3:
        shape = [2, 2, 1] if chips >= 4 else shape
    while math.prod(shape) < chips:
        smallest = min(shape)
        i = max(j for j, s in enumerate(shape) if s == smallest)
        shape[i] *= 2
    return tuple(shape)


def parse_topology(name: str) -> TpuTopology:
    """"v5p-16" -> TpuTopology(chips=8, topology_name="v5:2x2x2", ...). ValueError otherwise."""
    match = re.fullmatch(r"(v4|v5p|v5e|v6e)-(\d+)", name.strip().lower())
    if not match:
        raise ValueError(f"--aot {name!r}: expected a Cloud TPU accelerator type such as "
                         f"v5p-16, v5e-256, v6e-64 or v4-32 (generations {sorted(GENERATIONS)})")
    gen, count = match.group(1), int(match.group(2))
    prefix, chip_config, per_chip, dims, hbm = GENERATIONS[gen]
    chips = count // per_chip
    if count % per_chip or chips < 1 or chips & (chips - 1) or (dims == 3 and chips < 4):
        raise ValueError(f"--aot {name!r}: only power-of-two slices are supported "
                         f"({'at least 8 cores, ' if dims == 3 else ''}e.g. {gen}-"
                         f"{8 if dims == 3 else 16}, {gen}-{256})")
    shape = _slice_shape(chips, dims)
    bounds = (2, 2, 1) if chips >= 4 else (1, 1, 1)
    return TpuTopology(name=f"{gen}-{count}", generation=gen, chips=chips,
                       topology_name=f"{prefix}:{'x'.join(map(str, shape))}",
                       chip_config_name=chip_config, chips_per_host_bounds=bounds,
                       hbm_bytes_per_chip=hbm)


def topology_devices(topology: TpuTopology, slices: int = 1) -> list:
    """The compile-only devices of ``slices`` slices of ``topology`` (libtpu needed)."""
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", topology.name)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # compile-only: no chip is opened, so libtpu's one-process lock (/tmp/libtpu_lockfile)
    # need not keep two checks (or a check and a test) from running side by side
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    desc = topologies.get_topology_desc(
        platform="tpu", topology_name=topology.topology_name,
        chip_config_name=topology.chip_config_name,
        chips_per_host_bounds=topology.chips_per_host_bounds, num_slices=slices)
    return list(desc.devices)


def topology_mesh(spec: str, devices: Sequence, slices: int = 1) -> Mesh:
    """The run's ``mesh`` spec over the topology's devices; with several slices the ``data``
    axis spans them (over the data-centre network), the rest stays inside each slice."""
    if slices == 1:
        return msharding.make_mesh(spec or None, devices)
    from jax.experimental import mesh_utils

    sizes = msharding.parse_mesh_spec(spec or None, len(devices))
    if sizes["data"] % slices:
        raise ValueError(f"mesh {spec!r}: the data axis ({sizes['data']}) must be a multiple of "
                         f"the {slices} slices, which it spans")
    per_slice = (sizes["data"] // slices, sizes["fsdp"], sizes["tensor"])
    grid = mesh_utils.create_hybrid_device_mesh(per_slice, (slices, 1, 1), devices)
    return Mesh(grid, msharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def batch_multiple(mesh_spec: str, topology: str, slices: int = 1) -> int:
    """What a study's global batch must be a multiple of on ``topology`` x ``slices`` with
    ``mesh_spec``: the data x fsdp axes and the host count (``train.make_plan``'s rule), for
    fitting a study's batch to the pod rather than to this machine's devices."""
    tpu = parse_topology(topology)
    sizes = msharding.parse_mesh_spec(mesh_spec or None, tpu.chips * slices)
    return math.lcm(sizes["data"] * sizes["fsdp"], tpu.hosts * slices)


def _advice(cfg: Config, record: dict) -> str:
    tips = []
    if cfg.model.remat == "none":
        tips.append("model.remat=full (recompute each block in the backward pass)")
    elif cfg.model.remat == "dots_saveable":
        tips.append("model.remat=full")
    tips.append(f"a smaller train.batch_size (now {record['batch']}; halving it roughly halves "
                "the activations)")
    mesh = record["mesh"]
    if mesh.get("data", 1) > 1:
        tips.append(f"move devices from data to fsdp in the mesh (now {mesh}), which splits "
                    "parameters and optimizer state")
    tips.append("a larger topology")
    return "; or ".join(tips)


def _memory(compiled) -> int:
    stats = compiled.memory_analysis()
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
               - stats.alias_size_in_bytes + stats.temp_size_in_bytes)


def aot_check(configs: Sequence[tuple[str, Config]], topology: str, slices: int = 1,
              mfu: float = MFU) -> list[dict]:
    """Compile the train step of every distinct shape in ``configs`` for ``topology``.

    ``configs``: (run_id, Config) pairs, e.g. a study's runs; ``topology``: a Cloud TPU
    accelerator type ("v5p-256"); ``slices``: how many such slices (multislice, data axis
    across them). Returns one record per distinct step (module docstring), in input order.
    A program the compiler rejects (e.g. RESOURCE_EXHAUSTED) gives fits=False and ``error``;
    any other problem (a mesh that does not fit the topology, a bad name) raises ValueError.
    """
    if slices < 1:
        raise ValueError(f"--aot_slices must be >= 1, got {slices}")
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    tpu = parse_topology(topology)
    devices = topology_devices(tpu, slices)
    chips = len(devices)
    peak = sflops.peak_flops(devices[0].device_kind, "bfloat16")
    records: list[dict] = []
    by_key: dict[StepKey, dict] = {}
    meshes: dict[str, Mesh] = {}
    for run_id, cfg in configs:
        if cfg.mesh not in meshes:
            try:
                meshes[cfg.mesh] = topology_mesh(cfg.mesh, devices, slices)
            except ValueError as err:
                raise ValueError(f"run {run_id}: mesh {cfg.mesh!r} on {tpu.name} x{slices} "
                                 f"({chips} chips): {err}") from None
        mesh = meshes[cfg.mesh]
        multiple = batch_multiple(cfg.mesh, tpu.name, slices)
        plan = make_plan(cfg, multiple)
        key = StepKey.of(cfg, plan, mesh)
        if key in by_key:
            by_key[key]["runs"].append(run_id)
            continue
        flops_per_step = plan.flops_per_token[FLOP_CONVENTION] * plan.tokens_per_step
        record = {
            "run_id": run_id, "runs": [run_id], "topology": tpu.name, "slices": slices,
            "chips": chips, "mesh": dict(mesh.shape), "batch": plan.global_batch_size,
            "seq_len": plan.seq_len, "remat": cfg.model.remat,
            "attention": key.model.attention_impl,
            "n_params": plan.n_params["total"], "peak_bytes_per_chip": None,
            "hbm_bytes_per_chip": tpu.hbm_bytes_per_chip, "fits": False,
            "flops_per_step": flops_per_step, "flop_convention": FLOP_CONVENTION,
            "mfu_assumed": mfu, "step_time_s": flops_per_step / (chips * peak * mfu),
            "param_bytes_ratio": None, "sharding_ok": None, "compile_s": None, "error": None,
            "advice": None}
        start = time.perf_counter()
        try:
            setup = build(cfg, plan, mesh, compile_eval=False)
            record["param_bytes_ratio"] = msharding.sharding_report(
                setup.abstract_state["params"], setup.state_shardings["params"])["ratio"]
            tolerance = cfg.sharding_tolerance
            record["sharding_ok"] = (tolerance is None
                                     or record["param_bytes_ratio"] <= 1 + tolerance)
            record["peak_bytes_per_chip"] = _memory(setup.compiled_train_step)
            record["fits"] = record["peak_bytes_per_chip"] <= tpu.hbm_bytes_per_chip
        except jax.errors.JaxRuntimeError as err:  # the compiler's verdict, e.g. out of HBM
            record["error"] = str(err).splitlines()[0][:500]
            needed = re.search(r"HLO temporaries \(([\d.]+)G\)", record["error"])
            if needed:  # XLA prints GiB; temporaries alone: a lower bound of the peak
                record["peak_bytes_per_chip"] = int(float(needed.group(1)) * GiB)
        record["compile_s"] = time.perf_counter() - start
        if not record["fits"]:
            record["advice"] = _advice(cfg, record)
        if record["sharding_ok"] is False:
            mesh_sizes = record["mesh"]
            record["advice"] = (
                f"a mesh whose fsdp ({mesh_sizes['fsdp']}) divides d_model ({cfg.model.d_model}) "
                f"and whose tensor ({mesh_sizes['tensor']}) divides the heads "
                f"({cfg.model.n_heads}, kv {cfg.model.n_kv_heads}) and d_ff ({cfg.model.d_ff}), "
                "e.g. fewer fsdp devices and the rest on data")
        log.info("AOT %s on %s: %s", run_id, tpu.name, _gib(record["peak_bytes_per_chip"]))
        by_key[key] = record
        records.append(record)
    return records


def _gib(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f} GiB"


def failures(records: Sequence[dict]) -> list[str]:
    """One message per record that does not fit, or that the sharding check would refuse
    (``train`` would fail it before training): the run, its numbers and what to change."""
    out = []
    for r in records:
        if r.get("sharding_ok") is False:
            out.append(f"run {r['run_id']} would be refused by the sharding check on "
                       f"{r['topology']} (mesh {r['mesh']}): each chip holds "
                       f"{r['param_bytes_ratio']:.3g}x the ideal parameter bytes. Try "
                       f"{r['advice']}.")
            continue
        if r["fits"]:
            continue
        why = (f"needs {_gib(r['peak_bytes_per_chip'])} per chip, HBM is "
               f"{_gib(r['hbm_bytes_per_chip'])}" if r["peak_bytes_per_chip"] is not None
               else f"the compiler refused it: {r['error']}")
        out.append(f"run {r['run_id']} does not fit {r['topology']} (mesh {r['mesh']}, batch "
                   f"{r['batch']} x {r['seq_len']}, remat {r['remat']}): {why}. "
                   f"Try {r['advice']}.")
    return out


def format_table(records: Sequence[dict]) -> str:
    """A fixed-width table of the records (one line per distinct step)."""
    header = ("run_id", "runs", "mesh", "batch", "remat", "attention", "peak/chip", "HBM/chip",
              "fits", "FLOP/step", "step_s@MFU")
    rows = [header]
    for r in records:
        mesh = ",".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1) or "1"
        rows.append((r["run_id"], str(len(r["runs"])), mesh, f"{r['batch']}x{r['seq_len']}",
                     r["remat"], r["attention"], _gib(r["peak_bytes_per_chip"]),
                     _gib(r["hbm_bytes_per_chip"]), "yes" if r["fits"] else "NO",
                     f"{r['flops_per_step']:.3g}", f"{r['step_time_s']:.3g}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if records:
        r = records[0]
        lines.append(f"{r['topology']} x{r['slices']} ({r['chips']} chips); step time at "
                     f"{r['mfu_assumed']:.0%} MFU of bf16 peak, FLOPs by the "
                     f"{r['flop_convention']!r} convention")
    return "\n".join(lines)


def write_aot_json(workdir, records: Sequence[dict]) -> epath.Path:
    """Write ``records`` to ``workdir/aot.json`` (atomically); returns the path."""
    path = epath.Path(workdir) / "aot.json"
    io.write_json(path, [dict(r) for r in records])
    return path


def read_aot_json(path) -> list[dict]:
    """Load and validate an aot.json (a list of records with the required keys)."""
    data = io.read_json(epath.Path(path))
    required = ("run_id", "topology", "peak_bytes_per_chip", "hbm_bytes_per_chip", "fits",
                "flops_per_step", "step_time_s", "mfu_assumed")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path}: expected a list of AOT records")
    for i, r in enumerate(data):
        missing = [k for k in required if k not in r]
        if missing:
            raise ValueError(f"{path}: record {i} lacks {missing}")
        if not isinstance(r["fits"], bool):
            raise ValueError(f"{path}: record {i}: fits must be a boolean")
    return data

