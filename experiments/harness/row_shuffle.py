"""The row shuffle (step 6 of `experiments.harness.data`): Grain's window shuffle, with the windows
this process has already filled kept in memory and reused.

Filling a window means packing ``shuffle_tokens`` tokens of documents, row by row, in Python:
2.5-3 CPU-seconds at ``seq_len`` 64 with the default 2**22-token window (measured 2026-12-07 on
the 2-core CPU machine), paid by every run when it starts and again when it resumes. The runs of
a study that share a data pipeline and seed (an isoFLOP grid, a learning-rate sweep) fill the
same first window, so a study of 100 smoke-sized runs spent more time packing the one window it
needs than training on it. A filled window is a pure function of the pipeline (the data config,
seed, process, tokenizer), the packed stream's state where the window starts and the window's
seed: the cache is keyed by exactly these, and a hit yields the same rows in the same order, and
leaves the packed stream in the same state, as filling it again (tested, bit for bit).

The cache keeps the last ``CACHE_WINDOWS`` windows of the process (least recently used dropped);
each holds ``shuffle_tokens`` tokens as packed rows (~90 MB at seq_len 64, ~60 MB at 1024).
``CACHE_WINDOWS = 0`` turns it off; ``clear()`` empties it; ``stats`` counts hits and fills.
"""

from __future__ import annotations

import collections
import copy
import json
import threading

import grain
from grain._src.python.dataset.transformations import shuffle as _grain_shuffle  # the iterator

CACHE_WINDOWS = 2
stats = collections.Counter()  # "hits", "fills"
_windows: collections.OrderedDict = collections.OrderedDict()
_lock = threading.Lock()


def clear() -> None:
    """Drops every cached window (and resets ``stats``)."""
    with _lock:
        _windows.clear()
        stats.clear()


class _CachedWindowIterator(_grain_shuffle._WindowShuffleDatasetIterator):
    """Grain's window-shuffle iterator whose fill looks in the process's cache first."""

    def __init__(self, parent, *, window_size: int, seed: int, pipeline: str):
        super().__init__(parent, window_size=window_size, seed=seed)
        self._pipeline = pipeline

    def _fill_and_shuffle_window(self):
        # Grain sets the parent's window-start state before every fill (next() and set_state()).
        key = (self._pipeline, self._window_size, self._global_seed + self._window_index,
               json.dumps(self._parent_window_start_iter_state, sort_keys=True, default=repr))
        with _lock:
            cached = _windows.get(key)
            if cached is not None:
                _windows.move_to_end(key)
                stats["hits"] += 1
        if cached is not None:
            rows, exhausted, end_state = cached
            self._window = list(rows)  # a new list: the iterator pops from it
            self._parent_exhausted = exhausted
            self._parent.set_state(copy.deepcopy(end_state))
            return
        super()._fill_and_shuffle_window()
        if CACHE_WINDOWS <= 0:
            return
        entry = (tuple(self._window), self._parent_exhausted, copy.deepcopy(self._parent.get_state()))
        with _lock:
            stats["fills"] += 1
            _windows[key] = entry
            while len(_windows) > CACHE_WINDOWS:
                _windows.popitem(last=False)


class CachedWindowShuffleIterDataset(grain.experimental.WindowShuffleIterDataset):
    """``grain.experimental.WindowShuffleIterDataset`` (same rows, order and iterator state) whose
    filled windows are shared by every iterator of the process with the same ``pipeline`` (a
    string naming everything the packed rows depend on)."""

    def __init__(self, parent: grain.IterDataset, *, window_size: int, seed: int, pipeline: str):
        super().__init__(parent, window_size=window_size, seed=seed)
        self._pipeline = pipeline

    def __iter__(self):
        return _CachedWindowIterator(self._parent.__iter__(), window_size=self._window_size,
                                     seed=self._seed, pipeline=self._pipeline)
