"""Packing: documents -> rows of ``seq_len + 1`` tokens -> model batches.

``grain.experimental.ConcatThenSplitIterDataset`` concatenates the documents and splits them at
row boundaries, so a long document continues in the next row (nothing is dropped or
duplicated). Segment ids number the documents (or document pieces) of a row from 1; positions
count from 0 within each piece. ``to_model_batch`` shifts the rows into inputs and targets (the
batch format is in ``experiments.harness.data``'s docstring). The training documents of a
process (``train_document_indices``) and the row shuffle's window and seed are here too.
"""

from __future__ import annotations

import hashlib

import grain
import numpy as np

from experiments.harness import subsets
from experiments.harness.sources import _not_empty, _Tokenize, load_source
from experiments.harness.tokenizers import make_tokenizer


def _packed_rows(documents: grain.IterDataset, seq_len: int) -> grain.IterDataset:
    """Concatenate-then-split packing into rows of seq_len + 1 tokens (long docs continue)."""
    return grain.experimental.ConcatThenSplitIterDataset(
        documents, length_struct={"tokens": seq_len + 1}
    )


def to_model_batch(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Packed rows ``{tokens, tokens_segment_ids, tokens_positions}`` [b, L+1] → model batch [b, L]."""
    tokens = np.asarray(rows["tokens"], dtype=np.int32)
    segments = np.asarray(rows["tokens_segment_ids"], dtype=np.int32)
    positions = np.asarray(rows["tokens_positions"], dtype=np.int32)
    same_document = (segments[:, :-1] == segments[:, 1:]) & (segments[:, :-1] != 0)
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "segment_ids": segments[:, :-1],
        "positions": positions[:, :-1],
        "weights": same_document.astype(np.float32),
    }


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must lie in [0, process_count={process_count})")


def train_document_indices(
    num_documents: int,
    *,
    seed: int,
    num_epochs: int | None,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Record indices this process reads, in order: per-epoch shuffles, every P-th taken.

    Epoch ``e`` is a permutation of ``range(num_documents)`` seeded with ``seed + e``
    (Grain's ``shuffle`` + ``repeat``); process ``i`` of ``P`` takes stream items
    ``i, i + P, ...``, so over each epoch the processes' documents are disjoint and complete.
    """
    _check_process(process_index, process_count)
    return (
        grain.MapDataset.range(num_documents)
        .shuffle(seed=seed)
        .repeat(num_epochs)[process_index::process_count]
    )


class _Lookup(grain.transforms.Map):
    def __init__(self, source):
        self._source = source

    def map(self, index):
        return self._source[int(index)]


def packed_train_rows(
    cfg,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    tokenizer=None,
) -> grain.IterDataset:
    """This process's packed rows ``{tokens, tokens_segment_ids, tokens_positions}`` [L + 1]."""
    tokenizer = make_tokenizer(cfg) if tokenizer is None else tokenizer
    source = load_source(cfg, cfg.train_split)
    subset = subsets.unique_subset(cfg) if getattr(cfg, "unique_tokens", None) else None
    count = len(source) if subset is None else subset.documents  # documents of one epoch
    if count < process_count:
        raise ValueError(f"{count} train documents cannot be shared by {process_count} processes")
    indices = train_document_indices(count, seed=seed, num_epochs=cfg.num_epochs,
                                     process_index=process_index, process_count=process_count)
    if subset is None:
        documents = indices.map(_Lookup(source)).map(_Tokenize(tokenizer, cfg.text_key))
    else:  # positions in the capped subset (experiments.harness.subsets)
        documents = indices.map(subsets.SubsetDocument(source, subset, tokenizer, cfg.text_key))
    documents = (
        documents
        .to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=64))
        .filter(_not_empty)
    )
    return _packed_rows(documents, cfg.seq_len)


def shuffle_window_rows(cfg) -> int:
    """Rows per row-shuffle window: ``ceil(shuffle_tokens / (seq_len + 1))``; 0 or 1 = off.

    With a unique-token cap, at most one epoch of rows, ``unique_tokens // (seq_len + 1)``, so a
    window never holds two copies of a row (`experiments.harness.subsets`)."""
    rows = -(-cfg.shuffle_tokens // (cfg.seq_len + 1))
    cap = getattr(cfg, "unique_tokens", None)
    return rows if cap is None else min(rows, cap // (cfg.seq_len + 1))


def row_shuffle_seed(seed: int, process_index: int) -> int:
    """Seed of the row shuffle of one process, in [0, 2**31).

    Grain seeds window ``k`` with ``row_seed + k``, which must stay below 2**32, hence 31 bits;
    derived from (seed, process) by SHA-256 so it is unrelated to the document-order seeds
    ``seed + epoch`` and differs between processes.
    """
    digest = hashlib.sha256(f"rows:{seed}:{process_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % 2**31
