"""The unique-token cap (``DataConfig.unique_tokens = U``): train on a fixed subset of U tokens.

Data-constrained training (Muennighoff et al. 2023) repeats a fixed set of unique tokens for as
many epochs as the run needs. The subset is chosen once, deterministically, from the train split
only (never the held-out split):

1. every train document gets the key ``sha256("unique_tokens:" + path)`` (its ``path`` feature;
   the text itself for data sets without one), salted so that the order is unrelated to the
   ``python_stdlib`` split hash;
2. documents are taken in key order, skipping empty ones, until their tokens reach U; the last
   one is cut so that the subset holds exactly U tokens.

So the subsets are nested: the subset of a smaller U is a prefix of that of a larger one, and a
study's budgets differ only in how much data they hold, not in which kind. The subset depends on
the data set, the split, the text key and the tokenizer, and on nothing else (not the seed, the
batch, the model or the process count).

The training stream is then the usual pipeline over the subset (``packing.packed_train_rows``):
epoch ``e`` visits its documents in a permutation seeded ``seed + e`` (reshuffled each epoch),
repeated without end unless ``num_epochs`` is set, packed into rows across epoch boundaries; the
row shuffle's window is capped at one epoch of rows (``U // (seq_len + 1)``), so a window never
holds two copies of a row. The iterator state is the ordinary one, so a restore reproduces the
stream exactly, epoch boundaries included.

Epochs: every step reads ``global_batch_size x (seq_len + 1)`` tokens of the packed stream (the
last token of a row is a target only; the next row continues the stream), so after ``s`` steps the
mean number of times each unique token was read is ``s B (L + 1) / U`` (`epochs_read`; times the
base data set's share when a mixture is set). Runs record it as ``epochs`` with ``unique_tokens``.

With ``DataConfig.mixture`` the cap applies to ``dataset`` (its share of the rows repeats); the
mixture's other sources stay uncapped. A mixture entry from the capped data set itself (under any
config name) would read past the cap and is refused, as are a cap on a generated task data set,
a cap above the split's tokens, below one batch, or on fewer documents than processes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import grain
import numpy as np

from experiments.harness import corpus, tasks
from experiments.harness.sources import _text_of, load_source
from experiments.harness.tokenizers import ByteTokenizer, make_tokenizer

KEY_SALT = b"unique_tokens:"


@dataclasses.dataclass(frozen=True)
class Subset:
    """The documents of a cap: source indices in selection order, the last one cut to
    ``last_tokens`` tokens, ``tokens`` (= U) in all."""

    indices: tuple[int, ...]
    last_tokens: int
    tokens: int

    @property
    def documents(self) -> int:
        return len(self.indices)


def _base_name(dataset: str) -> str:
    return dataset.split("/", 1)[0]


def check_config(cfg) -> None:
    """Config-level checks of ``cfg.unique_tokens`` (no data read): ValueError naming the field."""
    cap = getattr(cfg, "unique_tokens", None)
    if cap is None:
        return
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"data.unique_tokens={cap!r}: must be a positive integer (or None: no cap)")
    if tasks.is_task_dataset(cfg.dataset):
        raise ValueError(f"data.unique_tokens={cap}: {cfg.dataset!r} is a generated task data set "
                         "without a fixed set of documents; cap a corpus")
    if cfg.train_split == cfg.eval_split:
        raise ValueError(f"data.unique_tokens={cap}: the train split {cfg.train_split!r} is the "
                         "held-out split; the cap draws only from training documents")
    for entry in cfg.mixture:
        name = str(entry).rpartition(":")[0]
        if _base_name(name) == _base_name(cfg.dataset):
            raise ValueError(f"data.unique_tokens={cap} with data.mixture entry {entry!r}: the mixture "
                             f"reads {cfg.dataset!r}'s documents past the cap; mix other data sets")


def _document_key(record, text_key: str) -> bytes:
    key = record.get("path") if isinstance(record, dict) else None
    if key is None:
        key = _text_of(record, text_key)
    if isinstance(key, str):
        key = key.encode("utf-8")
    return hashlib.sha256(KEY_SALT + bytes(key)).digest()


def _token_count(tokenizer, text) -> int:
    if isinstance(tokenizer, ByteTokenizer):
        return len(text.encode("utf-8") if isinstance(text, str) else text)
    return len(tokenizer.encode(text))


# the fields of a DataConfig that do not change the subset, set to fixed values for the cache key
_IRRELEVANT = dict(mixture=(), unique_tokens=None, seq_len=1, shuffle_seed=0, shuffle_tokens=0,
                   num_epochs=None, eval_sequences=1, read_threads=1, prefetch_batches=0)


@functools.lru_cache(maxsize=32)
def _subset(cfg, data_dir: str, cap: int) -> Subset:
    del data_dir  # in the cache key only ($SCALING_DATA_DIR may change between calls)
    dataset, split, text_key = cfg.dataset, cfg.train_split, cfg.text_key
    source = load_source(cfg, split)
    tokenizer = make_tokenizer(cfg)
    records = [source[i] for i in range(len(source))]
    order = sorted(range(len(records)), key=lambda i: _document_key(records[i], text_key))
    chosen, total = [], 0
    for i in order:
        n = _token_count(tokenizer, _text_of(records[i], text_key))
        if n == 0:
            continue
        chosen.append(i)
        if total + n >= cap:
            return Subset(tuple(chosen), cap - total, cap)
        total += n
    raise ValueError(f"data.unique_tokens={cap} exceeds the {total} tokens of split {split!r} of "
                     f"{dataset!r}; the largest cap is {total}")


def unique_subset(cfg) -> Subset:
    """The subset of ``cfg.unique_tokens`` training tokens (cached per process); ValueError when
    the train split holds fewer tokens."""
    check_config(cfg)
    if cfg.unique_tokens is None:
        raise ValueError("unique_subset: data.unique_tokens is not set")
    fields = {f.name for f in dataclasses.fields(cfg)}
    key = dataclasses.replace(cfg, **{k: v for k, v in _IRRELEVANT.items() if k in fields})
    return _subset(key, str(corpus.default_data_dir(cfg.data_dir)), int(cfg.unique_tokens))


def check_cap(cfg, *, global_batch_size: int, process_count: int = 1) -> Subset | None:
    """Every check of the cap for a run: config, corpus size, one batch, processes (ValueError
    naming ``data.unique_tokens``); the subset, or None without a cap."""
    if getattr(cfg, "unique_tokens", None) is None:
        return None
    batch_tokens = global_batch_size * (cfg.seq_len + 1)
    if cfg.unique_tokens < batch_tokens:
        check_config(cfg)
        raise ValueError(f"data.unique_tokens={cfg.unique_tokens} is smaller than one batch "
                         f"({global_batch_size} rows x {cfg.seq_len + 1} tokens = {batch_tokens})")
    subset = unique_subset(cfg)
    if subset.documents < process_count:
        raise ValueError(f"data.unique_tokens={cfg.unique_tokens} selects {subset.documents} "
                         f"document(s), fewer than the {process_count} processes that share them")
    return subset


def base_share(cfg) -> float:
    """The capped data set's share of the training rows: 1 - the mixture's weights."""
    return 1.0 - sum(w for _, w in tasks.parse_mixture(cfg.mixture)) if cfg.mixture else 1.0


def epochs_read(cfg, *, steps: int, global_batch_size: int) -> float | None:
    """Mean reads of each unique token after ``steps`` steps: s B (L+1) share / U (None: no cap)."""
    if getattr(cfg, "unique_tokens", None) is None:
        return None
    return steps * global_batch_size * (cfg.seq_len + 1) * base_share(cfg) / cfg.unique_tokens


class SubsetDocument(grain.transforms.Map):
    """Grain map: a position in the subset -> the tokens of its document (the last one cut)."""

    def __init__(self, source, subset: Subset, tokenizer, text_key: str):
        self._source, self._subset = source, subset
        self._tokenizer, self._text_key = tokenizer, text_key
        self._last = len(subset.indices) - 1

    def map(self, position):
        position = int(position)
        text = _text_of(self._source[self._subset.indices[position]], self._text_key)
        tokens = self._tokenizer.encode(text)
        if position == self._last:
            tokens = np.asarray(tokens)[: self._subset.last_tokens]
        return {"tokens": tokens}
