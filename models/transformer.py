"""Decoder-only transformer language model (Flax linen) with logical axis names.

    cfg = ModelConfig(d_model=128, n_layers=2, n_heads=4)
    model = Transformer(cfg)
    variables = model.init(rng, tokens, segment_ids, positions)
    logits = model.apply(variables, tokens, segment_ids, positions)   # [B, L, V] float32

Architecture (pre-norm, Llama-like): token embedding -> n_layers x [RMSNorm -> grouped-query
attention with rotary positions -> residual; RMSNorm -> MLP -> residual] -> RMSNorm -> tied or
untied unembedding. No biases, no dropout.

Packed sequences: ``segment_ids`` numbers the documents of each row (1, 2, ...; 0 = padding) and
``positions`` restarts at 0 for each document. Attention is causal AND restricted to the same
segment, so packed documents never see each other; padding only sees padding (never a fully
masked row, so no NaNs), and real tokens never see padding.

Parameters are float32 and carry logical axis names (``nn.with_logical_partitioning``):
``vocab, embed, heads, kv_heads, head_dim, mlp, norm`` and ``layers`` (the ``nn.scan`` axis);
``models.sharding`` maps them to the mesh. Activations get ``nn.with_logical_constraint`` with
``batch, length, embed | heads | kv_heads | mlp | vocab``; the constraints take effect only when
a mesh and rules are active (``models.sharding.sharding_context``), otherwise they are no-ops.

Module paths (what qwix rules and ``mup_lr_scales`` match on), scanned layout:

    embed/embedding                      [V, D]        (vocab, embed)
    layers/attention_norm/scale          [L, D]        (layers, norm)
    layers/attention/query/kernel        [L, D, H, Dh] (layers, embed, heads, head_dim)
    layers/attention/key/kernel          [L, D, K, Dh] (layers, embed, kv_heads, head_dim)
    layers/attention/value/kernel        [L, D, K, Dh]
    layers/attention/out/kernel          [L, H, Dh, D] (layers, heads, head_dim, embed)
    layers/mlp_norm/scale                [L, D]
    layers/mlp/gate/kernel               [L, D, F]     (layers, embed, mlp)   gated only
    layers/mlp/up/kernel                 [L, D, F]     (layers, embed, mlp)
    layers/mlp/down/kernel               [L, F, D]     (layers, mlp, embed)
    final_norm/scale                     [D]           (norm,)
    unembed/kernel                       [D, V]        (embed, vocab)         untied only

With ``scan_layers=False`` the blocks are ``layers_0, layers_1, ...`` without the leading axis;
``stack_layers`` / ``unstack_layers`` convert between the two layouts.

muP (``mup=True``; Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466, Table 3, in the
"width multiplier" form used by the ``mup`` package's MuReadout/MuAdam and by MiniCPM). With
width multiplier ``m = d_model / mup_base_width``:
  * hidden matrices (query, key, value, out, gate, up, down): init std ``init_std / sqrt(m)``
    (variance ~ 1/fan_in) and Adam learning rate x ``1/m`` (``mup_lr_scales``);
  * embedding, unembedding and norm scales: init and learning rate unchanged;
  * output logits multiplied by ``1/m`` (the readout multiplier).
At ``d_model == mup_base_width`` the model equals the standard parameterization, so learning
rates tuned at the base width transfer. Attention keeps the 1/sqrt(head_dim) scale: muP asks for
1/head_dim when head_dim grows with width, but ``models.shapes`` widens by adding heads at a
fixed head_dim, where the two differ by a width-independent constant. Without muP every matrix
is initialized N(0, init_std^2) and every learning-rate multiplier is 1.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import kv_cache
from scaling import flops as _flops

ACTIVATIONS = ("swiglu", "gelu", "relu")
REMAT_POLICIES = ("none", "full", "dots_saveable")
ATTENTION_IMPLS = (None, "xla", "cudnn", "splash")
DTYPES = ("float32", "bfloat16")
HIDDEN_MATRICES = ("query", "key", "value", "out", "gate", "up", "down")


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a Transformer. ``None`` fields get defaults in ``__post_init__``.

    n_kv_heads: key/value heads (grouped-query attention); default n_heads (multi-head).
    head_dim: default d_model // n_heads. d_ff: default 4*d_model for ungated activations and
    8/3*d_model rounded to a multiple of 8 for "swiglu" (same MLP parameter count as 4*d ungated).
    dtype: compute dtype of matmuls and activations; parameters stay float32, logits float32.
    remat: "none", "full" (recompute each block in the backward pass) or "dots_saveable" (keep
    matmul outputs, recompute elementwise ops). attention_impl: "xla" (dense, materialized
    [B, 1, L, L] mask), "cudnn" (GPU fused kernel), "splash" (TPU Pallas kernel, no dense mask;
    runs in Pallas interpret mode elsewhere), or None = chosen per platform by
    :func:`resolve_attention` (splash on TPU, cuDNN on GPU where it applies, else xla).
    """

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    activation: str = "swiglu"
    tie_embeddings: bool = False
    max_seq_len: int = 1024
    rope_theta: float = 10_000.0
    dtype: str = "float32"
    scan_layers: bool = True
    remat: str = "none"
    mup: bool = False
    mup_base_width: int = 128
    init_std: float = 0.02
    norm_eps: float = 1e-6
    attention_impl: str | None = None

    def __post_init__(self):
        def fail(msg):
            raise ValueError(f"ModelConfig: {msg}")

        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len", "mup_base_width"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                fail(f"{name} must be a positive integer, got {value!r}")
        if self.activation not in ACTIVATIONS:
            fail(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.remat not in REMAT_POLICIES:
            fail(f"remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            fail(f"attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
        if self.dtype not in DTYPES:
            fail(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads:
            fail(f"n_heads ({self.n_heads}) must be a positive multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                fail(f"d_model ({self.d_model}) not divisible by n_heads ({self.n_heads}); set head_dim")
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        if self.head_dim <= 0 or self.head_dim % 2:
            fail(f"head_dim must be a positive even integer (rotary embedding), got {self.head_dim}")
        if self.d_ff is None:
            d_ff = _round_to(8 * self.d_model / 3, 8) if self.gated else 4 * self.d_model
            object.__setattr__(self, "d_ff", d_ff)
        if self.d_ff <= 0:
            fail(f"d_ff must be positive, got {self.d_ff}")
        for name in ("init_std", "norm_eps", "rope_theta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                fail(f"{name} must be a positive finite number, got {value!r}")

    @property
    def gated(self) -> bool:
        return self.activation == "swiglu"

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def width_multiplier(self) -> float:
        """muP width multiplier m = d_model / mup_base_width (1.0 when mup is off)."""
        return self.d_model / self.mup_base_width if self.mup else 1.0

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def shape_dict(cfg: ModelConfig) -> dict:
    """The integers ``scaling.flops`` needs (it does not import models)."""
    return {
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "d_ff": cfg.d_ff,
        "gated": cfg.gated,
        "tie_embeddings": cfg.tie_embeddings,
    }


def param_counts(cfg: ModelConfig) -> dict:
    """{"total", "embedding", "nonembedding"} computed analytically (scaling.flops.param_counts).

    "embedding" = the vocabulary matrices (input embedding, plus the unembedding when untied);
    "nonembedding" = everything else, norm scales included (Kaplan et al. 2020's N).
    """
    return _flops.param_counts(shape_dict(cfg))


# --------------------------------------------------------------------------- building blocks


def _normal(std):
    return nn.initializers.normal(stddev=std)


class Linear(nn.Module):
    """``y = x . kernel``, contracting the last ``n_in`` axes of x with the first of kernel.

    A plain ``lax.dot_general`` (so qwix can intercept it), kernel float32 cast to ``dtype``.
    """

    shape: tuple[int, ...]
    axes: tuple[str, ...]
    n_in: int
    std: float
    dtype: Any = jnp.float32
    out_dtype: Any = None

    @nn.compact
    def __call__(self, x):
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(_normal(self.std), self.axes), self.shape, jnp.float32
        )
        x = x.astype(self.dtype)
        if isinstance(kernel, jax.Array) and kernel.dtype != self.dtype:
            kernel = kernel.astype(self.dtype)  # qwix PTQ passes WithAux(QArray) kernels through
        contract_x = tuple(range(x.ndim - self.n_in, x.ndim))
        contract_k = tuple(range(self.n_in))
        return jax.lax.dot_general(
            x, kernel, ((contract_x, contract_k), ((), ())), preferred_element_type=self.out_dtype
        )


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * scale (Zhang & Sennrich 2019), computed in float32."""

    eps: float
    dtype: Any

    @nn.compact
    def __call__(self, x):
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (x.shape[-1],), jnp.float32
        )
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y * scale).astype(self.dtype)


class Embedder(nn.Module):
    """Token embedding table [V, D]; ``attend`` reuses it as the tied unembedding."""

    vocab_size: int
    d_model: int
    std: float
    dtype: Any

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(_normal(self.std), ("vocab", "embed")),
            (self.vocab_size, self.d_model),
            jnp.float32,
        )

    def __call__(self, tokens):
        # Gather from a replicated copy of the table, cast to the compute dtype first: a gather
        # from a vocab/embed-sharded table into batch-sharded activations makes XLA's SPMD
        # partitioner fall back to full rematerialization, and the all-gather (the one FSDP does
        # for every weight) then moves and holds the table in bfloat16, half the float32 bytes.
        # The cast commutes with the gather, and the gradient is accumulated in float32 as
        # before (embed_lookup), so the numbers do not change.
        if jnp.dtype(self.dtype) == jnp.float32:
            return jnp.take(_replicated(self.embedding), tokens, axis=0)
        return embed_lookup(self.embedding, tokens, jnp.dtype(self.dtype))

    def attend(self, x):
        table = self.embedding.astype(self.dtype)
        return jax.lax.dot_general(
            x.astype(self.dtype), table, (((x.ndim - 1,), (1,)), ((), ())), preferred_element_type=jnp.float32
        )


def _replicated(table):
    return nn.with_logical_constraint(table, (None, None))


def embed_lookup(table, tokens, dtype):
    """``table.astype(dtype)[tokens]`` from a replicated copy made after the cast (so the
    all-gather moves ``dtype`` bytes), with the float32 gradient of the float32 table
    (scatter-added in float32, as the gather-then-cast it replaces: a bfloat16 scatter-add
    would round the sum over every occurrence of a token)."""
    return _embed_lookup(table, tokens, jnp.dtype(dtype), tuple(table.shape))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _embed_lookup(table, tokens, dtype, shape):
    return jnp.take(_replicated(table.astype(dtype)), tokens, axis=0)


def _embed_lookup_fwd(table, tokens, dtype, shape):
    return _embed_lookup(table, tokens, dtype, shape), tokens


def _embed_lookup_bwd(dtype, shape, tokens, g):
    return jnp.zeros(shape, jnp.float32).at[tokens].add(g.astype(jnp.float32)), None


_embed_lookup.defvjp(_embed_lookup_fwd, _embed_lookup_bwd)


def apply_rotary(x, positions, theta):
    """Rotary position embedding (Su et al. 2021, arXiv:2104.09864), "rotate half" layout.

    x: [B, L, H, Dh]; positions: [B, L]. Pair (x_i, x_{i+Dh/2}) is rotated by angle
    pos * theta^(-2i/Dh). Computed in float32, returned in x.dtype.
    """
    half = x.shape[-1] // 2
    inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / x.shape[-1])
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, L, half]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def attention_mask(segment_ids_q, segment_ids_k, q_index, k_index):
    """Boolean [B, 1, Lq, Lk]: key index <= query index AND same segment id."""
    causal = k_index[:, None, :] <= q_index[:, :, None]
    same = segment_ids_q[:, :, None] == segment_ids_k[:, None, :]
    return (causal & same)[:, None, :, :]


def attention_impl_name(cfg: ModelConfig, platform: str | None = None, seq_len: int | None = None) -> str:
    """The attention implementation ``cfg`` uses on ``platform`` ("tpu", "gpu", "cpu"; default
    ``jax.default_backend()``). An explicit ``cfg.attention_impl`` wins. Auto: "splash" on TPU
    when the sequence (``seq_len``, default max_seq_len) tiles into the kernel's 128-blocks;
    "cudnn" on GPU for
    bfloat16 with head_dim a multiple of 8 and at most 128 (what cuDNN's fused kernel takes in
    jax.nn.dot_product_attention); "xla" otherwise."""
    if cfg.attention_impl is not None:
        return cfg.attention_impl
    platform = platform or jax.default_backend()
    if platform == "tpu" and (seq_len or cfg.max_seq_len) % SPLASH_BLOCK == 0:
        return "splash"
    if platform == "gpu" and cfg.dtype == "bfloat16" and cfg.head_dim % 8 == 0 and cfg.head_dim <= 128:
        return "cudnn"
    return "xla"


def resolve_attention(cfg: ModelConfig, platform: str | None = None, seq_len: int | None = None) -> ModelConfig:
    """``cfg`` with ``attention_impl`` fixed to :func:`attention_impl_name`."""
    return cfg.replace(attention_impl=attention_impl_name(cfg, platform, seq_len))


SPLASH_BLOCK = 128


def _splash_kernel(n_heads: int, length: int, interpret: bool):
    """Pallas splash-attention kernel (jax.experimental.pallas.ops.tpu.splash_attention) for
    causal attention over ``length`` tokens; segment ids are passed per call. The causal mask is
    a lazy ``CausalMask``: only per-block metadata is built, never an L x L array."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    if length % SPLASH_BLOCK:
        raise ValueError(f"splash attention needs a sequence length that is a multiple of "
                         f"{SPLASH_BLOCK}, got {length}; use attention_impl='xla'")
    block = SPLASH_BLOCK
    mask = sm.MultiHeadMask([sm.CausalMask((length, length)) for _ in range(n_heads)])
    sizes = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                          block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                          block_q_dq=block, block_kv_dq=block)
    return sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                              interpret=interpret)


def splash_attention(q, k, v, segment_ids, scale, interpret: bool | None = None):
    """Causal, segment-restricted attention with the splash kernel. q: [B, L, H, Dh]; k, v:
    [B, L, K, Dh] (H a multiple of K); segment_ids [B, L]. Returns [B, L, H, Dh] in q.dtype.

    Under an active mesh (``models.sharding.sharding_context``) the kernel runs per shard in
    ``jax.shard_map``: batch split like the activations' "batch" axis, heads like "heads" (kv
    heads repeated to H when the tensor axis does not divide them); XLA cannot partition a
    Pallas call by itself. ``interpret`` defaults to True off TPU (Pallas interpret mode).
    """
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    batch, length, n_heads, _ = q.shape
    q = (q * jnp.asarray(scale, q.dtype)).transpose(0, 2, 1, 3)  # the kernel does not scale
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

    def attend(q, k, v, seg):
        kernel = _splash_kernel(q.shape[1], length, interpret)
        from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

        one = lambda q1, k1, v1, s1: kernel(q1, k1, v1, segment_ids=sk.SegmentIds(q=s1, kv=s1))
        return jax.vmap(one)(q, k, v, seg)

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        out = attend(q, k, v, segment_ids)
    else:
        spec = nn.logical_to_mesh_axes(("batch", "heads", "length", "head_dim"))
        batch_axes, head_axes = spec[0], spec[1]
        head_size = _axes_size(mesh, head_axes)
        if n_heads % head_size:
            head_axes = None
        elif k.shape[1] % head_size:
            k = jnp.repeat(k, n_heads // k.shape[1], axis=1)
            v = jnp.repeat(v, n_heads // v.shape[1], axis=1)
        if batch % _axes_size(mesh, batch_axes):
            batch_axes = None
        qkv_spec = jax.sharding.PartitionSpec(batch_axes, head_axes, None, None)
        seg_spec = jax.sharding.PartitionSpec(batch_axes, None)
        out = jax.shard_map(attend, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, seg_spec),
                            out_specs=qkv_spec, check_vma=False)(q, k, v, segment_ids)
    return out.transpose(0, 2, 1, 3)


def _axes_size(mesh, axes) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(mesh.shape[a] for a in axes)


def _dot_product_attention(cfg: ModelConfig, q, k, v, segment_ids, scale):
    """Training/prefill attention with the configured implementation (:func:`attention_impl_name`).
    Only the "xla" and "cudnn" paths build the dense [B, 1, L, L] mask."""
    impl = attention_impl_name(cfg)
    if impl == "splash":
        return splash_attention(q, k, v, segment_ids, scale)
    index = jnp.broadcast_to(jnp.arange(q.shape[1], dtype=jnp.int32), segment_ids.shape)
    mask = attention_mask(segment_ids, segment_ids, index, index)
    if impl == "cudnn":  # cuDNN skips the masked-out upper triangle when told the mask is causal
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=True,
                                            implementation="cudnn")
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation="xla")


class Attention(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, segment_ids, positions, cache=None, decode=None):
        cfg = self.cfg
        dt = cfg.compute_dtype
        std = cfg.init_std / math.sqrt(cfg.width_multiplier)
        d, h, k, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        q = Linear((d, h, hd), ("embed", "heads", "head_dim"), 1, std, dt, name="query")(x)
        kx = Linear((d, k, hd), ("embed", "kv_heads", "head_dim"), 1, std, dt, name="key")(x)
        vx = Linear((d, k, hd), ("embed", "kv_heads", "head_dim"), 1, std, dt, name="value")(x)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "head_dim"))
        kx = nn.with_logical_constraint(kx, ("batch", "length", "kv_heads", "head_dim"))
        vx = nn.with_logical_constraint(vx, ("batch", "length", "kv_heads", "head_dim"))
        q = apply_rotary(q, positions, cfg.rope_theta)
        kx = apply_rotary(kx, positions, cfg.rope_theta)
        scale = 1.0 / math.sqrt(hd)
        length = x.shape[1]
        new_cache = None
        if cache is None:
            out = _dot_product_attention(cfg, q, kx, vx, segment_ids, scale)
        else:
            # Decoding: write this chunk's keys/values at [index, index + length) and attend over
            # the whole cache; the mask hides unwritten slots (slot index > query index) and
            # other segments (kv_segment_ids is the already-updated cache of segment ids).
            # An int8 cache (``models.kv_cache``) quantizes them per token on write and
            # dequantizes on read.
            index, kv_segment_ids = decode["index"], decode["segment_ids"]
            new_cache = kv_cache.write(cache, kx, vx, index)
            keys, values = kv_cache.read(new_cache, dt)
            batch, max_len = kv_segment_ids.shape
            q_index = index + jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
            k_index = jnp.broadcast_to(jnp.arange(max_len, dtype=jnp.int32), (batch, max_len))
            mask = attention_mask(segment_ids, kv_segment_ids, q_index, k_index)
            out = jax.nn.dot_product_attention(q, keys, values, mask=mask, scale=scale, implementation="xla")
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "head_dim"))
        y = Linear((h, hd, d), ("heads", "head_dim", "embed"), 2, std, dt, name="out")(out)
        return y, new_cache


class Mlp(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dt = cfg.compute_dtype
        std = cfg.init_std / math.sqrt(cfg.width_multiplier)
        d, f = cfg.d_model, cfg.d_ff
        up = Linear((d, f), ("embed", "mlp"), 1, std, dt, name="up")(x)
        if cfg.gated:
            gate = Linear((d, f), ("embed", "mlp"), 1, std, dt, name="gate")(x)
            hidden = nn.silu(gate) * up
        elif cfg.activation == "gelu":
            hidden = nn.gelu(up)
        else:
            hidden = nn.relu(up)
        hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
        return Linear((f, d), ("mlp", "embed"), 1, std, dt, name="down")(hidden)


class Block(nn.Module):
    """Pre-norm residual block; returns (x, new_layer_cache) so it can be the body of nn.scan."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, segment_ids, positions, cache=None, decode=None):
        cfg = self.cfg
        h = RMSNorm(cfg.norm_eps, cfg.compute_dtype, name="attention_norm")(x)
        h, new_cache = Attention(cfg, name="attention")(h, segment_ids, positions, cache, decode)
        x = x + h.astype(x.dtype)
        h = RMSNorm(cfg.norm_eps, cfg.compute_dtype, name="mlp_norm")(x)
        x = x + Mlp(cfg, name="mlp")(h).astype(x.dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return x, new_cache


def _block_class(cfg: ModelConfig):
    if cfg.remat == "none":
        return Block
    policy = None if cfg.remat == "full" else jax.checkpoint_policies.dots_saveable
    # prevent_cse is unnecessary (and slower) inside scan; see flax.linen.remat docs.
    return nn.remat(Block, policy=policy, prevent_cse=not cfg.scan_layers)


class Transformer(nn.Module):
    """``__call__(tokens, segment_ids, positions) -> logits [B, L, V] float32``.

    tokens, segment_ids, positions: int32 [B, L]. segment_ids default to all ones (one
    document per row) and positions to 0..L-1. With ``cache`` (see ``models.sampling``) it
    returns ``(logits, new_cache)``: cache = {"k", "v": [n_layers, B, S, K, Dh],
    "segment_ids": [B, S]} (int8 "k", "v" with "k_scale", "v_scale" [n_layers, B, S, K]: a
    quantized cache, ``models.kv_cache``), and ``cache_index`` is where this chunk's first token goes.
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens, segment_ids=None, positions=None, cache=None, cache_index=None):
        cfg = self.cfg
        dt = cfg.compute_dtype
        if segment_ids is None:
            segment_ids = jnp.ones(tokens.shape, jnp.int32)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
        embedder = Embedder(cfg.vocab_size, cfg.d_model, cfg.init_std, dt, name="embed")
        x = embedder(tokens)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

        layer_cache, decode = None, None
        if cache is not None:
            if cache_index is None:
                raise ValueError("Transformer: cache_index is required with a cache")
            layer_cache = {name: x for name, x in cache.items() if name != "segment_ids"}
            kv_segment_ids = jax.lax.dynamic_update_slice(cache["segment_ids"], segment_ids, (0, cache_index))
            decode = {"index": cache_index, "segment_ids": kv_segment_ids}
        block = _block_class(cfg)
        if cfg.scan_layers:
            scanned = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast),
                length=cfg.n_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, stacked = scanned(cfg, name="layers")(x, segment_ids, positions, layer_cache, decode)
        else:
            per_layer = []
            for i in range(cfg.n_layers):
                this = None if layer_cache is None else jax.tree.map(lambda c: c[i], layer_cache)
                x, new = block(cfg, name=f"layers_{i}")(x, segment_ids, positions, this, decode)
                per_layer.append(new)
            stacked = None if cache is None else jax.tree.map(lambda *c: jnp.stack(c), *per_layer)

        x = RMSNorm(cfg.norm_eps, dt, name="final_norm")(x)
        if cfg.tie_embeddings:
            logits = embedder.attend(x)
        else:
            logits = Linear(
                (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), 1, cfg.init_std, dt, jnp.float32, name="unembed"
            )(x)
        logits = logits.astype(jnp.float32)
        if cfg.mup:
            logits = logits / cfg.width_multiplier
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        if cache is None:
            return logits
        new_cache = {**stacked, "segment_ids": decode["segment_ids"]}
        return logits, new_cache


# --------------------------------------------------------------------------- parameter helpers


def init_abstract(cfg: ModelConfig, batch_shape=(1, 8)):
    """Shape/dtype tree of the (unboxed) params without allocating them."""
    tokens = jnp.zeros(batch_shape, jnp.int32)
    variables = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.key(0), tokens))
    return nn.unbox(variables)["params"]


def count_params(params) -> int:
    """Number of scalars in a (possibly boxed) params tree."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.unbox(params))))


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def mup_lr_scales(cfg: ModelConfig, params=None):
    """Per-parameter learning-rate multipliers (a tree shaped like ``params``).

    ``1 / m`` (m = d_model / mup_base_width) for the hidden matrices (query, key, value, out,
    gate, up, down kernels) when ``cfg.mup``; 1.0 for everything else (embedding, unembedding,
    norm scales) and for every parameter when muP is off. ``params`` defaults to the abstract
    params of ``cfg``. ``experiments.harness.optimizer.scale_by_tree`` applies them after AdamW.
    """
    if params is None:
        params = init_abstract(cfg)
    params = nn.unbox(params)
    hidden_scale = 1.0 / cfg.width_multiplier

    def scale(path, _):
        names = _path_names(path)
        is_hidden = len(names) >= 2 and names[-1] == "kernel" and names[-2] in HIDDEN_MATRICES
        return hidden_scale if is_hidden else 1.0

    return jax.tree_util.tree_map_with_path(scale, params)


def unstack_layers(params, n_layers: int):
    """Scanned params (``layers`` with a leading axis) -> unscanned (``layers_0``, ...)."""
    params = dict(params)
    stacked = params.pop("layers")
    for i in range(n_layers):
        params[f"layers_{i}"] = jax.tree.map(lambda p: p[i], stacked)
    return params


def stack_layers(params, n_layers: int):
    """Unscanned params (``layers_0``, ...) -> scanned (``layers`` with a leading axis)."""
    params = dict(params)
    blocks = [params.pop(f"layers_{i}") for i in range(n_layers)]
    params["layers"] = jax.tree.map(lambda *p: jnp.stack(p), *blocks)
    return params
