"""Measure stage of the two-step task prediction: the task loss and pass@1 of a checkpoint.

    from experiments.measures import task_loss
    row = task_loss.checkpoint_task_loss("runs/C1e12_N8e4_...", problems, step=762)
    # {"run_id", "n_params", "step", "tokens", "final", "problems", "task_loss", "task_loss_sem",
    #  "task_loss_per_token", "pass_at_1"}

For every held-out problem (prompt x, answer a, then the newline that ends an answer) the
checkpoint reads the prompt and the answer teacher-forced, as a training document (one segment,
positions from 0), and scores the answer's tokens:

    nll_i = - sum_{t in answer + newline} log p(y_t | x, y_<t)        (nats per answer)

- ``task_loss`` = mean_i nll_i: the task loss of Bhagia et al. 2024 (arXiv:2412.04403), the NLL of
  the correct answer given the prompt (here summed over the answer's tokens, not normalised by
  its length: -log of the probability of writing the whole answer); ``task_loss_sem`` its
  standard error over problems; ``task_loss_per_token`` = mean_i nll_i / |a_i + newline|.
- ``pass_at_1`` = mean_i exp(-nll_i / T-scaled): the probability that one sample at temperature T
  (top-p 1, the counts stage's sampling) is exactly correct. A sample passes ``tasks.exact_check``
  exactly when its tokens are the answer's and then a newline (the text before the first newline
  must equal the answer, and a byte tokenizer writes a text one way), so this is the *expected*
  pass@1 of the sampling stage, computed instead of sampled: no sampling noise, one forward pass
  per problem, cheaper than sampling and than greedy decoding. Under a tokenizer that can write one
  text several ways (sentencepiece) it is a lower bound, and the stage says so in a column
  (``exact``: True for a byte tokenizer).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from experiments.harness import restore, tasks
from experiments.harness.data import make_tokenizer
from models.sampling import bucket_length
from models.transformer import ModelConfig, Transformer


def answer_batch(tokenizer, problems: Sequence[tasks.Problem]) -> dict:
    """Teacher-forced batch: ``inputs`` = prompt + answer + newline (right-padded to a bucket
    length), ``targets`` the next tokens, ``weights`` 1 on the positions that predict an answer or
    newline token, ``segment_ids`` 1 on the document (0 padding), ``positions`` 0, 1, ...."""
    if not problems:
        raise ValueError("answer_batch: no problems")
    docs = []
    for p in problems:
        prompt = list(tokenizer.encode(p.prompt))
        answer = list(tokenizer.encode(p.answer + tasks.TERMINATOR))
        if not prompt or not answer:
            raise ValueError(f"answer_batch: problem {p.prompt!r} has an empty prompt or answer")
        docs.append((prompt, answer))
    length = bucket_length(max(len(a) + len(b) for a, b in docs))
    inputs = np.zeros((len(docs), length), np.int32)
    targets = np.zeros_like(inputs)
    weights = np.zeros(inputs.shape, np.float32)
    segments = np.zeros_like(inputs)
    for i, (prompt, answer) in enumerate(docs):
        doc = prompt + answer
        inputs[i, :len(doc)] = doc
        targets[i, :len(doc) - 1] = doc[1:]
        weights[i, len(prompt) - 1:len(doc) - 1] = 1.0  # position t predicts token t + 1
        segments[i, :len(doc)] = 1
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), inputs.shape).copy()
    return {"inputs": inputs, "targets": targets, "weights": weights, "segment_ids": segments,
            "positions": positions}


@functools.lru_cache(maxsize=32)
def _answer_nll_fn(cfg: ModelConfig):
    """Compiled (per-problem answer NLL at temperature 1, at temperature T), cached by model config."""
    model = Transformer(cfg)

    @jax.jit
    def nll(params, batch, temperature):
        logits = model.apply({"params": params}, batch["inputs"], batch["segment_ids"], batch["positions"])
        onehot = jax.nn.one_hot(batch["targets"], logits.shape[-1], dtype=logits.dtype)

        def per_problem(z):
            token = jax.nn.logsumexp(z, axis=-1) - jnp.sum(z * onehot, axis=-1)
            return jnp.sum(token * batch["weights"], axis=-1)

        return per_problem(logits), per_problem(logits / temperature)

    return nll


def answer_nll(cfg: ModelConfig, params, batch: dict, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-problem NLL of the answer (nats) at temperature 1 and at ``temperature``."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"answer_nll: temperature must be positive, got {temperature}")
    a, b = _answer_nll_fn(cfg)(params, {k: jnp.asarray(v) for k, v in batch.items()}, jnp.float32(temperature))
    return np.asarray(a, np.float64), np.asarray(b, np.float64)


def iter_task_losses(run_workdir, problems: Sequence[tasks.Problem], steps: Sequence[int], *,
                     temperature: float = 1.0, run_id: str | None = None) -> Iterator[dict]:
    """One row per checkpoint ``step`` of a finished run (module docstring); ``final`` marks the
    run's last step. Raises ValueError when a step has no checkpoint."""
    from experiments.harness.train import make_plan, read_result

    if not steps:
        raise ValueError("iter_task_losses: no steps")
    config = restore.load_config(run_workdir)
    result = read_result(run_workdir)
    if result is None or result.get("status") not in ("completed", "diverged"):
        raise ValueError(f"iter_task_losses: {run_workdir} has no finished result.json")
    tokenizer = make_tokenizer(config.data)
    batch = answer_batch(tokenizer, problems)
    if batch["inputs"].shape[1] > config.model.max_seq_len:
        raise ValueError(f"iter_task_losses: answers of {batch['inputs'].shape[1]} tokens exceed the model's "
                         f"max_seq_len {config.model.max_seq_len}")
    plan = make_plan(config)
    global_batch = int(result.get("global_batch_size") or plan.global_batch_size)
    answer_tokens = batch["weights"].sum(axis=1)
    for step in steps:
        params = restore.load_params(run_workdir, int(step), config, device=True)
        nll, nll_t = answer_nll(config.model, params, batch, temperature)
        if not np.isfinite(nll).all():
            raise ValueError(f"iter_task_losses: {run_workdir} step {step}: non-finite answer NLL")
        yield {"run_id": run_id or epath.Path(run_workdir).name, "n_params": int(result["n_params"]),
               "step": int(step), "tokens": int(step) * global_batch * config.data.seq_len,
               "final": int(step) == plan.steps, "problems": len(problems),
               "task_loss": float(nll.mean()),
               "task_loss_sem": float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else math.nan,
               "task_loss_per_token": float((nll / answer_tokens).mean()),
               "pass_at_1": float(np.exp(-nll_t).mean()), "temperature": float(temperature),
               "exact": config.data.tokenizer == "byte"}


def checkpoint_task_loss(run_workdir, problems: Sequence[tasks.Problem], step: int, **options) -> dict:
    """`iter_task_losses` at one step."""
    return next(iter_task_losses(run_workdir, problems, [step], **options))
