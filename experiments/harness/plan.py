"""The plan of a run: ``make_plan(cfg) -> Plan``, the numbers a ``Config`` resolves to.

Steps = tokens // (global batch x seq_len) (at least 1); the global batch is ``train.batch_size``
rows, or a rule of ``experiments.harness.config.BATCH_RULES`` rounded to a multiple of the data x
fsdp mesh axes and the process count; the peak learning rate is ``train.lr`` or a rule of
``LR_RULES``; warmup is a fraction of the steps (< 1) or a step count, at most the steps; the
decay of a warmup-stable-decay schedule is ``decay_steps``, or else ``decay_fraction`` of the
steps. A branch (``train.parent``) leaves its parent at ``branch_step`` = steps - decay. FLOPs per token in
every convention of ``scaling.flops.CONVENTIONS``.
"""

from __future__ import annotations

import dataclasses

from experiments.harness.config import BATCH_RULES, LR_RULES, Config
from models.transformer import param_counts, shape_dict
from scaling import flops as sflops


@dataclasses.dataclass(frozen=True)
class Plan:
    """The numbers a config resolves to: steps, batch, learning rate, sizes and FLOPs."""

    steps: int
    global_batch_size: int
    seq_len: int
    peak_lr: float
    warmup_steps: int
    decay_steps: int
    n_params: dict
    flops_per_token: dict
    branch_step: int | None = None  # a branch: the parent's step it starts from

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len

    def tokens_at(self, step: int) -> int:
        return step * self.tokens_per_step

    def flops_at(self, step: int) -> dict:
        tokens = self.tokens_at(step)
        return {c: f * tokens for c, f in self.flops_per_token.items()}


def make_plan(cfg: Config, batch_multiple: int = 1) -> Plan:
    """Resolve rules into numbers. ``batch_multiple``: the global batch must be a multiple of it
    (data x fsdp mesh axes, and the process count); a rule's batch is rounded to it."""
    tc, seq_len = cfg.train, cfg.data.seq_len
    counts = param_counts(cfg.model)
    if isinstance(tc.batch_size, str):
        batch_tokens = BATCH_RULES[tc.batch_size](counts["nonembedding"], tc.tokens)
        rows = max(1, round(batch_tokens / seq_len / batch_multiple)) * batch_multiple
    else:
        rows = tc.batch_size
        if rows % batch_multiple:
            raise ValueError(f"train.batch_size={rows} must be a multiple of {batch_multiple} "
                             "(the data x fsdp mesh axes and the process count)")
    if isinstance(tc.lr, str):
        peak_lr = float(LR_RULES[tc.lr](counts["nonembedding"], tc.tokens))
    else:
        peak_lr = float(tc.lr)
    steps = max(1, tc.tokens // (rows * seq_len))
    warmup = round(tc.warmup * steps) if tc.warmup < 1 else int(tc.warmup)
    warmup = min(warmup, steps)
    if tc.schedule == "step" and not tc.step_milestones:  # here: overrides come one at a time
        raise ValueError("train.step_milestones=(): a step schedule needs at least one milestone "
                         "(fractions of the steps, e.g. train.step_milestones=0.5,0.8)")
    decay = 0
    if tc.schedule == "wsd":
        decay = tc.decay_steps or round(tc.decay_fraction * steps)
        if decay > steps - warmup:
            raise ValueError(
                f"train.decay_steps/decay_fraction: a cooldown of {decay} steps is longer than the "
                f"stable phase (steps {warmup}..{steps} of a {steps}-step run after {warmup} warmup)")
    branch_step = steps - decay if tc.parent else None
    shape = shape_dict(cfg.model)
    per_token = {c: sflops.flops_per_token(shape, seq_len, c) for c in sflops.CONVENTIONS}
    return Plan(steps=steps, global_batch_size=rows, seq_len=seq_len, peak_lr=peak_lr,
                warmup_steps=warmup, decay_steps=decay, n_params=counts,
                flops_per_token=per_token, branch_step=branch_step)
