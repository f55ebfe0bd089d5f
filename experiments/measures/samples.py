"""Measure stage of a test-time-compute study: sample a trained run n times per problem, count passes.

    from experiments.harness import tasks
    from experiments.measures import samples as measure_samples
    problems = tasks.load_problems("verifiable_tasks/reversed_addition", "test", data_dir)
    rows = measure_samples.sample_counts("runs/d64-1e6-s0", problems, 256, temperature=1.0)
    # rows: [{"run_id", "n_params", "tokens", "flops", "problem", "family", "difficulty",
    #         "n", "c", "c_weak", "mean_new_tokens", "sampling_flops"}, ...] one per problem

    # in a study (experiments.runner.measure): rows per problem, resumable
    Measure(name="counts", key=("problem",),
            items=lambda run: [{"problem": p.prompt} for p in problems],
            measure=lambda run, items: measure_samples.iter_sample_counts(
                run.run_dir, [by_prompt[i["problem"]] for i in items], 256, run_id=run.run_id))

A run directory is what ``experiments.harness.train.train`` leaves, read with
``experiments.harness.restore.load_run``: ``config.json`` (model, data, tokenizer), ``result.json``
(n_params, tokens, flops per convention; the run must have finished) and the latest checkpoint's
params. Prompts are the problems' prompts tokenized as
the run's training documents were (a document starts at position 0 of its own segment, as the
prompt does here); a sample ends at a token whose text holds a newline.

Counts per problem: n samples, c exactly correct (``tasks.exact_check``), c_weak accepted by the
weak checker (``tasks.weak_check``; c <= c_weak). ``sampling_flops`` is the forward FLOPs of
drawing the n samples under ``scaling.flops.sampling_flops`` (shared prefill, the mean generated
length, convention ``flops_convention``); ``flops`` is the run's training FLOPs under the same
name in result.json ("exact" by default; "6N" etc. also stored there).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import numpy as np

from experiments.harness import restore, tasks
from experiments.harness.data import make_tokenizer
from models.sampling import Sampler, bucket_length, left_pad
from models.transformer import shape_dict
from scaling import flops as sflops

_SAMPLERS: dict = {}


def _sampler(model_cfg, model, stop_tokens, mesh, kv_cache=None) -> Sampler:
    """One Sampler (so one compiled program per shape bucket) for all runs of one model shape:
    the seeds and budgets of a grid point share it; a custom ``model`` gets its own."""
    if model is not None:
        return Sampler(model_cfg, model, stop_tokens=stop_tokens, mesh=mesh, kv_cache=kv_cache)
    key = (model_cfg, stop_tokens, kv_cache,
           None if mesh is None else (mesh.shape_tuple, tuple(d.id for d in mesh.devices.flat)))
    if key not in _SAMPLERS:
        _SAMPLERS[key] = Sampler(model_cfg, stop_tokens=stop_tokens, mesh=mesh, kv_cache=kv_cache)
    return _SAMPLERS[key]


def stop_token_ids(tokenizer, text: str = tasks.TERMINATOR) -> tuple[int, ...]:
    """Ids of the tokens whose decoded text contains ``text`` (a newline ends an answer)."""
    return tuple(i for i in range(tokenizer.vocab_size) if text in tokenizer.decode([i]))


def sample_counts(run_workdir, problems: Sequence[tasks.Problem], n_samples: int, **options) -> list[dict]:
    """``list(iter_sample_counts(...))``: one row per problem (see ``iter_sample_counts``)."""
    return list(iter_sample_counts(run_workdir, problems, n_samples, **options))


def iter_sample_counts(run_workdir, problems: Sequence[tasks.Problem], n_samples: int, *,
                       temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                       max_new_tokens: int | None = None, max_rows: int = 4096, run_id: str | None = None,
                       flops_convention: str = "exact", mesh=None, params=None,
                       model=None, kv_cache: str | None = None) -> Iterator[dict]:
    """Sample ``n_samples`` completions per problem from a trained run and count passes; yields
    each problem's row as soon as its chunk is sampled (for a resumable measure stage:
    ``experiments.runner.measure.Measure(key=("problem",), measure=lambda run, items: ...)``).

    Args:
      run_workdir: a finished ``train()`` directory.
      problems: ``tasks.Problem`` list (e.g. ``tasks.load_problems(name, "test")``).
      n_samples: samples per problem (n).
      temperature, top_p, seed: sampling settings; the counts are deterministic given seed,
        max_rows and the order of ``problems``.
      max_new_tokens: per sample; default (longest answer + newline + 1 tokens of the run's
        tokenizer) rounded up to a multiple of 8 (a row stops at its newline; the loop exits
        when every row has stopped).
      max_rows: sampled rows per compiled call (problems x samples in a chunk).
      run_id: default: the directory name.
      flops_convention: the training ("flops") and sampling FLOP convention name.
      mesh: shard the samples over the mesh's batch axes (``models.sampling.Sampler``).
      params, model: a params pytree and flax module to sample instead of the run's checkpoint
        (e.g. ``models.quantization.ptq`` of the loaded params); default: the checkpoint, float.
      kv_cache: "int8" samples with the int8 KV cache (``models.kv_cache``); None: float.

    Yields one dict per problem, in order: run_id, n_params, tokens, flops, problem (its prompt),
    family, difficulty, n, c, c_weak, mean_new_tokens, sampling_flops.
    """
    if n_samples < 1 or max_rows < 1:
        raise ValueError(f"sample_counts: n_samples ({n_samples}) and max_rows ({max_rows}) must be >= 1")
    if not problems:
        raise ValueError("sample_counts: no problems")
    inference_convention = {"6N": "2N", "6N_nonembed": "2N_nonembed"}.get(flops_convention, "exact")
    run = restore.load_run(run_workdir, device=True)
    cfg, result = run.config, run.result
    if result is None or result.get("status") not in ("completed", "diverged"):
        raise ValueError(f"sample_counts: {run_workdir} has no finished result.json "
                         f"(status {None if result is None else result.get('status')!r})")
    flops = result.get("flops", {})
    if flops_convention not in flops:
        raise ValueError(f"sample_counts: result.json has no {flops_convention!r} FLOPs (has {sorted(flops)})")
    params = run.params if params is None else params
    tokenizer = make_tokenizer(cfg.data)
    prompts = [np.asarray(tokenizer.encode(p.prompt)) for p in problems]
    if max_new_tokens is None:  # rounded up to a multiple of 8, so problem subsets share a compile
        max_new_tokens = bucket_length(max(len(tokenizer.encode(p.answer + tasks.TERMINATOR)) for p in problems) + 1)
    plen = bucket_length(max(len(p) for p in prompts))
    if plen + max_new_tokens > cfg.model.max_seq_len:
        raise ValueError(f"sample_counts: prompt bucket {plen} + {max_new_tokens} new tokens exceeds the "
                         f"model's max_seq_len {cfg.model.max_seq_len}")
    sampler = _sampler(cfg.model, model, stop_token_ids(tokenizer), mesh, kv_cache)
    per_call = min(n_samples, max_rows)  # samples of one problem per call
    group = max(1, max_rows // per_call)  # problems per call
    group = min(group, len(problems))
    shape = shape_dict(cfg.model)
    key = jax.random.key(seed)
    for start in range(0, len(problems), group):
        chunk = list(range(start, min(start + group, len(problems))))
        padded = chunk + [chunk[-1]] * (group - len(chunk))  # one compiled shape for every chunk
        tokens, lengths = left_pad([prompts[i] for i in padded], plen)
        counts = {i: [0, 0, 0, 0] for i in chunk}  # n, c, c_weak, generated tokens
        for offset in range(0, n_samples, per_call):
            take = min(per_call, n_samples - offset)
            out = sampler(params, tokens, lengths, max_new_tokens=max_new_tokens,
                          rng=jax.random.fold_in(jax.random.fold_in(key, start), offset),
                          temperature=temperature, top_p=top_p, samples_per_prompt=per_call)
            new, new_len = np.asarray(out.tokens), np.asarray(out.lengths)
            for j, i in enumerate(chunk):
                for r in range(j * per_call, j * per_call + take):
                    text = tokenizer.decode(new[r, :new_len[r]])
                    tally = counts[i]
                    tally[0] += 1
                    tally[1] += tasks.exact_check(problems[i], text)
                    tally[2] += tasks.weak_check(problems[i], text)
                    tally[3] += int(new_len[r])
        for i in chunk:
            n, c, c_weak, generated = counts[i]
            mean_new = generated / n
            yield {
                "run_id": run_id or run.run_id,
                "n_params": int(result["n_params"]),
                "tokens": int(result["tokens"]),
                "flops": float(flops[flops_convention]),
                "problem": problems[i].prompt,
                "family": problems[i].family,
                "difficulty": int(problems[i].difficulty),
                "n": n, "c": c, "c_weak": c_weak,
                "mean_new_tokens": mean_new,
                "sampling_flops": sflops.sampling_flops(shape, len(prompts[i]), max(mean_new, 1.0), n,
                                                        inference_convention),
            }


