"""Train a language model: ``train(cfg, workdir) -> result dict``.

    from experiments.harness.train import train
    result = train(cfg, "/tmp/lm")      # rerun: resumes, or returns the stored result

The loop, and what it writes; the parts it runs live beside it, one job each:
``plan`` (config -> steps, batch, learning rate), ``step`` (the compiled train step and its
cache), ``evaluate`` (held-out loss and its SEM), ``divergence`` (when to stop). Their names are
importable from here too.

A sharded train state {step, params, opt_state, schedule} on a ``data x fsdp x
tensor`` mesh (``models.sharding``); an ahead-of-time compiled ``jax.jit`` train step with
explicit in/out shardings and the state donated; AdamW (``experiments.harness.optimizer``) with a
cosine / warmup-stable-decay (linear or 1-sqrt cooldown) / constant / step schedule, global-norm
clipping, optional z-loss and muP per-parameter learning rates; batches from ``experiments.harness.data``, each process loading
exactly the rows its devices hold (``experiments.harness.batches``, derived from the batch
sharding). Before anything is allocated, fresh start or resume, ``models.sharding.check_sharding``
refuses a mesh on which a device would hold more than (1 + ``cfg.sharding_tolerance``) x the
ideal parameter bytes.

The schedule's numbers are data in the train state, the compiled steps are cached by their
:class:`StepKey`, and the loss is the weighted token cross-entropy (``experiments.harness.step``);
the held-out loss and its SEM are ``experiments.harness.evaluate``'s.

Files in ``workdir`` (process 0 writes; each atomically): ``config.json``; ``metrics.jsonl``, one
object per logged step {step, tokens, flops{convention: FLOPs}, train_loss (mean over the steps
since the previous record), learning_rate (the rate the step of the record used, as computed by
the compiled step), grad_norm (mean, before clipping), step_time_s, tokens_per_s, mfu (from the
"exact" FLOP count; null when the device's peak is unknown)} and per evaluation {step, tokens,
flops, eval_loss, eval_loss_sem}, each with ``epochs`` (mean reads of each unique token) when
``data.unique_tokens`` caps the data, and per dense-curve point (``train.curve_every`` tokens)
{step, tokens, flops, curve_loss, curve_loss_sem} on the first ``train.curve_batches`` held-out
batches (their time is result.json's ``curve_eval_s``, left out of step_time_s); ``result.json``
at the end (with a cap: ``unique_tokens``, ``epochs`` and ``unique_tokens_seen``);
``checkpoints/`` (orbax: the train state and, as JSON, every process's data-iterator state, the
divergence monitor's state and the wall time, so a resumed run continues exactly).

Branches (``train.parent``): a WSD run that starts from a stable run's checkpoint at the step
where its cooldown begins, and equals the same config trained straight through (see
:func:`train` and :func:`check_branch`); result.json adds parent, branch_step and flops_own (the
FLOPs of its own steps).

Timing: the steps run asynchronously; at every host sync point (log, eval and checkpoint steps)
the loop blocks until the last step's outputs are ready, so the time between consecutive sync
points is real time: data loading, dispatch and the device work of those steps. step_time_s is
that time over the steps in between (evaluation and checkpoint saving excluded), and
tokens_per_s = global_batch_size x seq_len / step_time_s.

Divergence (``experiments.harness.divergence``): a NaN/inf training loss, or a smoothed loss that
stays above ``train.divergence_ratio`` x the lowest so far, ends the run with status "diverged".
Losses are fetched at log, eval and checkpoint steps (one host sync per ``log_every`` steps), so
the run may go on for up to ``log_every - 1`` steps past that step; nothing after it is saved.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from etils import epath
from tqdm import tqdm

from experiments.harness import batches, checkpoint, io, metrics_log
from experiments.harness.config import Config, config_hash, from_dict, to_dict
from experiments.harness.data import make_eval_batches, make_tokenizer, make_train_iterator
from experiments.harness.subsets import check_cap, epochs_read
from experiments.harness.divergence import DivergenceMonitor
from experiments.harness.evaluate import evaluate, host_value
from experiments.harness.optimizer import (SCHEDULE_KEYS, learning_rate, lr_schedule,  # noqa: F401
                                          make_optimizer, schedule_args, set_learning_rate)
from experiments.harness.plan import Plan, make_plan
from experiments.harness.step import (BATCH_KEYS, Layout, Setup, StepKey, build,  # noqa: F401
                                      compiled_eval_step, compiled_train_step, global_batch,
                                      init_state, layout, loss_fn, lower_train_step, token_losses,
                                      with_schedule)
from models import sharding as msharding
from scaling import flops as sflops

log = logging.getLogger(__name__)

MFU_CONVENTION = "exact"
FINAL_STATUSES = ("completed", "diverged")


# ----------------------------------------------------------------------------- helpers


def _peak_flops(device_kind: str, dtype: str) -> float | None:
    try:
        return sflops.peak_flops(device_kind, dtype)
    except ValueError:
        return None


def _comparable(config_dict: dict) -> dict:
    """What must match for a rerun to resume: everything but the mesh (restores reshard) and
    the sharding check's tolerance (neither changes the numbers)."""
    return {k: v for k, v in config_dict.items() if k not in ("mesh", "sharding_tolerance")}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]


def _check_workdir_config(cfg: Config, workdir: epath.Path) -> None:
    path = workdir / "config.json"
    if not path.exists():
        return
    # through from_dict, so a config.json written before a field existed gets its default
    diffs = _differences(_comparable(to_dict(from_dict(io.read_json(path)))), _comparable(to_dict(cfg)))
    if diffs:
        raise ValueError(f"{workdir} holds a run of a different config; use a new workdir or "
                         f"the same settings. Differences (stored -> now): {diffs[:10]}")


def read_result(workdir) -> dict | None:
    """The result.json of a workdir, or None."""
    path = epath.Path(workdir) / "result.json"
    return io.read_json(path) if path.exists() else None


# ----------------------------------------------------------------------------- the run


def train(cfg: Config, workdir, *, devices: Sequence | None = None, parent_dir=None) -> dict:
    """Train ``cfg`` in ``workdir`` (resuming from its latest checkpoint); returns result.json.

    ``devices`` defaults to all devices (every process's); ``cfg.mesh`` lays them out. A
    workdir whose result.json says "completed" or "diverged" is left untouched and its result
    returned. Exceptions after set-up write status "failed" (with the reason) and re-raise.

    A branch (``cfg.train.parent`` set) with no checkpoint of its own starts from the parent's
    checkpoint at ``plan.branch_step`` (``parent_dir``, by default the sibling directory named
    ``cfg.train.parent``): its train state with this run's schedule numbers, its data-iterator
    and divergence-monitor states, and its metrics records up to that step. The parent must be
    the same run up to there (model, data, optimizer, seed, batch, and the same learning rate at
    every step before it); a parent that differs, has no checkpoint at that step, or whose stable
    phase ends before it is a ``ValueError`` naming it, raised before anything is written.
    """
    workdir = io.resolve_workdir(workdir)  # Orbax needs absolute paths; gs:// stays
    writer = jax.process_index() == 0
    _check_workdir_config(cfg, workdir)
    previous = read_result(workdir)
    if previous is not None and previous.get("status") in FINAL_STATUSES:
        log.info("%s: already %s at step %s; nothing to do", workdir, previous["status"],
                 previous.get("step"))
        return previous

    devices = list(jax.devices() if devices is None else devices)
    mesh = msharding.make_mesh(cfg.mesh or None, devices)
    batch_axes = mesh.shape["data"] * mesh.shape["fsdp"]
    multiple = math.lcm(batch_axes, jax.process_count())
    plan = make_plan(cfg, multiple)
    _validate(cfg, plan, multiple)
    parent = None
    if cfg.train.parent:
        parent = io.resolve_workdir(parent_dir) if parent_dir is not None else (
            workdir.parent / cfg.train.parent)
        if not checkpoint_steps(workdir):  # a branch that saved once resumes from its own
            check_branch(cfg, plan, parent, multiple)
    if writer:
        io.write_json(workdir / "config.json", to_dict(cfg))

    started = time.perf_counter()
    try:
        return _run(cfg, plan, mesh, workdir, writer, started, parent)
    except Exception as err:
        if writer:
            io.write_json(workdir / "result.json", {
                "status": "failed", "reason": f"{type(err).__name__}: {err}",
                "config_hash": config_hash(cfg), "wall_time_s": time.perf_counter() - started})
        raise


def check(cfg: Config, *, devices: Sequence | None = None) -> Plan:
    """The checks `train` makes before it writes anything, on their own: a ValueError naming the
    bad field (commands call it first, so bad input exits 2); the run's plan."""
    devices = list(jax.devices() if devices is None else devices)
    mesh = msharding.make_mesh(cfg.mesh or None, devices)
    multiple = math.lcm(mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count())
    plan = make_plan(cfg, multiple)
    _validate(cfg, plan, multiple)
    return plan


def _validate(cfg: Config, plan: Plan, multiple: int) -> None:
    # the unique-token cap against the corpus and one batch (experiments.harness.subsets)
    check_cap(cfg.data, global_batch_size=plan.global_batch_size)
    vocab = make_tokenizer(cfg.data).vocab_size
    if vocab > cfg.model.vocab_size:
        raise ValueError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the "
                         f"{cfg.data.tokenizer} tokenizer's vocabulary ({vocab})")
    if cfg.data.seq_len > cfg.model.max_seq_len:
        raise ValueError(f"data.seq_len={cfg.data.seq_len} exceeds model.max_seq_len="
                         f"{cfg.model.max_seq_len}")
    if cfg.train.eval_batch_size % multiple:
        raise ValueError(f"train.eval_batch_size={cfg.train.eval_batch_size} must be a multiple "
                         f"of {multiple} (data x fsdp mesh axes and process count)")


# fields a branch may set differently from its parent: its length and schedule, and bookkeeping
# that changes no number; lr, warmup and batch_size are compared resolved (the rates, the rows)
BRANCH_FREE_FIELDS = ("tokens", "schedule", "decay_fraction", "decay_steps", "cooldown",
                      "step_milestones", "step_factor", "min_lr_ratio", "parent", "keep_every",
                      "keep_steps",
                      "checkpoint_every", "max_checkpoints", "log_every", "eval_every",
                      "curve_every", "curve_batches", "lr", "warmup", "batch_size")


def checkpoint_steps(run_dir) -> list[int]:
    """The steps of the finished checkpoints under ``run_dir/checkpoints`` (orbax's temporary
    directories of a save in progress are left out)."""
    path = epath.Path(run_dir) / "checkpoints"
    if not path.exists():
        return []
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())


def check_branch(cfg: Config, plan: Plan, parent_dir, batch_multiple: int = 1) -> None:
    """``ValueError`` (one line, naming the parent and the step) unless ``cfg`` can branch from
    the run in ``parent_dir`` at ``plan.branch_step``: the parent exists, is the same run up to
    that step (same settings but for :data:`BRANCH_FREE_FIELDS`, same batch, the same learning
    rate at every step before it), is still in its stable phase there, and holds a checkpoint
    of that step."""
    name, step = cfg.train.parent, plan.branch_step
    where = f"train.parent={name!r} (branch at step {step})"
    path = epath.Path(parent_dir) / "config.json"
    if not path.exists():
        raise ValueError(f"{where}: no run at {epath.Path(parent_dir)} (no config.json)")
    pcfg = from_dict(io.read_json(path))
    pplan = make_plan(pcfg, batch_multiple)

    def settings(c):
        d = _comparable(to_dict(c))
        d["train"] = {k: v for k, v in d["train"].items() if k not in BRANCH_FREE_FIELDS}
        return d

    diffs = _differences(settings(pcfg), settings(cfg))
    if pplan.global_batch_size != plan.global_batch_size:
        diffs.append(f"global batch: {pplan.global_batch_size} -> {plan.global_batch_size}")
    if diffs:
        raise ValueError(f"{where}: the parent is another run; differences (parent -> branch): "
                         f"{diffs[:5]}")
    stable_end = pplan.steps - pplan.decay_steps
    if step > stable_end:
        raise ValueError(f"{where}: the parent's stable phase ends at step {stable_end} (of "
                         f"{pplan.steps}); the cooldown must start at or before it")
    if step < plan.warmup_steps:
        raise ValueError(f"{where}: the cooldown of {plan.decay_steps} steps starts before the "
                         f"warmup ends (step {plan.warmup_steps})")
    steps = np.arange(step)
    ours = lr_schedule(cfg, plan, np)(steps)
    theirs = lr_schedule(pcfg, pplan, np)(steps)
    differ = np.flatnonzero(ours != theirs)
    if differ.size:
        k = int(differ[0])
        raise ValueError(f"{where}: the learning rates differ before the branch step: step {k} "
                         f"has {float(theirs[k])!r} in the parent, {float(ours[k])!r} here "
                         "(peak lr and warmup must match)")
    saved = checkpoint_steps(parent_dir)
    if step not in saved:
        raise ValueError(f"{where}: the parent has no checkpoint at step {step} (it has "
                         f"{saved or 'none'}; train it with train.keep_every dividing {step})")


def _run(cfg: Config, plan: Plan, mesh, workdir: epath.Path, writer: bool, started: float,
         parent: epath.Path | None = None) -> dict:
    tc = cfg.train
    pid, pcount = jax.process_index(), jax.process_count()
    setup = build(cfg, plan, mesh)
    log.info("train and eval steps ready in %.1f s (%d compiled, the rest from the cache); "
             "attention implementation: %s", setup.compile_s, setup.compiled_fresh,
             setup.model.cfg.attention_impl)
    # each process loads exactly the rows its devices hold (derived from the batch sharding)
    layout = batches.row_layout(setup.batch_sharding, plan.global_batch_size)
    data_iter = make_train_iterator(cfg.data, global_batch_size=plan.global_batch_size,
                                    process_index=layout.group, process_count=layout.groups)
    eval_layout = batches.row_layout(setup.batch_sharding, tc.eval_batch_size)
    eval_batches = [global_batch(b if pcount == 1 else batches.select_rows(b, eval_layout),
                                 setup.batch_sharding, tc.eval_batch_size, eval_layout)
                    for b in make_eval_batches(cfg.data, batch_size=tc.eval_batch_size)]
    manager = checkpoint.make_manager(workdir / "checkpoints", tc.max_checkpoints, tc.keep_every,
                                      keep_steps=tc.keep_steps)
    keep_steps = frozenset(tc.keep_steps)
    curve_batches = eval_batches[:tc.curve_batches or None]
    curve_time = 0.0
    metrics_path = workdir / "metrics.jsonl"
    monitor = DivergenceMonitor(tc.divergence_ratio, tc.divergence_window)
    wall_offset = 0.0

    # before any state exists, on a fresh start and on resume alike (shapes suffice)
    msharding.check_sharding(setup.abstract_state["params"], setup.state_shardings["params"],
                             cfg.sharding_tolerance)
    latest = manager.latest_step()
    if latest is not None:
        state, saved_meta = checkpoint.restore(manager, latest, setup.abstract_state)
        data_states = saved_meta["data"]
        if len(data_states) != pcount:
            raise ValueError(f"checkpoint {latest} was written by {len(data_states)} processes; "
                             f"this run has {pcount}")
        data_iter.set_state(data_states[pid])
        monitor = DivergenceMonitor.from_state(tc.divergence_ratio, tc.divergence_window,
                                               saved_meta.get("divergence"))
        wall_offset = saved_meta["wall_time_s"]
        if writer:
            records = io.read_jsonl(metrics_path)
            if metrics_path.exists():  # drop records past the checkpoint and any torn line
                io.write_jsonl(metrics_path, [r for r in records if r.get("step", 0) <= latest])
        log.info("resumed from step %d", latest)
    elif parent is not None:  # a branch's first start: the parent's state at the branch step
        step0 = plan.branch_step
        parent_manager = checkpoint.make_manager(parent / "checkpoints", 1, read_only=True)
        state, saved_meta = checkpoint.restore(parent_manager, step0, setup.abstract_state)
        parent_manager.close()
        state = with_schedule(state, cfg, plan)
        data_iter.set_state(saved_meta["data"][pid])
        monitor = DivergenceMonitor.from_state(tc.divergence_ratio, tc.divergence_window,
                                               saved_meta.get("divergence"))
        if writer:
            records = io.read_jsonl(parent / "metrics.jsonl")
            io.write_jsonl(metrics_path, [r for r in records if r.get("step", 0) <= step0])
        log.info("branched from %s at step %d", parent, step0)
    else:
        state = init_state(cfg, plan, setup)
        if writer and metrics_path.exists():
            metrics_path.unlink()

    start_step = int(host_value(state["step"]))
    metrics = metrics_log.MetricsLog(workdir, cfg, writer=writer, start_step=start_step)
    n_devices = mesh.devices.size
    peak = _peak_flops(mesh.devices.flat[0].device_kind, cfg.model.dtype)

    def record_base(step):
        record = {"step": step, "tokens": plan.tokens_at(step), "flops": plan.flops_at(step)}
        if cfg.data.unique_tokens is not None:  # mean reads of each unique token so far
            record["epochs"] = epochs_read(cfg.data, steps=step,
                                           global_batch_size=plan.global_batch_size)
        return record

    pending: list[tuple[int, Any]] = []  # (step, metrics arrays) not yet checked on the host
    interval = {"losses": [], "grad_norms": [], "lr": None, "time": 0.0, "steps": 0}
    status, reason, bad_step = "completed", "", None
    last_train_loss = None
    progress = tqdm(total=plan.steps, initial=start_step, unit="step", dynamic_ncols=True,
                    disable=not (writer and sys.stderr.isatty()), desc="train")
    mark = time.perf_counter()

    def drain() -> bool:
        """Fetch pending losses, check divergence; False when the run diverged.

        Blocks on the last pending step first, so the interval since ``mark`` (the previous
        sync point) covers the device work of these steps, not only their dispatch.
        """
        nonlocal status, reason, bad_step, mark
        if pending:
            jax.block_until_ready(pending[-1][1])  # the steps run asynchronously: wait for them
            interval["lr"] = float(host_value(pending[-1][1]["learning_rate"]))
        interval["time"] += time.perf_counter() - mark
        for step, values in pending:
            loss = float(host_value(values["loss"]))
            interval["losses"].append(loss)
            interval["grad_norms"].append(float(host_value(values["grad_norm"])))
            interval["steps"] += 1
            why = monitor.update(step, loss)
            if why is not None:
                status, bad_step, reason = "diverged", step, why
                pending.clear()
                return False
        pending.clear()
        return True

    def write_train_record(step: int):
        nonlocal last_train_loss
        if not interval["steps"]:
            return
        step_time = interval["time"] / interval["steps"]
        tokens_per_s = plan.tokens_per_step / step_time if step_time > 0 else None
        mfu = (tokens_per_s * plan.flops_per_token[MFU_CONVENTION] / (n_devices * peak)
               if peak and tokens_per_s else None)
        last_train_loss = float(np.mean(interval["losses"]))
        record = {**record_base(step), "train_loss": last_train_loss,
                  "learning_rate": interval["lr"],
                  "grad_norm": float(np.mean(interval["grad_norms"])),
                  "step_time_s": step_time, "tokens_per_s": tokens_per_s, "mfu": mfu}
        metrics.append(record)
        progress.set_postfix(loss=f"{last_train_loss:.4f}",
                             tok_s=f"{tokens_per_s:.3g}" if tokens_per_s else "-")
        if progress.disable and writer:
            log.info("step %d/%d loss %.4f lr %.3g grad_norm %.3g tokens/s %.4g", step,
                     plan.steps, last_train_loss, record["learning_rate"], record["grad_norm"],
                     tokens_per_s or float("nan"))
        interval.update(losses=[], grad_norms=[], lr=None, time=0.0, steps=0)

    def save(step: int):
        checkpoint.save(manager, step, state, {
            "data": checkpoint.gather_json(data_iter.get_state()),
            "wall_time_s": wall_offset + time.perf_counter() - started,
            "divergence": monitor.state(),
            "step": step, "config_hash": config_hash(cfg)})

    step = start_step
    try:
        while step < plan.steps:
            try:
                local = next(data_iter)
            except StopIteration:
                raise RuntimeError(
                    f"the training data ran out at step {step} of {plan.steps} "
                    f"(data.num_epochs={cfg.data.num_epochs})") from None
            batch = global_batch(local, setup.batch_sharding, plan.global_batch_size, layout)
            state, values = setup.train_step(state, batch)
            step += 1
            pending.append((step, values))
            progress.update(1)
            is_log = step % tc.log_every == 0 or step == plan.steps
            is_eval = tc.eval_every > 0 and step % tc.eval_every == 0 and step != plan.steps
            is_ckpt = ((tc.checkpoint_every > 0 and step % tc.checkpoint_every == 0
                        or tc.keep_every > 0 and step % tc.keep_every == 0 or step in keep_steps)
                       and step != plan.steps)
            is_curve = tc.curve_every > 0 and (
                step == plan.steps
                or plan.tokens_at(step) // tc.curve_every > plan.tokens_at(step - 1) // tc.curve_every)
            if not (is_log or is_eval or is_ckpt or is_curve):
                continue
            if not drain():
                write_train_record(bad_step)
                break
            if is_log:
                write_train_record(step)
            if is_eval:
                eval_loss, eval_sem = evaluate(setup, state["params"], eval_batches)
                metrics.append({**record_base(step), "eval_loss": eval_loss, "eval_loss_sem": eval_sem})
            if is_curve:
                tick = time.perf_counter()
                curve_loss, curve_sem = evaluate(setup, state["params"], curve_batches)
                curve_time += time.perf_counter() - tick
                metrics.append({**record_base(step), "curve_loss": curve_loss, "curve_loss_sem": curve_sem})
            if is_ckpt:
                save(step)
            mark = time.perf_counter()
    finally:
        progress.close()
        metrics.flush()

    result = {"status": status, "reason": reason, "config_hash": config_hash(cfg)}
    if status == "diverged":
        end_step = bad_step
        eval_loss = eval_sem = None
    else:
        end_step = plan.steps
        eval_loss, eval_sem = evaluate(setup, state["params"], eval_batches)
        records = io.read_jsonl(metrics_path) if writer else []
        if writer and not any(r.get("step") == end_step and "eval_loss" in r for r in records):
            metrics.append({**record_base(end_step), "eval_loss": eval_loss, "eval_loss_sem": eval_sem})
        if last_train_loss is None:
            last_train_loss = next((r["train_loss"] for r in reversed(records)
                                    if "train_loss" in r), None)
        if manager.latest_step() != end_step:
            save(end_step)
    metrics.close(status)
    manager.wait_until_finished()
    manager.close()
    data_iter.close()
    result.update({
        "step": end_step,
        "steps": plan.steps,
        "eval_loss": eval_loss,
        "eval_loss_sem": eval_sem,
        "train_loss": last_train_loss,
        "n_params": plan.n_params["total"],
        "n_params_nonembedding": plan.n_params["nonembedding"],
        "n_params_embedding": plan.n_params["embedding"],
        "tokens": plan.tokens_at(end_step),
        "flops": plan.flops_at(end_step),
        "flop_conventions": list(sflops.CONVENTIONS),
        "mfu_flop_convention": MFU_CONVENTION,
        "global_batch_size": plan.global_batch_size,
        "seq_len": plan.seq_len,
        "peak_lr": plan.peak_lr,
        "warmup_steps": plan.warmup_steps,
        "mesh_shape": dict(mesh.shape),
        "process_count": jax.process_count(),
        "device_kind": mesh.devices.flat[0].device_kind,
        "attention_impl": setup.model.cfg.attention_impl,
        "wall_time_s": wall_offset + time.perf_counter() - started,
        # this invocation's: the train and eval steps' compile time, and how many were compiled
        # here rather than found in the in-process cache (runs sharing a StepKey share one)
        "compile_s": setup.compile_s,
        "compiled_fresh": setup.compiled_fresh,
    })
    if cfg.data.unique_tokens is not None:  # the cap (experiments.harness.subsets)
        epochs = epochs_read(cfg.data, steps=end_step, global_batch_size=plan.global_batch_size)
        result.update({"unique_tokens": cfg.data.unique_tokens, "epochs": epochs,
                       "unique_tokens_seen": min(cfg.data.unique_tokens,
                                                 int(round(epochs * cfg.data.unique_tokens)))})
    if tc.curve_every:
        result["curve_eval_s"] = curve_time  # this invocation's (a resumed run: since the resume)
    if tc.parent:
        result.update({"parent": tc.parent, "branch_step": plan.branch_step,
                       "flops_own": {c: v - plan.flops_at(plan.branch_step)[c]
                                     for c, v in plan.flops_at(end_step).items()}})
    if writer:
        io.write_json(workdir / "result.json", result)
    log.info("%s at step %d: eval_loss %s", status, end_step, eval_loss)
    return result
