"""The embedded default corpus: the running Python's standard library as a TFDS dataset.

Each example is one ``.py`` source file of the interpreter's standard library
(``sysconfig.get_paths()["stdlib"]``, about 1,700 files and 30 MB of real, human-written
text on CPython 3.11), so a language model can be trained with no download. Features:
``text`` (the file's UTF-8 text) and ``path`` (its path relative to the stdlib root, with
``/`` separators).

Excluded: ``site-packages`` / ``dist-packages`` (third-party code, differs per machine),
symbolic links, and files that are not text: files that do not decode as strict UTF-8
(CPython's test suite ships deliberately mis-encoded files such as ``test/bad_coding.py``),
files holding NUL bytes, and empty files.

Split (deterministic, the same on every machine and in every config): a file goes to
``validation`` when ``sha256(relative path) mod 10_000 < 200`` (about 2 %), else to ``train``.

Configs:
  * ``python_stdlib/full`` (default): every file above.
  * ``python_stdlib/small``: for fast tests, the files of at most 32 KiB that are held out or
    whose path hash falls in a fixed 15 % bucket (~220 train files, ~1.6 MB; ~25 held out).
    Its split rule is the full one, so a small-config file is held out exactly when it is
    held out in the full config.

The dataset is written by TFDS 4.9.10 as ArrayRecord (``file_format="array_record"``) and read
with ``builder.as_data_source(split)`` / ``tfds.data_source``: neither needs TensorFlow
(checked: building and reading leave ``tensorflow`` out of ``sys.modules``).

Cache: ``data_dir`` argument, else ``$SCALING_DATA_DIR``, else ``~/.cache/scaling/tfds``.
Build once, reuse after. Concurrent builders are safe: :func:`prepare` takes an exclusive
``fcntl`` lock per config, re-checks whether another process finished the build while it
waited, and TFDS itself writes into an ``incomplete.*`` directory that it renames into place
only when complete, so a reader never sees a half-written dataset.

The corpus depends on the interpreter: the builder stores the Python version and a fingerprint
of the file list (relative paths and sizes) as metadata, and :func:`prepare` logs a warning
when a cached build came from a different standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import platform
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import tensorflow_datasets as tfds
from etils import epath

log = logging.getLogger(__name__)

DATASET_NAME = "python_stdlib"
TRAIN_SPLIT = "train"
EVAL_SPLIT = "validation"
HELD_OUT_PER_10K = 200  # 2 % of files held out
SMALL_BUCKET_PER_1K = 150  # the small config keeps ~15 % of files ...
SMALL_MAX_BYTES = 32 * 1024  # ... of at most 32 KiB each
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
DEFAULT_DATA_DIR = "~/.cache/scaling/tfds"


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Cache directory: ``data_dir``, else ``$SCALING_DATA_DIR``, else ``~/.cache/scaling/tfds``."""
    chosen = data_dir or os.environ.get("SCALING_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def stdlib_root() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def _path_hash(relative_path: str) -> int:
    return int.from_bytes(hashlib.sha256(relative_path.encode("utf-8")).digest()[:8], "big")


def split_of(relative_path: str) -> str:
    """``validation`` when sha256(path) mod 10_000 < 200 (about 2 % of files), else ``train``."""
    return EVAL_SPLIT if _path_hash(relative_path) % 10_000 < HELD_OUT_PER_10K else TRAIN_SPLIT


def _in_small_config(relative_path: str, size: int) -> bool:
    """Files of at most 32 KiB that are held out, or whose hash falls in a fixed 15 % bucket."""
    if size > SMALL_MAX_BYTES:
        return False
    bucket = (_path_hash(relative_path) // 10_000) % 1_000  # independent of the split digits
    return split_of(relative_path) == EVAL_SPLIT or bucket < SMALL_BUCKET_PER_1K


def stdlib_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """Sorted ``(relative_path, absolute_path)`` of candidate ``.py`` files (before text checks)."""
    root = stdlib_root() if root is None else Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        for name in filenames:
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def read_text(path: Path) -> str | None:
    """The file's text, or None when it is not real text (not UTF-8, NUL bytes, empty)."""
    raw = path.read_bytes()
    if not raw or b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


@functools.lru_cache(maxsize=4)
def stdlib_fingerprint(root: Path | None = None) -> str:
    """sha256 over the sorted (relative path, size) list: changes when the stdlib changes."""
    digest = hashlib.sha256()
    for relative, path in stdlib_files(root):
        digest.update(f"{relative}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


class LocalBuildMessages:
    """Mixin for TFDS builders that generate their data locally: TFDS announces every build as a
    download ("Downloading and preparing dataset Unknown size ..."); nothing is downloaded, so say
    what happens instead (stderr: stdout is the command's result)."""

    def _log_download_bytes(self) -> None:
        print(f"Building the local dataset {self.name}/{self.builder_config.name} into {self.data_dir} "
              f"({self.SOURCE}; once)", file=sys.stderr, flush=True)

    def _log_download_done(self) -> None:
        print(f"Built {self.name}/{self.builder_config.name} in {self.data_dir}", file=sys.stderr, flush=True)


class PythonStdlib(LocalBuildMessages, tfds.core.GeneratorBasedBuilder):
    """TFDS builder: the interpreter's standard-library ``.py`` files (see module docstring)."""

    SOURCE = "generated from this interpreter's standard library"

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="full", description="Every standard-library .py text file."),
        tfds.core.BuilderConfig(
            name="small",
            description="Held-out files and a fixed ~15 % of train files, all of at most 32 KiB.",
        ),
    ]
    DEFAULT_CONFIG_NAME = "full"
    # TFDS 4.9.10 derives ``code_path`` through ``importlib_resources``, a package it only
    # declares for Python < 3.9, so the lookup fails on 3.11 without it; this file is the code.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Source files of the Python standard library at "
                f"{stdlib_root()} (Python {platform.python_version()})."
            ),
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "path": tfds.features.Text()}
            ),
            metadata=tfds.core.MetadataDict(
                python_version=platform.python_version(),
                stdlib_fingerprint=stdlib_fingerprint(),
            ),
            homepage="https://docs.python.org/3/library/",
            license="Python Software Foundation License",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        files = self._selected_files()
        return {
            split: self._generate_examples(files=[f for f in files if split_of(f[0]) == split])
            for split in (TRAIN_SPLIT, EVAL_SPLIT)
        }

    def _selected_files(self) -> list[tuple[str, Path]]:
        files = stdlib_files()
        if self.builder_config.name == "small":
            files = [(rel, p) for rel, p in files if _in_small_config(rel, p.stat().st_size)]
        return files

    def _generate_examples(self, files: list[tuple[str, Path]]) -> Iterator[tuple[str, dict]]:
        for relative, path in files:
            text = read_text(path)
            if text is not None:
                yield relative, {"text": text, "path": relative}


def builder_config_name(name: str, builder_class, what: str) -> str:
    """The config of ``DATASET[/CONFIG]`` for a local builder class (its default when none is
    given): ``"python_stdlib"`` → ``"full"``; ValueError naming ``what`` for another dataset or an
    unknown config."""
    base, _, config = name.partition("/")
    if base != builder_class.name:
        raise ValueError(f"not {what}: {name!r} (expected {builder_class.name}[/config])")
    config = config or builder_class.DEFAULT_CONFIG_NAME
    known = [c.name for c in builder_class.BUILDER_CONFIGS]
    if config not in known:
        raise ValueError(f"unknown config {config!r} of {builder_class.name}; known: {known}")
    return config


def _config_name(name: str) -> str:
    return builder_config_name(name, PythonStdlib, "the embedded corpus")


def is_embedded(name: str) -> bool:
    """Whether a dataset name refers to this corpus (``python_stdlib`` or ``python_stdlib/CONFIG``)."""
    return name.partition("/")[0] == DATASET_NAME


class _DropIncompleteVariantWarnings(logging.Filter):
    """TFDS warns "Variant folder ... has no dataset_info.json" while it looks for a finished
    build; before the first build that is expected, not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Variant folder")


@contextlib.contextmanager
def quiet_tfds():
    """No TFDS progress bars or variant-folder warnings while the corpus is checked or built."""
    loggers = [logging.getLogger("absl"), logging.getLogger()]
    drop = _DropIncompleteVariantWarnings()
    for logger in loggers:
        logger.addFilter(drop)
    tfds.display_progress_bar(False)
    try:
        yield
    finally:
        tfds.display_progress_bar(True)
        for logger in loggers:
            logger.removeFilter(drop)


def prepare(name: str = DATASET_NAME, data_dir: str | os.PathLike | None = None) -> PythonStdlib:
    """Builds the corpus into the cache once (process-safe) and returns the prepared builder."""
    config = _config_name(name)
    root = default_data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    builder = PythonStdlib(config=config, data_dir=str(root), file_format="array_record")
    lock_path = root / f".{DATASET_NAME}-{config}.lock"
    with open(lock_path, "w") as lock, quiet_tfds():
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not builder.is_prepared():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
        # Re-open so that the info (splits, metadata) is the one read from disk.
        builder = PythonStdlib(config=config, data_dir=str(root), file_format="array_record")
    stored = builder.info.metadata or {}
    if stored.get("stdlib_fingerprint") != stdlib_fingerprint():
        log.warning(
            "cached %s/%s in %s was built from Python %s's stdlib, not this interpreter's "
            "(Python %s); delete that directory to rebuild",
            DATASET_NAME, config, root, stored.get("python_version"), platform.python_version(),
        )
    return builder


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None):
    """A random-access data source (``len`` / ``[i]`` → ``{"text": bytes, "path": bytes}``)."""
    builder = prepare(name, data_dir)
    if split not in builder.info.splits:
        raise ValueError(
            f"unknown split {split!r} of {name}; known: {sorted(builder.info.splits.keys())}"
        )
    return builder.as_data_source(split=split)
