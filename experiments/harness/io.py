"""Result files of a run: atomic JSON and JSON-lines writes that work on local disks and gs://.

Every file a run leaves behind (config.json, result.json, metrics.jsonl) is written through
`scaling.io`'s atomic writer (and its one JSON sanitiser): to a temporary sibling, renamed over the target, so a reader (or a run killed mid-write) never
sees half a file. Paths go through ``etils.epath``, so ``gs://bucket/run`` works wherever
``epath`` does. On object stores the rename is a copy and delete: readers still see either the
old or the new object, never a torn one.

JSON is parsed with ``json`` only (no pickle, no eval); a malformed file is a ``ValueError``
naming the file and the line.

Workdirs enter through `resolve_workdir` once (the command line, ``train``, the study runner):
a local path becomes absolute (Orbax refuses relative checkpoint paths), a URL such as
``gs://bucket/run`` stays as it is; `check_workdir` then proves it writable with a probe file.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from etils import epath

from scaling import io as sio
from scaling.io import write_bytes_atomic, write_text_atomic  # noqa: F401  (the one atomic writer)


def is_url(path: epath.PathLike) -> bool:
    """True for ``scheme://...`` paths (gs://, s3://, ...), which stay as written."""
    return "://" in os.fspath(path)


def resolve_workdir(path: epath.PathLike) -> epath.Path:
    """A workdir as every later step needs it: local paths absolute (``~`` expanded, relative to
    the current directory), URLs unchanged. ``ValueError`` on an empty path."""
    text = os.fspath(path)
    if not text.strip():
        raise ValueError("workdir: empty path")
    if is_url(text):
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def check_workdir(path: epath.PathLike) -> epath.Path:
    """`resolve_workdir`, then create it and write and remove a probe file.

    ``ValueError`` naming the path and the cause when it is a regular file, lies under one, or
    cannot be created or written (read-only folder, no permission, read-only file system).
    """
    workdir = resolve_workdir(path)
    if not is_url(workdir):
        local = os.fspath(workdir)
        if os.path.exists(local) and not os.path.isdir(local):
            raise ValueError(f"workdir {local}: exists and is not a directory")
        parent = local
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ValueError(f"workdir {local}: {parent} is a file, not a directory")
    probe = workdir / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        cause = err.strerror or type(err).__name__
        raise ValueError(f"workdir {workdir}: not writable ({cause})") from None
    return workdir


def dumps(value: Any) -> str:
    """Strict JSON text on one line (no NaN/Infinity tokens; `scaling.io.jsonable` values)."""
    return sio.dumps(value, indent=None)


def write_json(path: epath.PathLike, value: Any) -> None:
    """Atomically write one JSON document (indented, trailing newline)."""
    write_text_atomic(path, sio.dumps(value, indent=2) + "\n")


def read_json(path: epath.PathLike) -> Any:
    """Read one JSON document; ``ValueError`` naming the file when it does not parse."""
    path = epath.Path(path)
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def read_jsonl(path: epath.PathLike, *, drop_torn_tail: bool = True) -> list[dict]:
    """Read a JSON-lines file into a list of dicts; [] when the file does not exist.

    A last line that does not parse is the trace of a process killed mid-append: it is dropped
    when ``drop_torn_tail`` (the default). Any other bad line is a ``ValueError`` naming it.
    """
    path = epath.Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if drop_torn_tail and number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not valid JSON ({err})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def write_jsonl(path: epath.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Atomically replace ``path`` with one JSON object per line."""
    write_text_atomic(path, "".join(dumps(r) + "\n" for r in records))


def append_jsonl(path: epath.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Append JSON objects as lines.

    On a local disk the new lines go out in one ``write`` on an ``O_APPEND`` descriptor (a kill
    leaves at most one torn last line, which ``read_jsonl`` drops). Object stores cannot append,
    so there the file is rewritten atomically with the new lines added.
    """
    records = list(records)
    if not records:
        return
    path = epath.Path(path)
    text = "".join(dumps(r) + "\n" for r in records)
    if "://" not in os.fspath(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(os.fspath(path), "a") as f:
            f.write(text)
            f.flush()
    else:
        write_jsonl(path, read_jsonl(path) + records)
