"""Device mesh, logical-axis rules, sharded parameter creation and a sharding check.

Three layers, as in MaxText: physical mesh axes (``data``, ``fsdp``, ``tensor``), a table of
rules mapping logical names to mesh axes (``DEFAULT_RULES``), and the logical names that
``models.transformer`` puts on every weight and key activation. Changing the parallelism plan
is a change of mesh spec (and, rarely, of rules), never of model code.

    mesh = make_mesh("fsdp=4,tensor=2")
    params, shardings = init_params(Transformer(cfg), rng, (batch, seq_len), mesh, DEFAULT_RULES)
    check_sharding(params, shardings)                 # ValueError above 1.02x the ideal bytes
    with sharding_context(mesh, DEFAULT_RULES):       # activation constraints take effect
        loss = jax.jit(loss_fn)(params, batch)

Multi-host: nothing here is process-specific; ``make_mesh`` uses ``jax.devices()`` (all
processes' devices) once the harness has called ``jax.distributed.initialize``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
MODEL_PARALLEL_AXES = ("fsdp", "tensor")

# Logical name -> mesh axes. Order matters (flax assigns rules in order and never uses one mesh
# axis twice in an array): "batch" comes first, so on activations [batch, length, embed] the
# batch takes (data, fsdp) and embed, whose fsdp is then taken, stays unsharded.
#   batch -> (data, fsdp): data parallelism over both axes (FSDP is data parallel for compute).
#   embed -> fsdp: weights are split along d_model across fsdp (ZeRO-3 style), gathered per use.
#   mlp, heads, kv_heads, vocab -> tensor: Megatron-style tensor parallelism of the MLP hidden
#     dimension, the attention heads and the vocabulary (embedding rows and logits).
#   length, head_dim, layers, norm -> None: no sequence parallelism; head_dim is small and
#     contracted in attention; the scan axis must stay whole; norm scales are tiny vectors.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
    ("length", None),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
)


def parse_mesh_spec(spec: str | Mapping | None, n_devices: int) -> dict:
    """"data=2,fsdp=2,tensor=2" or {"fsdp": 4} -> {"data": .., "fsdp": .., "tensor": ..}.

    Missing axes are 1; one axis may be -1 (filled with the remaining devices); None puts every
    device on ``data``. ValueError for unknown axes, bad sizes or a product != n_devices.
    """
    if spec is None:
        return {"data": n_devices, "fsdp": 1, "tensor": 1}
    if isinstance(spec, str):
        sizes = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise ValueError(f"mesh spec {spec!r}: expected 'axis=size' items, got {part!r}")
            name, value = (x.strip() for x in part.split("=", 1))
            try:
                sizes[name] = int(value)
            except ValueError:
                raise ValueError(f"mesh spec {spec!r}: size of {name!r} is not an integer: {value!r}") from None
            if list(sizes).count(name) > 1:
                raise ValueError(f"mesh spec {spec!r}: axis {name!r} given twice")
        if not sizes:
            raise ValueError(f"mesh spec {spec!r} names no axis")
    elif isinstance(spec, Mapping):
        sizes = {str(k): v for k, v in spec.items()}
    else:
        raise ValueError(f"mesh spec must be a str, a mapping or None, got {type(spec).__name__}")
    unknown = sorted(set(sizes) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh spec {spec!r}: unknown axes {unknown}; axes are {MESH_AXES}")
    out = {axis: sizes.get(axis, 1) for axis in MESH_AXES}
    for axis, size in out.items():
        if isinstance(size, bool) or int(size) != size or (size < 1 and size != -1):
            raise ValueError(f"mesh spec {spec!r}: size of {axis!r} must be a positive integer or -1, got {size!r}")
        out[axis] = int(size)
    fill = [a for a, s in out.items() if s == -1]
    if len(fill) > 1:
        raise ValueError(f"mesh spec {spec!r}: only one axis may be -1, got {fill}")
    known = math.prod(s for s in out.values() if s != -1)
    if fill:
        if n_devices % known:
            raise ValueError(f"mesh spec {spec!r}: {n_devices} devices not divisible by {known}")
        out[fill[0]] = n_devices // known
    if math.prod(out.values()) != n_devices:
        raise ValueError(f"mesh spec {spec!r}: product of axis sizes {out} is "
                         f"{math.prod(out.values())}, but there are {n_devices} devices")
    return out


def make_mesh(spec: str | Mapping | None = None, devices: Sequence | None = None) -> Mesh:
    """``jax.make_mesh`` with axes ("data", "fsdp", "tensor") (Auto axis types) over ``devices``.

    ``devices`` defaults to ``jax.devices()``; the physical order is jax's (topology-aware on
    TPU). A spec that does not parse or does not multiply to the device count, or a shape jax
    cannot place on the physical torus (e.g. fsdp=64 on v5p-256's 4x4x8), is a ValueError.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = parse_mesh_spec(spec, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    try:
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                             devices=devices)
    except NotImplementedError as err:  # jax cannot lay this shape on the physical torus
        raise ValueError(f"mesh {sizes} cannot be laid out on these {len(devices)} "
                         f"{devices[0].device_kind} devices: each mesh axis must be a product of "
                         f"physical axis sizes ({err})") from None


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules=DEFAULT_RULES):
    """Activate ``mesh`` and the logical ``rules`` so ``nn.with_logical_constraint`` applies.

    Enter it around tracing/compiling (the first call of a jitted function) of model code.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def _fit_spec(spec: PartitionSpec, shape, mesh: Mesh) -> PartitionSpec:
    """Drop mesh axes that do not divide their dimension (e.g. 2 kv_heads over tensor=4)."""
    entries = list(spec) + [None] * (len(shape) - len(spec))
    fitted = []
    for dim, entry in zip(shape, entries):
        if entry is None:
            fitted.append(None)
            continue
        axes = (entry,) if isinstance(entry, str) else tuple(entry)
        kept = []
        for axis in axes:
            size = math.prod(mesh.shape[a] for a in kept + [axis])
            if dim % size == 0:
                kept.append(axis)
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*fitted)


def strip_boxes(tree):
    """Replace ``nn.LogicallyPartitioned`` boxes by their values (no sharding constraint,
    unlike ``nn.unbox``, which constrains under an active mesh)."""
    return jax.tree.map(
        lambda x: x.value if isinstance(x, nn.LogicallyPartitioned) else x,
        tree,
        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned),
    )


def logical_shardings(tree, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedShardings for a tree of boxed (``nn.LogicallyPartitioned``) values or abstract values.

    Leaves without logical names are replicated. Mesh axes that do not divide a dimension are
    dropped for that dimension (and show up in ``unsharded_report``).
    """
    specs = nn.get_partition_spec(tree)
    unboxed = strip_boxes(tree)

    def to_sharding(spec, leaf):
        mesh_spec = nn.logical_to_mesh_axes(tuple(spec), rules) if spec is not None else PartitionSpec()
        return NamedSharding(mesh, _fit_spec(mesh_spec, np.shape(leaf), mesh))

    return jax.tree.map(to_sharding, specs, unboxed, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, rules=DEFAULT_RULES, ndim: int = 2) -> NamedSharding:
    """Sharding of a [batch, length, ...] input array: batch over its mesh axes, rest whole."""
    names = ("batch", "length") + (None,) * (ndim - 2)
    return NamedSharding(mesh, nn.logical_to_mesh_axes(names[:ndim], rules))


def _example_inputs(example_batch_shape):
    batch, length = example_batch_shape
    tokens = jnp.zeros((batch, length), jnp.int32)
    segment_ids = jnp.ones((batch, length), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    return tokens, segment_ids, positions


def abstract_params(model: nn.Module, example_batch_shape, mesh: Mesh, rules=DEFAULT_RULES, boxed: bool = False):
    """(params as ShapeDtypeStructs, param_shardings) without allocating anything.

    For restoring checkpoints straight into their shards, AOT compilation, or checking a
    sharding plan (``unsharded_report`` accepts these abstract params) before paying for init.
    ``boxed=True`` keeps the ``nn.LogicallyPartitioned`` boxes: ``jax.eval_shape(opt.init,
    boxed_params)`` then yields an optimizer state whose param-shaped leaves carry the same
    logical names, and ``logical_shardings`` of it gives the optimizer-state shardings.
    """
    inputs = _example_inputs(example_batch_shape)
    with sharding_context(mesh, rules):
        boxed_tree = jax.eval_shape(lambda key: model.init(key, *inputs)["params"], jax.random.key(0))
        shardings = logical_shardings(boxed_tree, mesh, rules)
    return (boxed_tree if boxed else strip_boxes(boxed_tree)), shardings


def init_params(model: nn.Module, rng, example_batch_shape, mesh: Mesh, rules=DEFAULT_RULES):
    """Create ``model``'s params directly sharded: (params, param_shardings).

    eval_shape(init) -> logical partition specs -> NamedShardings -> jit(init, out_shardings),
    so no device ever holds the full unsharded tree. ``params`` is the unboxed "params"
    collection (apply with ``model.apply({"params": params}, ...)``). The values do not depend
    on the mesh (same ``rng`` -> same params on any mesh).
    """
    inputs = _example_inputs(example_batch_shape)
    _, shardings = abstract_params(model, example_batch_shape, mesh, rules)
    with sharding_context(mesh, rules):
        init = jax.jit(lambda key: strip_boxes(model.init(key, *inputs)["params"]), out_shardings=shardings)
        params = init(rng)
    return params, shardings


def model_parallel_size(mesh_shape: Mapping[str, int]) -> int:
    """Devices over which parameters are meant to be split: the mesh without its pure
    data-parallel axis (``data``), i.e. fsdp x tensor."""
    return math.prod(int(mesh_shape.get(a, 1)) for a in MODEL_PARALLEL_AXES)


def sharding_report(params, shardings, top: int = 10) -> dict:
    """Parameter bytes one device holds, against the ideal of a perfect split (MaxText's check).

    per_device_bytes = sum over leaves of the bytes of one shard (``sharding.shard_shape``);
    ideal_bytes = total_bytes / P with P = fsdp x tensor (:func:`model_parallel_size`);
    ratio = per_device_bytes / ideal_bytes (1.0 = perfectly split; >= 1 always). ``params``
    may be arrays or ShapeDtypeStructs. Returns {"total_bytes", "per_device_bytes",
    "ideal_bytes", "ratio", "model_parallel_size", "largest_excess": [(path, shape, spec,
    excess_bytes), ...]}, excess = shard bytes - leaf bytes / P, largest first.
    """
    leaves = jax.tree_util.tree_flatten_with_path(strip_boxes(params))[0]
    shard_leaves = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    if len(leaves) != len(shard_leaves):
        raise ValueError(f"params has {len(leaves)} leaves but shardings has {len(shard_leaves)}")
    if not leaves:
        raise ValueError("sharding_report: params has no leaves")
    mesh_shape = dict(getattr(shard_leaves[0], "mesh").shape) if hasattr(shard_leaves[0], "mesh") else {}
    parts = model_parallel_size(mesh_shape)
    total = per_device = 0
    rows = []
    for (path, leaf), sharding in zip(leaves, shard_leaves):
        shape = tuple(np.shape(leaf))
        itemsize = np.dtype(leaf.dtype).itemsize
        nbytes = math.prod(shape) * itemsize
        shard = math.prod(sharding.shard_shape(shape)) * itemsize
        total += nbytes
        per_device += shard
        excess = shard - nbytes / parts
        if excess > 0:
            rows.append((jax.tree_util.keystr(path), shape, str(getattr(sharding, "spec", "")), excess))
    rows.sort(key=lambda r: -r[3])
    ideal = total / parts
    return {"total_bytes": total, "per_device_bytes": per_device, "ideal_bytes": ideal,
            "ratio": per_device / ideal if ideal else 1.0, "model_parallel_size": parts,
            "largest_excess": rows[:top]}


def check_sharding(params, shardings, tolerance: float | None = 0.02) -> dict:
    """Fail when a device holds more than (1 + tolerance) x the ideal parameter bytes.

    The ideal is total bytes / (fsdp x tensor) (:func:`sharding_report`), as in MaxText's
    ``assert_params_sufficiently_sharded`` (used / perfectly_sharded - 1 < tolerance, default
    0.02). Above it: ValueError naming the largest replicated weights, or, with
    ``tolerance=None`` (the user opted out), a warning with the same text. Pure data
    parallelism (fsdp = tensor = 1) passes by construction (ratio 1).
    """
    report = sharding_report(params, shardings)
    limit = 0.02 if tolerance is None else float(tolerance)
    if report["ratio"] > 1 + limit:
        largest = ", ".join(f"{path} {shape} spec {spec} +{excess / 2**20:.3g} MiB"
                            for path, shape, spec, excess in report["largest_excess"][:5])
        msg = (f"each device holds {report['ratio']:.3g}x the ideal parameter bytes "
               f"({report['per_device_bytes'] / 2**20:.4g} MiB vs "
               f"{report['ideal_bytes'] / 2**20:.4g} MiB = total / {report['model_parallel_size']} "
               f"fsdp x tensor devices; tolerance {limit:.0%}): weights replicated across the "
               f"model-parallel axes, largest: {largest}. Choose a mesh whose axes divide these "
               "dimensions, or set sharding_tolerance=none to train anyway")
        if tolerance is not None:
            raise ValueError(msg)
        log.warning("sharding check (opted out): %s", msg)
    else:
        log.info("sharding check: each device holds %.4gx the ideal parameter bytes",
                 report["ratio"])
    return report
