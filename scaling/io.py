"""JSON files of the package: one sanitiser (`jsonable`) and one atomic writer (`write_text_atomic`).

`jsonable` turns numpy/jax scalars and arrays, tuples and nested mappings into plain JSON types,
with NaN and inf as None (strict JSON has neither); `write_text_atomic` writes a temporary file
in the target's folder, fsyncs it and renames it over the target (``os.replace``), so a reader,
or a process killed mid-write, never sees half a file. Paths with a scheme (``gs://...``) go
through ``etils.epath`` (a copy and delete on object stores: still never a torn object).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np


def jsonable(value: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """``value`` as plain JSON types; non-finite floats -> None.

    ``default(obj)`` converts objects of other types (its result is converted in turn); without
    it they raise ValueError naming the type.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, default) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, default) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if hasattr(value, "tolist") and hasattr(value, "dtype"):       # numpy and jax arrays
        return jsonable(value.tolist(), default)
    if default is not None:
        return jsonable(default(value), default)
    raise ValueError(f"cannot convert a {type(value).__name__} to JSON")


def dumps(value: Any, default: Callable[[Any], Any] | None = None, indent: int | None = 1) -> str:
    """Strict JSON text of `jsonable(value, default)` (no NaN/Infinity tokens)."""
    return json.dumps(jsonable(value, default), indent=indent, allow_nan=False)


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling, fsync and a rename."""
    path = os.fspath(path)
    if "://" in path:
        from etils import epath   # only for remote paths: a local write needs nothing beyond os

        target = epath.Path(path)
        tmp = target.parent / f".tmp-{os.getpid()}-{target.name}"
        tmp.write_bytes(data)
        tmp.replace(target)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path, value: Any, default: Callable[[Any], Any] | None = None) -> None:
    """Atomically write one strict JSON document (`dumps`, then `write_text_atomic`)."""
    write_text_atomic(path, dumps(value, default))
