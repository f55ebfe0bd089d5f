"""The AOT fit search (MaxText's estimator): for each remat policy, the largest batch that fits.

    python -m experiments.isoflop_chinchilla --workdir runs/aot --preset pod --aot v5p-256 --aot_search

    frontier = search([(run_id, cfg), ...], "v5e-4", max_per_device=64)
    print(format_frontier(frontier)); write_search_json(workdir, frontier)

For every distinct model of a study (its shape, numerics and mesh; the batch, the length and the
learning rate of its runs do not matter here) and every remat policy
(`models.transformer.REMAT_POLICIES`: none, dots_saveable, full), the train step is compiled for
the TPU topology (`experiments.harness.aot.aot_check`, nothing trained) at per-device batches
1, 2, 4, ... until one does not fit, then bisected between the last that fit and the first that
did not. The per-device batch is the global batch over the data x fsdp axes (the axes the batch
is split on; with a tensor axis, a chip's activations hold that many sequences, each split across
the tensor axis); global batches also stay a multiple of the host count.

The frontier: per model and policy, ``max_per_device_batch`` (0 when even 1 does not fit),
its global batch, the compiler's peak bytes per chip there, the HBM per chip, the estimated step
time at `experiments.harness.aot.MFU` and every probe. Each probe is one compile (seconds for the
smoke shapes, about a minute for billion-parameter models), about 2 log2(max) per policy.

The HBM figure is the compiler's estimate (``Compiled.memory_analysis()``: arguments + outputs -
donated + temporaries), not a measurement: the runtime adds its own buffers and fragmentation, and
libtpu versions differ, so leave headroom (MaxText's users keep ~10%) and confirm the chosen batch
with a short run on the hardware.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from etils import epath

from experiments.harness import aot, io
from experiments.harness.config import Config
from models import sharding as msharding
from models.transformer import REMAT_POLICIES

log = logging.getLogger(__name__)

REMINDER = ("peak/chip is the compiler's estimate (memory_analysis at compile time), not a "
            "measurement: the runtime adds buffers and fragmentation; leave ~10% headroom and "
            "confirm the batch with a short run on the hardware")


def _model_key(cfg: Config) -> tuple:
    return (dataclasses.replace(cfg.model, remat="none"), cfg.mesh, cfg.data.seq_len, cfg.quant)


def _probe(run_id: str, cfg: Config, remat: str, per_device: int, shard: int,
           topology: str, slices: int) -> dict:
    global_batch = per_device * shard  # a multiple of divisor: per_device is a multiple of divisor // shard
    probe_cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, remat=remat),
        train=dataclasses.replace(cfg.train, batch_size=global_batch,
                                  tokens=global_batch * cfg.data.seq_len))
    record = aot.aot_check([(f"{run_id}@{remat}x{per_device}", probe_cfg)], topology, slices)[0]
    return {"per_device_batch": per_device, "global_batch": record["batch"],
            "peak_bytes_per_chip": record["peak_bytes_per_chip"], "fits": bool(record["fits"]),
            "step_time_s": record["step_time_s"], "hbm_bytes_per_chip": record["hbm_bytes_per_chip"],
            "sharding_ok": record["sharding_ok"], "error": record["error"]}


def search(configs: Sequence[tuple[str, Config]], topology: str, slices: int = 1, *,
           remats: Sequence[str] = REMAT_POLICIES, max_per_device: int = 1024) -> list[dict]:
    """The frontier (module docstring): one record per distinct model and remat policy."""
    tpu = aot.parse_topology(topology)
    out = []
    seen = set()
    for run_id, cfg in configs:
        key = _model_key(cfg)
        if key in seen:
            continue
        seen.add(key)
        sizes = msharding.parse_mesh_spec(cfg.mesh or None, tpu.chips * slices)
        shard = sizes["data"] * sizes["fsdp"]
        divisor = aot.batch_multiple(cfg.mesh, topology, slices)  # lcm(shard, hosts)
        step = max(1, divisor // shard)  # per-device batches keep the global batch a multiple
        for remat in remats:
            probes: dict[int, dict] = {}

            def fits(b: int) -> bool:
                if b not in probes:
                    probes[b] = _probe(run_id, cfg, remat, b, shard, topology, slices)
                    log.info("AOT search %s remat=%s per-device batch %d: %s", run_id, remat, b,
                             "fits" if probes[b]["fits"] else "does not fit")
                return probes[b]["fits"]

            good, bad = 0, None
            b = step
            while b <= max_per_device:  # doubling
                if fits(b):
                    good, b = b, b * 2
                else:
                    bad = b
                    break
            while bad is not None and good and bad - good > step:  # bisect, in multiples of step
                mid = (good + bad) // 2 // step * step
                if mid <= good:
                    break
                if fits(mid):
                    good = mid
                else:
                    bad = mid
            best = probes.get(good)
            out.append({
                "run_id": run_id, "topology": tpu.name, "slices": slices, "mesh": dict(sizes),
                "n_params": None, "d_model": cfg.model.d_model, "n_layers": cfg.model.n_layers,
                "seq_len": cfg.data.seq_len, "remat": remat,
                "max_per_device_batch": good, "capped": bad is None and good > 0,
                "global_batch": best["global_batch"] if best else 0,
                "peak_bytes_per_chip": best["peak_bytes_per_chip"] if best else None,
                "hbm_bytes_per_chip": tpu.hbm_bytes_per_chip,
                "step_time_s": best["step_time_s"] if best else None,
                "probes": [probes[k] for k in sorted(probes)]})
            from experiments.harness.train import make_plan

            out[-1]["n_params"] = make_plan(cfg).n_params["total"]
    return out


def format_frontier(records: Sequence[dict]) -> str:
    """A fixed-width table, one line per model and policy, and the reminder."""
    header = ("run_id", "params", "seq", "remat", "max batch/device", "global batch", "peak/chip",
              "HBM/chip", "step_s@MFU", "probes")
    rows = [header]
    for r in records:
        best = str(r["max_per_device_batch"]) + ("+" if r["capped"] else "")
        rows.append((r["run_id"], f"{r['n_params']:.3g}", str(r["seq_len"]), r["remat"], best,
                     str(r["global_batch"]), aot._gib(r["peak_bytes_per_chip"]),
                     aot._gib(r["hbm_bytes_per_chip"]),
                     "-" if r["step_time_s"] is None else f"{r['step_time_s']:.3g}",
                     str(len(r["probes"]))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    if records:
        r = records[0]
        lines.append(f"{r['topology']} x{r['slices']}; '+': still fits at the search's cap")
    lines.append("Note: " + REMINDER)
    return "\n".join(lines)


def write_search_json(workdir, records: Sequence[dict]) -> epath.Path:
    """``workdir/aot_search.json`` (atomically), with the reminder; returns the path."""
    path = epath.Path(workdir) / "aot_search.json"
    io.write_json(path, {"note": REMINDER, "frontier": [dict(r) for r in records]})
    return path
