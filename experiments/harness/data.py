"""Language-model data: TFDS source → Grain shuffle → tokenize → pack → row shuffle → batch.

This module holds ``DataConfig``, the training iterator and the evaluation batches; the stages
live beside it, one job each, and their names are importable from here too:
``tokenizers`` (byte and SentencePiece, and training the latter), ``sources`` (a split's TFDS
source, texts and size), ``packing`` (rows of seq_len + 1 tokens, process sharding, the row
shuffle's window and seed), ``mixtures`` (several sources by token share), ``subsets`` (the
unique-token cap: a fixed subset of U training tokens, repeated for many epochs).

Pipeline for training (:func:`make_train_iterator`), all Grain 0.2.18 ``grain.MapDataset`` /
``grain.IterDataset`` transformations, deterministic given the seed:

1. source: a TFDS ArrayRecord data source (``tfds.data_source``, no TensorFlow). The default
   ``python_stdlib`` corpus is built on first use (:mod:`experiments.harness.corpus`).
2. ``shuffle(seed)`` then ``repeat(num_epochs)``: a global permutation of the documents, a
   different one each epoch (Grain seeds epoch ``e`` with ``seed + e``).
3. process sharding: process ``i`` of ``P`` keeps documents ``i, i + P, i + 2P, ...`` of that
   stream, so processes read disjoint documents and together read every document once per epoch.
4. tokenize (byte or SentencePiece), drop empty documents.
5. pack with ``grain.experimental.ConcatThenSplitIterDataset`` into rows of ``seq_len + 1``
   tokens: documents are concatenated and split at row boundaries, so a long document continues
   in the next row (nothing is dropped or duplicated). Segment ids number the documents (or
   document pieces) of a row from 1; positions count from 0 within each piece.
6. row shuffle (``grain.experimental.WindowShuffleIterDataset``): packed rows are read in
   windows of ``W = ceil(shuffle_tokens / (seq_len + 1))`` consecutive rows and each window is
   served in a seeded random order. Without it a batch is a run of consecutive rows, mostly one
   source file (a file of the corpus is 18 kB on average, up to 760 kB), and the loss of a short
   run depends on the document order. The default window, 2**22 byte tokens, holds ~230 files
   of the ``python_stdlib`` corpus. Windows do not mix with each other: every row is served
   exactly once, in window order. Measured (d_model 64, 2 layers, seq 64, batch 32, 300 steps,
   8 document-order seeds, eval loss): standard deviation over seeds 0.154 without the row
   shuffle, 0.042 with a 2**20-token window, 0.016 with 2**22 (mean 2.32, 1.75, 1.75).
7. batch ``global_batch_size / process_count`` rows, then shift into inputs and targets.

Batch format (numpy), ``L = seq_len``::

    inputs      int32   [b, L]  row tokens 0 .. L-1
    targets     int32   [b, L]  row tokens 1 .. L (the next token)
    segment_ids int32   [b, L]  segment of each input token; 0 = padding
    positions   int32   [b, L]  position of each input token within its segment
    weights     float32 [b, L]  1 where targets[t] is the next token of the same document
                                 (segment_ids[t] == segment of token t+1, and != 0), else 0

So the last token of each document, padding, and a target that starts a new document get
weight 0; attention must not cross segment ids. The row's last token is a target only: per row
``L`` of the ``L + 1`` packed tokens are predicted, and the next row starts with the next token.

The iterator state is Grain's (a small dict of ints) plus a fingerprint of the pipeline; it
survives ``json.dumps`` / ``json.loads``, and restoring it reproduces the batch sequence exactly.
The row shuffle's state is the packing state at the start of the current window, the window's
index and the rows already served from it: a restore re-reads that window (at most
``shuffle_tokens`` tokens), reshuffles it with the same seed and skips the served rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import weakref
from typing import Any

import grain
import numpy as np

from experiments.harness import corpus, row_shuffle, subsets, tasks
from experiments.harness.mixtures import mixed_train_rows
from experiments.harness.packing import (_check_process, _Lookup, _packed_rows,  # noqa: F401
                                         packed_train_rows, row_shuffle_seed, shuffle_window_rows,
                                         to_model_batch, train_document_indices)
from experiments.harness.sources import (SplitInfo, _not_empty, _text_of, _Tokenize,  # noqa: F401
                                         document_texts, load_source, split_info, tokens_per_epoch)
from experiments.harness.tokenizers import (TOKENIZERS, ByteTokenizer, SentencePieceTokenizer,  # noqa: F401
                                            Tokenizer, _tokenizer_fingerprint, make_tokenizer,
                                            train_sentencepiece, vocab_size)

log = logging.getLogger(__name__)

STATE_FORMAT = 2  # 2: with the row-shuffle window


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What data a run trains and evaluates on.

    Attributes:
      dataset: ``"python_stdlib"`` (embedded corpus; ``"python_stdlib/small"`` for tests) or
        any TFDS dataset name prepared as ArrayRecord, read with ``tfds.data_source``.
      data_dir: TFDS data dir; None → ``$SCALING_DATA_DIR`` or ``~/.cache/scaling/tfds``.
      text_key: the feature holding each document's text.
      train_split, eval_split: TFDS split names (the held-out split of ``python_stdlib`` is
        ``validation``; lm1b's is ``test``).
      tokenizer: ``"byte"`` (UTF-8 bytes, vocab 256) or ``"sentencepiece"`` (needs spm_model).
      spm_model: path of a SentencePiece ``.model`` file (see :func:`train_sentencepiece`).
      seq_len: tokens per model input row (rows are packed with seq_len + 1 tokens).
      shuffle_seed: document-order seed, used when make_train_iterator gets ``seed=None``.
      shuffle_tokens: size of the row-shuffle window in tokens (rounded up to whole packed rows
        of seq_len + 1 tokens; see :func:`shuffle_window_rows`); 0 turns the row shuffle off.
        Given in tokens, not rows, so one setting mixes as many documents at seq_len 64 as at
        2048. Cost of the 2**22 default on this 2-core CPU: ~100 MB of host memory at seq_len 64
        (~60 MB at 1024) and ~1-3 CPU-s to fill a window at seq_len 64 (0.2 s at 1024), paid
        once per window in the prefetch thread and again when a checkpoint is restored, except
        that the runs of one process share the windows they have in common
        (`experiments.harness.row_shuffle`: a study's runs fill their first window once).
      num_epochs: passes over the train split; None repeats forever.
      eval_sequences: packed rows of the held-out split used for evaluation.
      read_threads: Grain threads that read and tokenize documents.
      prefetch_batches: batches prepared ahead in a background thread (0: none).
      mixture: extra training sources mixed with ``dataset``, each "NAME:WEIGHT" with WEIGHT the
        share of training tokens (e.g. "verifiable_tasks/reversed_addition:0.3"); ``dataset``
        gets 1 - sum. Sources are packed separately and their rows mixed by Grain
        (`mixed_train_rows`); evaluation stays on ``dataset``'s eval split.
      unique_tokens: train on a fixed subset of this many tokens of the train split, repeated
        for as many epochs as the run needs and reshuffled each epoch (None: the whole split,
        no cap). Documents are chosen by a hash of their path, so the subsets of different caps
        are nested; runs record ``epochs`` and ``unique_tokens``. See
        `experiments.harness.subsets`. With a mixture the cap applies to ``dataset`` only.
      download: let TFDS download and prepare a missing (non-embedded) dataset. Off by default:
        datasets are expected prepared as ArrayRecord in data_dir. Preparing needs the network,
        often TensorFlow for the builder's own code, and, with TFDS 4.9.10 on Python >= 3.9,
        the ``importlib_resources`` package that TFDS imports but does not declare.
    """

    dataset: str = corpus.DATASET_NAME
    data_dir: str | None = None
    text_key: str = "text"
    train_split: str = corpus.TRAIN_SPLIT
    eval_split: str = corpus.EVAL_SPLIT
    tokenizer: str = "byte"
    spm_model: str | None = None
    seq_len: int = 1024
    shuffle_seed: int = 0
    shuffle_tokens: int = 2**22
    num_epochs: int | None = None
    eval_sequences: int = 256
    read_threads: int = 2
    prefetch_batches: int = 2
    download: bool = False
    mixture: tuple[str, ...] = ()
    unique_tokens: int | None = None

    def __post_init__(self):
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"DataConfig.tokenizer={self.tokenizer!r}; expected one of {TOKENIZERS}")
        if self.tokenizer == "sentencepiece" and not self.spm_model:
            raise ValueError("DataConfig.tokenizer='sentencepiece' needs spm_model (a .model path)")
        if self.seq_len < 1:
            raise ValueError(f"DataConfig.seq_len must be >= 1, got {self.seq_len}")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"DataConfig.num_epochs must be None or >= 1, got {self.num_epochs}")
        if self.eval_sequences < 1:
            raise ValueError(f"DataConfig.eval_sequences must be >= 1, got {self.eval_sequences}")
        if not 0 <= self.shuffle_seed < 2**32:
            raise ValueError(f"DataConfig.shuffle_seed must be in [0, 2**32), got {self.shuffle_seed}")
        if self.shuffle_tokens < 0:
            raise ValueError(f"DataConfig.shuffle_tokens must be >= 0 (0: no row shuffle), got "
                             f"{self.shuffle_tokens}")
        if self.read_threads < 1 or self.prefetch_batches < 0:
            raise ValueError("DataConfig.read_threads must be >= 1 and prefetch_batches >= 0")
        if self.mixture:
            tasks.parse_mixture(self.mixture)  # ValueError naming the bad entry
        subsets.check_config(self)  # the unique-token cap, before any data is read


# --------------------------------------------------------------------------------------------
# Training iterator


def _restore_tuples(state: Any) -> Any:
    """Undo JSON's tuple → list on the slices in Grain's packing state (compared to tuples),
    wherever it is nested (the row shuffle keeps a packing state inside its own)."""
    if isinstance(state, dict):
        return {
            k: ({f: tuple(s) for f, s in v.items()} if k == "remainder_slices" else _restore_tuples(v))
            for k, v in state.items()
        }
    if isinstance(state, list):
        return [_restore_tuples(v) for v in state]
    return state


class TrainIterator:
    """Iterator of training batches with a JSON-serializable ``get_state`` / ``set_state``."""

    def __init__(self, dataset: grain.IterDataset, pipeline: dict[str, Any], local_batch_size: int,
                 tokenizer, num_documents: int):
        self._dataset = dataset
        # The Grain iterator lives in a holder that the finalizer empties: at interpreter exit
        # it is closed and freed while modules still exist (Grain 0.2.18's prefetch iterator
        # raises from __del__ during module teardown otherwise).
        self._holder = [iter(dataset)]
        self._finalizer = weakref.finalize(self, _close_and_drop, self._holder)
        self.pipeline = pipeline
        self.local_batch_size = local_batch_size
        self.tokenizer = tokenizer
        self.num_documents = num_documents  # this process's share of one epoch

    def __iter__(self) -> TrainIterator:
        return self

    @property
    def _iterator(self):
        if not self._holder:
            raise ValueError("the data iterator was closed")
        return self._holder[0]

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    def get_state(self) -> dict[str, Any]:
        """``{"format", "pipeline", "grain"}``: plain ints and strings, JSON-safe."""
        grain_state = json.loads(json.dumps(self._iterator.get_state()))
        return {"format": STATE_FORMAT, "pipeline": dict(self.pipeline), "grain": grain_state}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a state from :meth:`get_state` of an iterator built with the same arguments."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or "grain" not in state:
            raise ValueError(f"not a data-iterator state (format {STATE_FORMAT}): {str(state)[:200]}")
        saved = state.get("pipeline", {})
        differing = {  # both ways: a field only one side has (e.g. a cap) differs too
            k: (saved.get(k), self.pipeline.get(k)) for k in sorted(set(saved) | set(self.pipeline))
            if saved.get(k) != self.pipeline.get(k)
        }
        if differing:
            raise ValueError(
                "data-iterator state was saved by a different pipeline; (saved, now) per field: "
                f"{differing}"
            )
        self._iterator.set_state(_restore_tuples(state["grain"]))

    def close(self) -> None:
        """Stops the background prefetch thread (if any); the iterator is unusable after."""
        self._finalizer()


def _close_and_drop(holder: list) -> None:
    for iterator in holder:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    holder.clear()


def shuffled_train_rows(
    cfg: DataConfig,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    tokenizer=None,
) -> grain.IterDataset:
    """:func:`packed_train_rows` in window-shuffled order (see the module docstring, step 6)."""
    if cfg.mixture:
        rows = mixed_train_rows(cfg, cfg.mixture, seed=seed, process_index=process_index,
                                      process_count=process_count, tokenizer=tokenizer)
    else:
        rows = packed_train_rows(cfg, seed=seed, process_index=process_index,
                                 process_count=process_count, tokenizer=tokenizer)
    window = shuffle_window_rows(cfg)
    if window <= 1:
        return rows
    pipeline = json.dumps({"config": repr(cfg), "seed": seed, "process": [process_index, process_count],
                           "tokenizer": _tokenizer_fingerprint(tokenizer or make_tokenizer(cfg))})
    return row_shuffle.CachedWindowShuffleIterDataset(
        rows, window_size=window, seed=row_shuffle_seed(seed, process_index), pipeline=pipeline)


def make_train_iterator(
    cfg: DataConfig,
    *,
    global_batch_size: int,
    seed: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> TrainIterator:
    """This process's stream of training batches of ``global_batch_size / process_count`` rows.

    With ``cfg.unique_tokens`` the stream repeats the capped subset (`subsets.check_cap` raises
    a ValueError naming the cap when it exceeds the split, is below one batch, or holds fewer
    documents than processes).

    ``seed`` sets the document order and the row shuffle (None → ``cfg.shuffle_seed``).
    Process ``i`` of ``P`` reads only its documents (:func:`train_document_indices`), packs
    and shuffles them itself, so the processes' rows are disjoint and together cover every
    document of each epoch once. With a finite ``num_epochs`` the last incomplete batch is
    dropped.
    """
    _check_process(process_index, process_count)
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of "
            f"process_count={process_count}"
        )
    seed = cfg.shuffle_seed if seed is None else int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    local_batch_size = global_batch_size // process_count
    tokenizer = make_tokenizer(cfg)
    subset = subsets.check_cap(cfg, global_batch_size=global_batch_size,
                               process_count=process_count)
    num_documents = len(load_source(cfg, cfg.train_split)) if subset is None else subset.documents
    batches = (
        shuffled_train_rows(
            cfg, seed=seed, process_index=process_index, process_count=process_count,
            tokenizer=tokenizer,
        )
        .batch(local_batch_size, drop_remainder=True)
        .map(to_model_batch)
    )
    if cfg.prefetch_batches:
        batches = grain.experimental.ThreadPrefetchIterDataset(
            batches, prefetch_buffer_size=cfg.prefetch_batches
        )
    pipeline = {
        "dataset": cfg.dataset,
        "split": cfg.train_split,
        "documents": num_documents,
        "text_key": cfg.text_key,
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "seq_len": cfg.seq_len,
        "num_epochs": cfg.num_epochs,
        "seed": seed,
        "shuffle_window_rows": max(shuffle_window_rows(cfg), 1),
        "global_batch_size": global_batch_size,
        "process_index": process_index,
        "process_count": process_count,
        **({"mixture": list(cfg.mixture)} if cfg.mixture else {}),
        **({"unique_tokens": cfg.unique_tokens} if cfg.unique_tokens is not None else {}),
    }
    share = len(range(process_index, num_documents, process_count))
    return TrainIterator(batches, pipeline, local_batch_size, tokenizer, share)


# --------------------------------------------------------------------------------------------
# Evaluation batches


EVAL_SHUFFLE_SEED = 0


def make_eval_batches(
    cfg: DataConfig,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> list[dict[str, np.ndarray]]:
    """The fixed evaluation set: ``cfg.eval_sequences`` packed rows of the held-out split.

    Deterministic and independent of training (its own fixed shuffle, one pass, no repeat).
    ``batch_size`` is global; the rows are padded with all-padding rows (weights 0) to a
    multiple of it, and process ``i`` of ``P`` gets rows ``[i*b, (i+1)*b)`` of every batch,
    ``b = batch_size / P``. If the split packs into fewer rows than asked, all are used (logged).
    """
    if batch_size < 1 or batch_size % process_count:
        raise ValueError(
            f"batch_size={batch_size} must be a positive multiple of process_count={process_count}"
        )
    _check_process(process_index, process_count)
    tokenizer = make_tokenizer(cfg)
    source = load_source(cfg, cfg.eval_split)
    documents = (
        grain.MapDataset.source(source)
        .shuffle(seed=EVAL_SHUFFLE_SEED)
        .map(_Tokenize(tokenizer, cfg.text_key))
        .to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=64))
        .filter(_not_empty)
    )
    rows = []
    for row in _packed_rows(documents, cfg.seq_len):
        rows.append(row)
        if len(rows) == cfg.eval_sequences:
            break
    if not rows:
        raise ValueError(f"held-out split {cfg.eval_split!r} of {cfg.dataset!r} has no tokens")
    if len(rows) < cfg.eval_sequences:
        log.warning("held-out split %r packs into %d rows of %d tokens, fewer than eval_sequences=%d",
                    cfg.eval_split, len(rows), cfg.seq_len + 1, cfg.eval_sequences)
    stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    padding = -len(rows) % batch_size
    stacked = {k: np.pad(v, ((0, padding), (0, 0))) for k, v in stacked.items()}
    model_rows = to_model_batch(stacked)
    local = batch_size // process_count
    batches = []
    for start in range(0, len(rows) + padding, batch_size):
        lo = start + process_index * local
        batches.append({k: v[lo : lo + local].copy() for k, v in model_rows.items()})
    return batches
