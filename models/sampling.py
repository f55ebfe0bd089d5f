"""Autoregressive sampling with a key/value cache, built for pass@k studies (thousands of samples).

    sampler = Sampler(cfg, stop_tokens=(10,))                   # stop at "\\n" (byte tokenizer)
    tokens, lengths = left_pad([[49, 43, 50, 61], [55, 61]])    # ragged prompts -> [B, P], [B]
    out = sampler(params, tokens, lengths, max_new_tokens=8, rng=key, temperature=0.8,
                  top_p=0.95, samples_per_prompt=256)
    out.tokens   # [B * 256, 8] int32, row b * 256 + j = sample j of prompt b; pad_id after a stop
    out.lengths  # [B * 256] new tokens per row, the stop token included

    tokens = generate(cfg, params, prompt_tokens, max_new_tokens=32, rng=key)   # the simple form

How (all in one jitted function per shape, ``Sampler``):

* Ragged prompts, one shape: prompts are LEFT-padded to a bucketed length P (a multiple of
  ``length_multiple``), so every row's last prompt token sits in column P - 1. Padding has
  segment id 0 and the prompt segment id 1, and positions count from 0 at each row's first real
  token, so the model's causal, same-segment mask (``models.transformer.attention_mask``) hides
  the padding from real tokens: each row's logits equal those of its unpadded prompt alone.
* Prefill once, share the cache: the B prompts are prefilled once, then the cache is repeated
  ``samples_per_prompt`` = k times along the batch axis (rows b*k .. b*k + k - 1), so k samples
  of a problem cost one prefill, not k.
* Decoding: ``lax.while_loop`` writes token i at cache slot P + i - 1 with position len_b + i - 1
  and stops as soon as every row has produced a stop token (or after ``max_new_tokens``): early
  exit, so a batch of short answers does not pay for the longest allowed one.
* Logits: only the current step's [rows, V] logits exist inside the loop; the full [rows, T, V]
  is kept only with ``return_logits=True`` (for tests against a full forward pass).
* Sampling: temperature (0 = greedy), nucleus top-p (Holtzman et al. 2020, "The Curious Case of
  Neural Text Degeneration", arXiv:1904.09751: the smallest set of most likely tokens whose
  probability reaches p) and top-k. Temperature and top-p are traced arguments, so
  changing them does not recompile.
* Any model: ``model`` is any flax module with the ``Transformer`` call signature
  ``apply({"params": p}, tokens, segment_ids, positions, cache=, cache_index=)`` (a qwix PTQ
  model from ``models.quantization.ptq`` with its quantized params works); the default is
  ``Transformer(cfg)``. ``cfg`` still gives the cache shape.
* Compiled once per shape bucket: jit's cache is keyed by (rows, P, T, k); ``Sampler.traces``
  counts the traces. Prompts of different lengths that round to the same P share one program.
* Sharding: with ``mesh``, the rows and the cache are laid out over the mesh's batch axes
  (``models.sharding`` rules: batch -> (data, fsdp)) and the model's logical constraints are
  active; the number of sampled rows B * k must be a multiple of those axes' size.
* int8 KV cache: ``Sampler(cfg, kv_cache="int8")`` stores keys and values as int8 with one float32
  scale per (layer, row, position, kv head) (absmax / 127, quantized when written, dequantized
  when read; ``models.kv_cache``): (1 + 4/Dh)/4 of a float32 cache's bytes. Its logits equal a full
  forward pass of ``models.quantization.ptq_model(cfg, QuantConfig(kv="int8"))``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from models import kv_cache as kvc
from models.kv_cache import init_cache  # the cache layout lives in models.kv_cache
from models.transformer import ModelConfig, Transformer


def _top_p_filter(logits, top_p):
    """Keep the smallest set of largest logits whose softmax mass reaches top_p (ties kept)."""
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_before < top_p
    keep = keep.at[:, 0].set(True)
    threshold = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def sample_logits(logits, rng, temperature, top_k: int | None = None, top_p=1.0):
    """One token per row from [B, V] logits.

    Greedy (argmax) where temperature == 0; else a draw from softmax(logits / temperature)
    restricted to the ``top_k`` largest logits (all when None) and to the nucleus of mass
    ``top_p`` (all when top_p >= 1). ``temperature`` and ``top_p`` may be traced scalars.
    """
    logits = logits.astype(jnp.float32)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if isinstance(temperature, (int, float)) and temperature == 0.0:
        return greedy
    scaled = logits / jnp.maximum(jnp.asarray(temperature, jnp.float32), 1e-6)
    if top_k is not None:
        kth = jax.lax.top_k(scaled, top_k)[0][:, -1:]
        scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
    top_p = jnp.asarray(top_p, jnp.float32)
    scaled = jax.lax.cond(top_p < 1.0, _top_p_filter, lambda x, _: x, scaled, top_p)
    drawn = jax.random.categorical(rng, scaled, axis=-1).astype(jnp.int32)
    return jnp.where(jnp.asarray(temperature) == 0.0, greedy, drawn)


def bucket_length(length: int, multiple: int = 8) -> int:
    """The compiled prompt length for a longest prompt of ``length``: next multiple of ``multiple``."""
    return max(multiple, -(-int(length) // multiple) * multiple)


def left_pad(prompts: Sequence[Sequence[int]], length: int | None = None, *, multiple: int = 8,
             pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ragged token lists -> (tokens [B, P] int32, left-padded with ``pad_id``; lengths [B]).

    P = ``length`` if given, else ``bucket_length(longest prompt, multiple)``.
    """
    if len(prompts) == 0:
        raise ValueError("left_pad: no prompts")
    lengths = np.array([len(p) for p in prompts], np.int32)
    if lengths.min() < 1:
        raise ValueError(f"left_pad: prompt {int(np.argmin(lengths))} is empty")
    width = bucket_length(lengths.max(), multiple) if length is None else int(length)
    if width < lengths.max():
        raise ValueError(f"left_pad: longest prompt has {lengths.max()} tokens > length {width}")
    tokens = np.full((len(prompts), width), pad_id, np.int32)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt):] = np.asarray(prompt, np.int32)
    return tokens, lengths


@dataclasses.dataclass(frozen=True)
class Samples:
    """``tokens`` [R, T] int32 (``pad_id`` after a row's stop token), ``lengths`` [R] (new tokens
    per row, the stop token included; T when no stop), ``stopped`` [R] bool, ``steps`` (decoding
    steps run, <= T), ``logits`` [R, T, V] float32 or None (row r, step i: the distribution token
    i was drawn from; only with return_logits)."""

    tokens: jax.Array
    lengths: jax.Array
    stopped: jax.Array
    steps: jax.Array
    logits: jax.Array | None = None


class Sampler:
    """Compiled sampling for one model (see the module docstring).

    Args:
      cfg: the model's config (cache shape, max_seq_len).
      model: flax module with the Transformer call signature; default ``Transformer(cfg)``.
      stop_tokens: token ids that end a row (e.g. the ids whose text holds a newline).
      pad_id: written after a row's stop and used for left padding.
      top_k: static top-k filter (None: off).
      mesh, rules: shard rows and cache over the mesh's batch axes (``models.sharding``).
      length_multiple: prompt-length bucket (``bucket_length``).
      kv_cache: None (keys and values in ``cfg.compute_dtype``), "int8" (per-token scales,
        ``models.kv_cache``) or a float dtype name.
    """

    def __init__(self, cfg: ModelConfig, model=None, *, stop_tokens: Sequence[int] = (), pad_id: int = 0,
                 top_k: int | None = None, mesh=None, rules=None, length_multiple: int = 8,
                 kv_cache: str | None = None):
        if top_k is not None and not 1 <= top_k <= cfg.vocab_size:
            raise ValueError(f"Sampler: top_k must be in [1, vocab_size={cfg.vocab_size}], got {top_k}")
        bad = [t for t in stop_tokens if not 0 <= int(t) < cfg.vocab_size]
        if bad:
            raise ValueError(f"Sampler: stop token ids {bad} outside [0, {cfg.vocab_size})")
        try:
            self.kv_cache = kvc.check_kv_dtype(kv_cache)
        except ValueError as err:
            raise ValueError(f"Sampler: {err}") from None
        self.cfg = cfg
        self.model = Transformer(cfg) if model is None else model
        self.stop_tokens = tuple(int(t) for t in stop_tokens)
        self.pad_id = int(pad_id)
        self.top_k = top_k
        self.mesh = mesh
        self.length_multiple = int(length_multiple)
        if mesh is not None:
            from models import sharding as msharding

            self.rules = msharding.DEFAULT_RULES if rules is None else rules
            self._row_sharding = msharding.batch_sharding(mesh, self.rules, ndim=1)
            self._batch_size = math.prod(
                mesh.shape[a] for a in np.atleast_1d(self._row_sharding.spec[0] or ()))
        else:
            self.rules, self._row_sharding, self._batch_size = rules, None, 1
        self.traces = 0  # how many times the sampling program was traced (= compiled)
        self._jitted = jax.jit(self._sample, static_argnames=("max_new_tokens", "samples_per_prompt",
                                                              "return_logits"))

    # ------------------------------------------------------------------------ traced program
    def _constrain(self, x, axis: int):
        if self.mesh is None:
            return x
        from jax.sharding import NamedSharding, PartitionSpec

        spec = [None] * x.ndim
        spec[axis] = self._row_sharding.spec[0]
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, PartitionSpec(*spec)))

    def _sample(self, params, prompt_tokens, prompt_lengths, rng, temperature, top_p, *,
                max_new_tokens, samples_per_prompt, return_logits):
        self.traces += 1
        cfg, model, k, steps_max = self.cfg, self.model, samples_per_prompt, max_new_tokens
        batch, plen = prompt_tokens.shape
        rows = batch * k
        column = jnp.arange(plen, dtype=jnp.int32)[None, :]
        first = plen - prompt_lengths[:, None]  # column of each row's first real token
        segment_ids = (column >= first).astype(jnp.int32)
        positions = jnp.maximum(column - first, 0)
        cache = init_cache(cfg, batch, plen + steps_max - 1, self.kv_cache)
        logits, cache = model.apply({"params": params}, prompt_tokens, segment_ids, positions,
                                    cache=cache, cache_index=jnp.int32(0))
        last = logits[:, -1]
        if k > 1:  # one prefill per prompt, k copies of its cache
            cache = kvc.repeat_rows(cache, k)
            last = jnp.repeat(last, k, axis=0)
        cache = {name: self._constrain(x, 0 if name == "segment_ids" else 1) for name, x in cache.items()}
        start_pos = self._constrain(jnp.repeat(prompt_lengths, k), 0)
        stops = jnp.asarray(self.stop_tokens or (-1,), jnp.int32)

        def choose(i, step_logits, done):
            token = sample_logits(step_logits, jax.random.fold_in(rng, i), temperature, self.top_k, top_p)
            token = jnp.where(done, self.pad_id, token)
            return token, done | jnp.isin(token, stops)

        out = self._constrain(jnp.full((rows, steps_max), self.pad_id, jnp.int32), 0)
        kept = jnp.zeros((rows, steps_max, cfg.vocab_size) if return_logits else (0,), jnp.float32)
        token, done = choose(0, last, jnp.zeros((rows,), bool))
        lengths = jnp.ones((rows,), jnp.int32)
        out = out.at[:, 0].set(token)
        if return_logits:
            kept = kept.at[:, 0].set(last)

        def cond(carry):
            i, done = carry[0], carry[3]
            return (i < steps_max) & ~jnp.all(done)

        def body(carry):
            i, cache, token, done, out, lengths, kept = carry
            step_logits, cache = model.apply(
                {"params": params}, token[:, None], jnp.ones((rows, 1), jnp.int32),
                (start_pos + i - 1)[:, None], cache=cache, cache_index=plen + i - 1)
            step_logits = step_logits[:, 0]
            lengths = lengths + (~done).astype(jnp.int32)
            token, done = choose(i, step_logits, done)
            out = jax.lax.dynamic_update_slice(out, token[:, None], (0, i))
            if return_logits:
                kept = jax.lax.dynamic_update_slice(kept, step_logits[:, None], (0, i, 0))
            return i + 1, cache, token, done, out, lengths, kept

        steps, _, _, done, out, lengths, kept = jax.lax.while_loop(
            cond, body, (jnp.int32(1), cache, token, done, out, lengths, kept))
        stopped = done if self.stop_tokens else jnp.zeros_like(done)
        return out, lengths, stopped, steps, (kept if return_logits else None)

    # ------------------------------------------------------------------------ public call
    def __call__(self, params, prompt_tokens, prompt_lengths=None, *, max_new_tokens: int, rng=None,
                 temperature: float = 1.0, top_p: float = 1.0, samples_per_prompt: int = 1,
                 return_logits: bool = False) -> Samples:
        """Sample ``max_new_tokens`` (at most) after each left-padded prompt, k times each.

        prompt_tokens: [B, P] int32, left-padded (``left_pad``); prompt_lengths: [B] real
        lengths (None: all P). Returns ``Samples`` with R = B * samples_per_prompt rows.
        """
        prompt_tokens = np.asarray(prompt_tokens)
        if prompt_tokens.ndim != 2 or prompt_tokens.shape[1] < 1 or prompt_tokens.shape[0] < 1:
            raise ValueError(f"Sampler: prompt_tokens must be [batch>=1, length>=1], got shape "
                             f"{prompt_tokens.shape}")
        batch, plen = prompt_tokens.shape
        lengths = np.full((batch,), plen, np.int32) if prompt_lengths is None else np.asarray(prompt_lengths)
        if lengths.shape != (batch,) or lengths.min() < 1 or lengths.max() > plen:
            raise ValueError(f"Sampler: prompt_lengths must be [{batch}] in [1, {plen}], got {lengths}")
        if max_new_tokens < 1:
            raise ValueError(f"Sampler: max_new_tokens must be >= 1, got {max_new_tokens}")
        if samples_per_prompt < 1:
            raise ValueError(f"Sampler: samples_per_prompt must be >= 1, got {samples_per_prompt}")
        total = plen + max_new_tokens
        if total > self.cfg.max_seq_len:
            raise ValueError(f"Sampler: prompt + new tokens = {total} exceeds max_seq_len "
                             f"{self.cfg.max_seq_len}")
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise ValueError(f"Sampler: temperature must be finite and >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"Sampler: top_p must be in (0, 1], got {top_p}")
        rows = batch * samples_per_prompt
        if rows % self._batch_size:
            raise ValueError(f"Sampler: {rows} sampled rows (batch {batch} x {samples_per_prompt} samples) "
                             f"must be a multiple of the mesh batch axes' size {self._batch_size}")
        if rng is None:
            if temperature != 0.0:
                raise ValueError("Sampler: rng is required when temperature > 0")
            rng = jax.random.key(0)
        args = (params, jnp.asarray(prompt_tokens, jnp.int32), jnp.asarray(lengths, jnp.int32), rng,
                jnp.float32(temperature), jnp.float32(top_p))
        kwargs = dict(max_new_tokens=int(max_new_tokens), samples_per_prompt=int(samples_per_prompt),
                      return_logits=bool(return_logits))
        if self.mesh is not None:
            from models import sharding as msharding

            with msharding.sharding_context(self.mesh, self.rules):
                result = self._jitted(*args, **kwargs)
        else:
            result = self._jitted(*args, **kwargs)
        tokens, new_lengths, stopped, steps, logits = result
        return Samples(tokens, new_lengths, stopped, steps, logits)


_SAMPLERS: dict = {}


def _default_sampler(cfg: ModelConfig, top_k: int | None, kv_cache: str | None = None) -> Sampler:
    key = (cfg, top_k, kv_cache)
    if key not in _SAMPLERS:
        _SAMPLERS[key] = Sampler(cfg, top_k=top_k, kv_cache=kv_cache)
    return _SAMPLERS[key]


def generate(model_cfg: ModelConfig, params, prompt_tokens, max_new_tokens: int, rng=None,
             temperature: float = 1.0, top_k: int | None = None, return_logits: bool = False, *,
             top_p: float = 1.0, kv_cache: str | None = None):
    """Sample exactly ``max_new_tokens`` tokens after ``prompt_tokens`` [B, P] (same-length
    prompts, no stop token; ``Sampler`` does ragged prompts, stops and k samples per prompt).

    Returns the new tokens [B, max_new_tokens] (int32), or (tokens, logits [B, T, V]) with
    ``return_logits``, where logits[:, i] is the distribution token i was drawn from.
    temperature 0 is greedy decoding (rng unused). ``kv_cache="int8"``: the quantized cache.
    """
    prompt_tokens = np.asarray(prompt_tokens)
    if prompt_tokens.ndim != 2 or prompt_tokens.shape[1] < 1:
        raise ValueError(f"generate: prompt_tokens must be [batch, length>=1], got shape {prompt_tokens.shape}")
    if top_k is not None and not 1 <= top_k <= model_cfg.vocab_size:
        raise ValueError(f"generate: top_k must be in [1, vocab_size], got {top_k}")
    if rng is None and temperature != 0.0:
        raise ValueError("generate: rng is required when temperature > 0")
    try:
        out = _default_sampler(model_cfg, top_k, kv_cache)(
            params, prompt_tokens, None, max_new_tokens=max_new_tokens, rng=rng, temperature=temperature,
            top_p=top_p, return_logits=return_logits)
    except ValueError as err:
        raise ValueError(f"generate: {err}") from None
    return (out.tokens, out.logits) if return_logits else out.tokens
