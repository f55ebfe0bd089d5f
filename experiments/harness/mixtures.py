"""Mixtures: training rows of several sources, interleaved by token share (``DataConfig.mixture``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import grain

from experiments.harness import tasks
from experiments.harness.packing import packed_train_rows
from experiments.harness.tokenizers import make_tokenizer


def mixed_train_rows(cfg, mixture: Sequence[str] | Sequence[tuple[str, float]], *, seed: int,
                     process_index: int = 0, process_count: int = 1, tokenizer=None) -> grain.IterDataset:
    """Packed training rows of ``cfg.dataset`` and the ``mixture`` datasets, mixed by token share.

    Each source goes through `packed_train_rows` on its own (own document shuffle, seeded
    ``seed + j`` for source j; own packing), so every row holds documents of one source and all
    rows have seq_len + 1 tokens; ``grain.IterDataset.mix`` then interleaves the rows in the
    proportions (1 - sum(w), w_1, ...), which are therefore the fractions of training tokens.
    Task datasets are built on first use. Returns the rows before the row shuffle (pass them to
    ``grain.experimental.WindowShuffleIterDataset`` as `shuffled_train_rows` does).
    """
    pairs = tasks.parse_mixture(mixture) if mixture and isinstance(mixture[0], str) else list(mixture)
    if not pairs:
        raise ValueError("mixed_train_rows: empty mixture")
    sources = [(cfg.dataset, 1.0 - sum(w for _, w in pairs))] + pairs
    tokenizer = make_tokenizer(cfg) if tokenizer is None else tokenizer
    rows, weights = [], []
    for j, (name, weight) in enumerate(sources):
        if tasks.is_task_dataset(name):
            tasks.prepare(name, cfg.data_dir)
        fields = {"dataset": name, "train_split": tasks.TRAIN_SPLIT if j else cfg.train_split}
        if hasattr(cfg, "mixture"):
            fields["mixture"] = ()  # each part is one plain source
        if j and getattr(cfg, "unique_tokens", None) is not None:
            fields["unique_tokens"] = None  # the cap is on the base data set only
        part = dataclasses.replace(cfg, **fields)
        rows.append(packed_train_rows(part, seed=seed + j, process_index=process_index,
                                            process_count=process_count, tokenizer=tokenizer))
        weights.append(weight)
    return grain.IterDataset.mix(rows, weights)
