"""Documents of a data set: the TFDS source of a split, its texts, their tokenization, its size.

The source is a TFDS ArrayRecord data source (``tfds.data_source``, no TensorFlow); the default
``python_stdlib`` corpus is built on first use (:mod:`experiments.harness.corpus`), the verifiable
task datasets are generated locally (:mod:`experiments.harness.tasks`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import grain
import tensorflow_datasets as tfds

from experiments.harness import corpus, tasks
from experiments.harness.tokenizers import ByteTokenizer, make_tokenizer


def load_source(cfg, split: str):
    """The random-access TFDS data source of one split (builds the embedded corpus if needed)."""
    data_dir = corpus.default_data_dir(cfg.data_dir)
    if tasks.is_task_dataset(cfg.dataset):  # generated locally; train records computed, not read
        return tasks.load_source(cfg.dataset, split, data_dir)
    if corpus.is_embedded(cfg.dataset):
        corpus.prepare(cfg.dataset, data_dir)  # build once, under a lock
        name = cfg.dataset if "/" in cfg.dataset else f"{cfg.dataset}/full"
        source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
    else:
        try:
            source = tfds.data_source(
                cfg.dataset, split=split, data_dir=str(data_dir), download=cfg.download
            )
        except Exception as err:  # TFDS raises several types; name the dataset and dir
            raise ValueError(
                f"cannot read TFDS dataset {cfg.dataset!r} split {split!r} from {data_dir} as "
                f"ArrayRecord (prepare it there first, or set DataConfig.download): {err}"
            ) from err
    if len(source) == 0:
        raise ValueError(f"split {split!r} of {cfg.dataset!r} is empty")
    return source


def document_texts(cfg, split: str, limit: int | None = None) -> Iterator[bytes]:
    """The raw texts of a split in stored order (e.g. to train a SentencePiece model)."""
    source = load_source(cfg, split)
    for i in range(len(source) if limit is None else min(limit, len(source))):
        yield _text_of(source[i], cfg.text_key)


def _text_of(record: dict, text_key: str) -> bytes | str:
    try:
        return record[text_key]
    except KeyError:
        raise ValueError(f"record has no feature {text_key!r}; features: {sorted(record)}") from None


class _Tokenize(grain.transforms.Map):
    def __init__(self, tokenizer, text_key: str):
        self._tokenizer = tokenizer
        self._text_key = text_key

    def map(self, record):
        return {"tokens": self._tokenizer.encode(_text_of(record, self._text_key))}


def _not_empty(element) -> bool:
    return element["tokens"].shape[0] > 0


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """Size of one split under a tokenizer: ``rows = ceil(tokens / (seq_len + 1))`` packed rows."""

    dataset: str
    split: str
    documents: int
    tokens: int
    seq_len: int

    @property
    def rows(self) -> int:
        return math.ceil(self.tokens / (self.seq_len + 1))

    @property
    def input_tokens(self) -> int:
        """Tokens fed as model inputs in one pass: the last token of each packed row is a target only."""
        return self.tokens - self.rows


def split_info(cfg, split: str | None = None) -> SplitInfo:
    """Counts documents and tokens of a split (default: the train split) by tokenizing it."""
    split = cfg.train_split if split is None else split
    tokenizer = make_tokenizer(cfg)
    source = load_source(cfg, split)
    tokens = 0
    for i in range(len(source)):
        text = _text_of(source[i], cfg.text_key)
        if isinstance(tokenizer, ByteTokenizer):
            tokens += len(text.encode("utf-8") if isinstance(text, str) else text)
        else:
            tokens += len(tokenizer.encode(text))
    return SplitInfo(cfg.dataset, split, len(source), tokens, cfg.seq_len)


def tokens_per_epoch(cfg) -> int:
    """Tokens in one pass over the train split, all processes together."""
    return split_info(cfg).tokens
