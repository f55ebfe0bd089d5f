"""Load a trained run from its workdir: its ``Config`` and the params of one checkpoint.

    run = load_run("runs/C1e15_N1.3e5_...")                 # latest checkpoint, numpy leaves
    run = load_run(workdir, step=200, device=True)           # jax.Array leaves on the default device
    run.config, run.params, run.step, run.tokens, run.result
    checkpoint_steps(workdir)                                # [100, 200, ...]

A workdir is what ``experiments.harness.train.train`` writes: ``config.json`` (validated by
``config.from_dict``), ``result.json`` and ``checkpoints/<step>/state`` (orbax: step, params,
opt_state). Only the ``params`` subtree is read (orbax partial restore), so restoring does not
pay for the two Adam moments. ``tokens`` = step x global batch x seq_len, the training tokens
seen at that checkpoint (the batch from result.json, else ``train.make_plan``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from experiments.harness import io
from experiments.harness.config import Config, from_dict
from models.transformer import init_abstract, param_counts


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A run's config, one checkpoint's params and what result.json says (None if absent)."""

    workdir: epath.Path
    config: Config
    params: Any
    step: int
    tokens: int
    result: dict | None

    @property
    def run_id(self) -> str:
        return self.workdir.name

    @property
    def n_params(self) -> dict:
        """{"total", "embedding", "nonembedding"} (``models.transformer.param_counts``)."""
        return param_counts(self.config.model)


def load_config(workdir) -> Config:
    """The run's ``Config`` from ``config.json`` (ValueError if missing or invalid)."""
    path = epath.Path(workdir) / "config.json"
    if not path.exists():
        raise ValueError(f"{workdir}: no config.json; not a training-run workdir")
    try:
        return from_dict(io.read_json(path))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def checkpoint_steps(workdir) -> list[int]:
    """Steps of the complete checkpoints in ``workdir/checkpoints`` (orbax's own listing), sorted."""
    directory = epath.Path(workdir) / "checkpoints"
    if not directory.exists():
        return []
    return sorted(int(s) for s in ocp.utils.checkpoint_steps(directory))


def load_params(workdir, step: int, config: Config, *, device: bool = False):
    """The unboxed params of checkpoint ``step`` (numpy leaves, or jax.Array with ``device``)."""
    path = epath.Path(workdir) / "checkpoints" / str(step) / "state"
    if not path.exists():
        raise ValueError(f"{workdir}: no checkpoint at step {step}; steps: {checkpoint_steps(workdir)}")
    abstract = init_abstract(config.model)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            item={"params": abstract}, restore_args={"params": restore_args}, partial_restore=True))
    params = restored["params"]
    for (where, got), want in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(abstract)):
        if tuple(got.shape) != tuple(want.shape):
            raise ValueError(f"{path}: param {jax.tree_util.keystr(where)} has shape {got.shape}, "
                             f"config.json says {want.shape}")
    return jax.device_put(params) if device else params


def load_run(workdir, step: int | None = None, *, device: bool = False) -> TrainedRun:
    """Config and params of checkpoint ``step`` of a run (default: the latest checkpoint)."""
    from experiments.harness.train import make_plan, read_result

    workdir = epath.Path(workdir)
    config = load_config(workdir)
    steps = checkpoint_steps(workdir)
    if not steps:
        raise ValueError(f"{workdir}: no checkpoints")
    step = steps[-1] if step is None else int(step)
    params = load_params(workdir, step, config, device=device)
    result = read_result(workdir)
    # the batch the run used (a batch rule is rounded to the mesh), else the plan's
    batch = (result or {}).get("global_batch_size") or make_plan(config).global_batch_size
    return TrainedRun(workdir=workdir, config=config, params=params, step=step,
                      tokens=step * int(batch) * config.data.seq_len, result=result)
