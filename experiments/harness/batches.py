"""Which rows of the global batch each process loads, derived from the batch sharding.

    layout = row_layout(batch_sharding, global_rows)       # same answer on every process
    it = make_train_iterator(cfg.data, global_batch_size=global_rows,
                             process_index=layout.group, process_count=layout.groups)
    arrays = global_batch(next(it), batch_sharding, global_rows)

A process must load exactly the rows its devices hold (as MaxText derives each host's rows from
the data sharding). The rows of a [B, ...] batch are split by the mesh axes of its "batch"
dimension into blocks; each device holds one block, and a process holds the blocks of its
devices, which need not be contiguous (a mesh axis may run across processes in any order) and
may be held by several processes at once (a "tensor" axis that spans processes replicates the
batch across them). So:

* processes holding the same set of rows form a *group*; groups are numbered by their first
  row, and each process of group g reads data stream g of G (``make_train_iterator`` with
  process_index=g, process_count=G): replicas read identical rows, distinct groups disjoint
  documents;
* the B/G rows a group loads fill its row set in increasing row order.

With one process, or blocks laid out in process order, G equals the process count and group g
is process g (the loader's former rule), so those runs are unchanged. A run's rows depend only on
G and the row sets, so any process count that gives the same row sets gives the same run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import numpy as np
from jax.sharding import Sharding


@dataclasses.dataclass(frozen=True)
class RowLayout:
    """``group``: this process's data stream; ``groups``: how many streams (G); ``rows``: the
    global rows this process holds, increasing (its loaded row i is global row rows[i])."""

    group: int
    groups: int
    rows: tuple[int, ...]


def _row_slice(index, global_rows: int) -> tuple[int, int]:
    start, stop, step = index[0].indices(global_rows)
    if step != 1:
        raise ValueError(f"batch sharding gives a strided row slice {index[0]}")
    return start, stop


def row_sets(sharding: Sharding, global_rows: int, ndim: int = 2,
             process_of: Callable[[jax.Device], int] | None = None) -> dict[int, tuple[int, ...]]:
    """process -> the sorted global rows its devices hold (all processes; same everywhere).
    ``process_of`` maps a device to its process (default ``device.process_index``)."""
    process_of = process_of or (lambda d: d.process_index)
    shape = (global_rows,) + (1,) * (ndim - 1)
    held: dict[int, set[int]] = {}
    for device, index in sharding.devices_indices_map(shape).items():
        start, stop = _row_slice(index, global_rows)
        held.setdefault(process_of(device), set()).update(range(start, stop))
    return {p: tuple(sorted(rows)) for p, rows in held.items()}


def row_layout(sharding: Sharding, global_rows: int, process: int | None = None, ndim: int = 2,
               process_of: Callable[[jax.Device], int] | None = None) -> RowLayout:
    """This process's :class:`RowLayout` under ``sharding`` (module docstring).

    ValueError when groups hold different numbers of rows, or two groups share a row (each
    stream must fill B/G rows of its own)."""
    process = jax.process_index() if process is None else process
    sets = row_sets(sharding, global_rows, ndim, process_of)
    distinct = sorted(set(sets.values()), key=lambda rows: rows[0] if rows else -1)
    sizes = {len(rows) for rows in distinct}
    if len(sizes) != 1 or sum(sizes) * len(distinct) != global_rows:
        raise ValueError(f"batch sharding splits {global_rows} rows into process row sets of "
                         f"sizes {sorted(len(r) for r in distinct)} that do not tile the batch; "
                         "choose a mesh whose batch axes give every process an equal share")
    return RowLayout(group=distinct.index(sets[process]), groups=len(distinct), rows=sets[process])


def global_batch(batch: Mapping[str, np.ndarray], sharding: Sharding, global_rows: int,
                 layout: RowLayout | None = None, keys=None) -> dict:
    """This process's loaded rows -> global arrays laid out by ``sharding``.

    ``batch[k]`` holds the process's rows in the order of ``layout.rows``. Each addressable
    device gets exactly its rows (``jax.make_array_from_single_device_arrays``), so any row
    layout works. One process holding every row uses ``jax.device_put`` (~4x less host time).
    """
    keys = list(batch) if keys is None else list(keys)
    if jax.process_count() == 1:
        return jax.device_put({k: batch[k] for k in keys}, sharding)
    layout = layout or row_layout(sharding, global_rows)
    position = {row: i for i, row in enumerate(layout.rows)}
    out = {}
    for k in keys:
        local = np.asarray(batch[k])
        if local.shape[0] != len(layout.rows):
            raise ValueError(f"batch[{k!r}] has {local.shape[0]} rows; this process holds "
                             f"{len(layout.rows)} of the {global_rows}")
        shape = (global_rows,) + local.shape[1:]
        pieces = []
        for device, index in sharding.addressable_devices_indices_map(shape).items():
            start, stop = _row_slice(index, global_rows)
            first = position[start]
            pieces.append(jax.device_put(local[first:first + stop - start], device))
        out[k] = jax.make_array_from_single_device_arrays(shape, sharding, pieces)
    return out


def select_rows(batch: Mapping[str, np.ndarray], layout: RowLayout) -> dict[str, np.ndarray]:
    """The rows of a full global batch that this process holds (for the small eval set, which
    every process builds whole)."""
    rows = np.asarray(layout.rows, np.int64)
    return {k: np.asarray(v)[rows] for k, v in batch.items()}
