"""Orbax checkpoints of a run: the sharded train state plus a JSON record, saved together.

    manager = make_manager(workdir / "checkpoints", max_to_keep=2)
    save(manager, step, state, {"data": gather_json(iterator.get_state()), ...})
    state, meta = restore(manager, manager.latest_step(), abstract_state)

A checkpoint directory ``checkpoints/<step>/`` holds two items: ``state`` (the pytree of
``jax.Array``, written by every process for its own shards, restored directly into the
shardings of ``abstract_state``, so a restore may use a different mesh) and ``meta`` (JSON,
written by process 0: every process's data-iterator state, the lowest loss so far, the wall
time). Saves are asynchronous (``enable_async_checkpointing``): the arrays are copied to host
memory before ``save`` returns and written in the background; Orbax writes into a temporary
directory and renames it when complete, so a run killed mid-save leaves the previous checkpoint
as the latest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

# Orbax splits the writing of a replicated array among its replicas ("replica-parallel"), which
# slices each array on device: one small XLA compilation per array shape, seconds per save on
# CPU for no gain on small arrays. Arrays under this size are written whole by replica 0.
REPLICA_PARALLEL_MIN_BYTES = 16 * 2**20


def make_manager(directory: epath.PathLike, max_to_keep: int, keep_period: int = 0,
                 *, keep_steps: Sequence[int] = (), read_only: bool = False) -> ocp.CheckpointManager:
    """A CheckpointManager with items "state" (pytree of arrays) and "meta" (JSON); checkpoints
    at multiples of ``keep_period`` (> 0) and at ``keep_steps`` are never deleted (the steps
    branches leave from); ``read_only``: a parent run's checkpoints, read by a branch (nothing
    created or deleted)."""
    if keep_steps:  # orbax's preservation policies: the latest max_to_keep, or a kept step
        policies = [ocp.checkpoint_managers.LatestN(max_to_keep),
                    ocp.checkpoint_managers.CustomSteps(list(keep_steps))]
        if keep_period:
            policies.append(ocp.checkpoint_managers.EveryNSteps(keep_period))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            create=not read_only, read_only=read_only, enable_async_checkpointing=not read_only)
    else:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, keep_period=keep_period or None, create=not read_only,
            read_only=read_only, enable_async_checkpointing=not read_only)
    registry = ocp.type_handlers.create_type_handler_registry(
        (jax.Array, ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_BYTES)))
    return ocp.CheckpointManager(
        epath.Path(directory), options=options,
        item_handlers={"state": ocp.PyTreeCheckpointHandler(type_handler_registry=registry),
                       "meta": ocp.JsonCheckpointHandler()})


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
    """Start saving ``state`` and ``meta`` as step ``step`` (all processes call this)."""
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state), meta=ocp.args.JsonSave(meta)), force=True)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """(state laid out as ``abstract_state``'s shardings, meta dict) of checkpoint ``step``."""
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(abstract_state, restore_args=restore_args),
        meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]


def gather_json(obj: Any) -> list:
    """Every process's JSON-serializable ``obj``, in process order, on every process.

    Each process's JSON text travels as a zero-padded uint8 array through
    ``multihost_utils.process_allgather`` (two collectives: lengths, then bytes).
    """
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([raw.size], np.int32)))
    sizes = sizes.reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: raw.size] = raw
    everything = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(everything[i, : int(sizes[i])])) for i in range(len(sizes))]
