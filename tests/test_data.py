"""Data pipeline: the embedded corpus, tokenizers, packing, iterator state, sharding, eval set.

Everything runs on the ``python_stdlib/small`` config (~250 files), built once per session into
a temporary directory; packing is checked against an independent reconstruction of the token
stream from the documents in the order the pipeline reads them.
"""

import json
import subprocess
import sys
import textwrap

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from experiments.harness import corpus, data

SMALL = "python_stdlib/small"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    corpus.prepare(SMALL, path)
    return str(path)


def small_config(data_dir, **overrides):
    fields = dict(dataset=SMALL, data_dir=data_dir, seq_len=128, prefetch_batches=0)
    fields.update(overrides)
    return data.DataConfig(**fields)


def split_records(data_dir, split):
    source = data.load_source(small_config(data_dir), split)
    return [source[i] for i in range(len(source))]


# --------------------------------------------------------------------------------------------
# Corpus


def test_small_corpus_builds_with_disjoint_deterministic_splits(data_dir, tmp_path):
    train = split_records(data_dir, "train")
    held_out = split_records(data_dir, "validation")
    train_paths = {r["path"].decode() for r in train}
    held_paths = {r["path"].decode() for r in held_out}
    assert len(train_paths) == len(train) > 150 and len(held_paths) == len(held_out) > 10
    assert not train_paths & held_paths
    assert all(corpus.split_of(p) == "validation" for p in held_paths)
    assert all(corpus.split_of(p) == "train" for p in train_paths)
    # The texts are the real files of this interpreter's standard library.
    root = corpus.stdlib_root()
    for record in train[:20] + held_out[:20]:
        assert record["text"] == (root / record["path"].decode()).read_bytes()
    # A second build from scratch holds the same examples.
    again = corpus.prepare(SMALL, tmp_path)
    rebuilt = again.as_data_source(split="validation")
    assert [rebuilt[i]["path"] for i in range(len(rebuilt))] == [r["path"] for r in held_out]
    assert "tensorflow" not in sys.modules  # TFDS built and read it without TensorFlow


def test_concurrent_builders_produce_one_valid_dataset(data_dir, tmp_path):
    script = textwrap.dedent(
        f"""
        from experiments.harness import corpus
        b = corpus.prepare({SMALL!r}, {str(tmp_path)!r})
        print(b.info.splits["train"].num_examples, b.info.splits["validation"].num_examples)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err.decode()[-2000:] for _, err in outputs]
    expected = f"{len(split_records(data_dir, 'train'))} {len(split_records(data_dir, 'validation'))}"
    assert {out.decode().strip().splitlines()[-1] for out, _ in outputs} == {expected}
    built = tmp_path / "python_stdlib" / "small"
    assert [p.name for p in built.iterdir()] == ["1.0.0"]  # no incomplete.* left behind


def test_unknown_corpus_config_and_split_are_rejected(data_dir):
    with pytest.raises(ValueError, match="unknown config"):
        corpus.prepare("python_stdlib/huge", data_dir)
    with pytest.raises(ValueError, match="Unknown split"):
        data.load_source(small_config(data_dir), "nonexistent")


# --------------------------------------------------------------------------------------------
# Tokenizers


def test_byte_tokenizer_round_trips_every_document(data_dir):
    tokenizer = data.ByteTokenizer()
    assert tokenizer.vocab_size == 256
    for record in split_records(data_dir, "validation"):
        ids = tokenizer.encode(record["text"])
        assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 256
        assert tokenizer.decode(ids) == record["text"].decode("utf-8")
    text = "naïve ✓ 日本語\n\tx = 1\n"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(text)) == len(text.encode("utf-8"))


def test_sentencepiece_trains_loads_and_round_trips(data_dir, tmp_path):
    texts = [r["text"] for r in split_records(data_dir, "train")[:40]]
    path = tmp_path / "spm" / "code.model"
    trained = data.train_sentencepiece(texts, 400, path)
    loaded = data.SentencePieceTokenizer(path)
    assert trained.vocab_size == loaded.vocab_size == 400
    held_out = [r["text"].decode() for r in split_records(data_dir, "validation")]
    for text in held_out + ["def f(x):\n\tif x:\n        return 'héllo ✓ 日本'  \n\n"]:
        ids = loaded.encode(text)
        assert loaded.decode(ids) == text
    compressed = sum(len(loaded.encode(t)) for t in held_out)
    assert compressed < 0.8 * sum(len(t.encode()) for t in held_out)  # it learned pieces
    cfg = small_config(str(data_dir), tokenizer="sentencepiece", spm_model=str(path))
    batch = next(data.make_train_iterator(cfg, global_batch_size=4, seed=0))
    assert batch["inputs"].max() < 400 and batch["inputs"].shape == (4, 128)
    with pytest.raises(ValueError, match="exceed 257"):
        data.train_sentencepiece(texts, 200, tmp_path / "tiny.model")


# --------------------------------------------------------------------------------------------
# Packing


def documents_in_read_order(cfg, seed, process_index=0, process_count=1):
    source = data.load_source(cfg, cfg.train_split)
    order = data.train_document_indices(
        len(source), seed=seed, num_epochs=cfg.num_epochs,
        process_index=process_index, process_count=process_count,
    )
    tokenizer = data.make_tokenizer(cfg)
    docs = [tokenizer.encode(source[int(i)][cfg.text_key]) for i in order]
    return [int(i) for i in order], [d for d in docs if len(d)]


def check_packing(rows, docs, seq_len):
    """Rows must hold exactly the documents' tokens, in order, with consistent segments."""
    stream = np.concatenate(docs)
    doc_of = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
    offset = np.concatenate([np.arange(len(d)) for d in docs])
    batch_of_all = data.to_model_batch({k: np.stack([row[k] for row in rows]) for k in rows[0]})
    pos = 0
    for r, row in enumerate(rows):
        tokens, segments, positions = (row[k] for k in ("tokens", "tokens_segment_ids", "tokens_positions"))
        assert tokens.shape == (seq_len + 1,)
        n = int((segments != 0).sum())
        assert (segments[n:] == 0).all() and (tokens[n:] == 0).all() and (positions[n:] == 0).all()
        assert n == seq_len + 1 or r == len(rows) - 1  # only the final row is padded
        np.testing.assert_array_equal(tokens[:n], stream[pos : pos + n])
        docs_here = doc_of[pos : pos + n]
        starts = np.concatenate([[True], docs_here[1:] != docs_here[:-1]])
        np.testing.assert_array_equal(segments[:n], np.cumsum(starts))
        piece_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
        np.testing.assert_array_equal(positions[:n], offset[pos : pos + n] - offset[pos + piece_start])
        # Model batch: targets are the next tokens; weight 1 exactly where the next token is
        # the same document's (0 at document ends and padding).
        batch = {k: v[r : r + 1] for k, v in batch_of_all.items()}
        np.testing.assert_array_equal(batch["inputs"][0], tokens[:-1])
        np.testing.assert_array_equal(batch["targets"][0], tokens[1:])
        expected_weight = np.zeros(seq_len, np.float32)
        inside = np.arange(min(n - 1, seq_len))
        expected_weight[inside] = docs_here[inside] == docs_here[inside + 1]
        np.testing.assert_array_equal(batch["weights"][0], expected_weight)
        np.testing.assert_array_equal(batch["segment_ids"][0], segments[:-1])
        np.testing.assert_array_equal(batch["positions"][0], positions[:-1])
        pos += n
    assert pos == len(stream)  # nothing lost, nothing duplicated


def test_packing_keeps_every_token_once_with_consistent_segments(data_dir):
    cfg = small_config(data_dir, num_epochs=1, seq_len=512)
    order, docs = documents_in_read_order(cfg, seed=3)
    assert sorted(order) == list(range(len(order)))  # one epoch = one permutation
    rows = list(data.packed_train_rows(cfg, seed=3))
    assert max(len(d) for d in docs) > 10 * 513  # long documents are split, not dropped
    check_packing(rows, docs, 512)


def test_epochs_are_different_permutations():
    order = list(data.train_document_indices(50, seed=7, num_epochs=2))
    first, second = order[:50], order[50:]
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    assert list(data.train_document_indices(50, seed=7, num_epochs=2)) == order
    assert list(data.train_document_indices(50, seed=8, num_epochs=1)) != first


def test_process_shards_are_disjoint_and_cover_the_epoch(data_dir):
    cfg = small_config(data_dir, num_epochs=1, seq_len=512)
    full_order, _ = documents_in_read_order(cfg, seed=5)
    shard_orders = []
    for p in range(2):
        order, docs = documents_in_read_order(cfg, seed=5, process_index=p, process_count=2)
        shard_orders.append(order)
        check_packing(list(data.packed_train_rows(cfg, seed=5, process_index=p, process_count=2)), docs, 512)
    assert not set(shard_orders[0]) & set(shard_orders[1])
    assert sorted(shard_orders[0] + shard_orders[1]) == sorted(full_order)
    batches = [
        next(data.make_train_iterator(cfg, global_batch_size=8, seed=5, process_index=p, process_count=2))
        for p in range(2)
    ]
    assert all(b["inputs"].shape == (4, 512) for b in batches)
    assert not np.array_equal(batches[0]["inputs"], batches[1]["inputs"])


# --------------------------------------------------------------------------------------------
# Training iterator


def test_train_iterator_serves_batched_packed_rows(data_dir):
    cfg = small_config(data_dir, prefetch_batches=2, shuffle_tokens=0)  # no row shuffle
    iterator = data.make_train_iterator(cfg, global_batch_size=4, seed=11)
    rows = iter(data.packed_train_rows(cfg, seed=11))
    for _ in range(5):
        four = [next(rows) for _ in range(4)]
        expected = data.to_model_batch({k: np.stack([r[k] for r in four]) for k in four[0]})
        batch = next(iterator)
        assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {
            "inputs": (np.int32, (4, 128)), "targets": (np.int32, (4, 128)),
            "segment_ids": (np.int32, (4, 128)), "positions": (np.int32, (4, 128)),
            "weights": (np.float32, (4, 128)),
        }
        for key in expected:
            np.testing.assert_array_equal(batch[key], expected[key])
    iterator.close()


def row_documents(cfg, seed):
    """Document (in read order) of the first token of each packed row, one epoch."""
    _, docs = documents_in_read_order(cfg, seed)
    ends = np.cumsum([len(d) for d in docs])
    rows = -(-ends[-1] // (cfg.seq_len + 1))
    return np.searchsorted(ends, np.arange(rows) * (cfg.seq_len + 1), side="right")


def test_row_shuffle_mixes_documents_within_windows(data_dir):
    window, batch, seed = 1024, 8, 6
    cfg = small_config(data_dir, num_epochs=1, shuffle_tokens=window * 129)
    assert data.shuffle_window_rows(cfg) == window
    plain = list(data.packed_train_rows(cfg, seed=seed))
    shuffled = list(data.shuffled_train_rows(cfg, seed=seed))
    doc_of = row_documents(cfg, seed)
    assert len(shuffled) == len(plain) == len(doc_of) > 10 * window

    def key(row):
        return row["tokens"].tobytes() + row["tokens_segment_ids"].tobytes()

    # Each window of W rows is served in a new order: the same rows, each exactly once.
    source_index = []
    for start in range(0, len(plain), window):
        where = {}  # a few rows repeat (identical files): each copy is matched once
        for i, r in enumerate(plain[start : start + window]):
            where.setdefault(key(r), []).append(start + i)
        served = [where[key(r)].pop() for r in shuffled[start : start + window]]
        assert sorted(served) == list(range(start, min(start + window, len(plain))))
        assert served != sorted(served)
        source_index += served
    # A batch of consecutive rows is mostly one file; a shuffled one draws from several.
    def documents_per_batch(indices):
        full = len(indices) // batch * batch
        return np.mean([len(set(doc_of[indices[i : i + batch]])) for i in range(0, full, batch)])

    consecutive = documents_per_batch(np.arange(len(plain)))
    mixed = documents_per_batch(np.asarray(source_index))
    assert consecutive < 1.5 and mixed > 4 and mixed > 3 * consecutive
    # The iterator serves these rows, batched; a seed gives one order, another seed another.
    iterator = data.make_train_iterator(cfg, global_batch_size=batch, seed=seed)
    again = data.make_train_iterator(cfg, global_batch_size=batch, seed=seed)
    other = data.make_train_iterator(cfg, global_batch_size=batch, seed=seed + 1)
    for b in range(5):
        rows = shuffled[b * batch : (b + 1) * batch]
        expected = data.to_model_batch({k: np.stack([r[k] for r in rows]) for k in rows[0]})
        got, repeat, different = next(iterator), next(again), next(other)
        for key_ in expected:
            np.testing.assert_array_equal(got[key_], expected[key_])
            np.testing.assert_array_equal(repeat[key_], expected[key_])
        assert not np.array_equal(different["inputs"], expected["inputs"])


def test_cached_windows_serve_grains_rows_and_state_bit_for_bit(data_dir, monkeypatch):
    """The row shuffle's window cache (`experiments.harness.row_shuffle`) changes nothing but
    the time: over several windows an iterator that fills them, one that finds them all cached
    and Grain's own WindowShuffleIterDataset serve the same rows, and a restore inside a window
    from the cache continues the same stream."""
    from experiments.harness import row_shuffle

    cfg = small_config(data_dir, seq_len=64, shuffle_tokens=40 * 65)  # windows of 40 rows
    seed, batch, steps = 3, 8, 23  # 184 rows: 4 full windows and part of a fifth

    def stream(iterator, n):
        return [np.concatenate([b[k].ravel() for k in sorted(b)]) for b in (next(iterator) for _ in range(n))]

    row_shuffle.clear()
    monkeypatch.setattr(row_shuffle, "CACHE_WINDOWS", 8)
    filled = stream(data.make_train_iterator(cfg, global_batch_size=batch, seed=seed), steps)
    assert dict(row_shuffle.stats) == {"fills": 5}
    cached_iterator = data.make_train_iterator(cfg, global_batch_size=batch, seed=seed)
    cached = stream(cached_iterator, steps)
    assert row_shuffle.stats["hits"] == 5 and row_shuffle.stats["fills"] == 5
    rows = data.packed_train_rows(cfg, seed=seed)
    plain = grain.experimental.WindowShuffleIterDataset(
        rows, window_size=40, seed=data.row_shuffle_seed(seed, 0)).batch(batch).map(data.to_model_batch)
    grains = stream(iter(plain), steps)
    for a, b, c in zip(filled, cached, grains):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    # restore inside the fourth window (row 140 of 160), from the cache, then without it
    iterator = data.make_train_iterator(cfg, global_batch_size=batch, seed=seed)
    stream(iterator, 17)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = stream(iterator, 6)
    hits = row_shuffle.stats["hits"]
    restored = data.make_train_iterator(cfg, global_batch_size=batch, seed=seed)
    restored.set_state(state)  # the fourth window comes from the cache
    for a, b in zip(stream(restored, 6), expected):
        np.testing.assert_array_equal(a, b)
    assert row_shuffle.stats["hits"] > hits
    row_shuffle.clear()
    monkeypatch.setattr(row_shuffle, "CACHE_WINDOWS", 0)
    restored = data.make_train_iterator(cfg, global_batch_size=batch, seed=seed)
    restored.set_state(state)  # filled again, cached nowhere
    for a, b in zip(stream(restored, 6), expected):
        np.testing.assert_array_equal(a, b)
    assert not row_shuffle.stats


@pytest.mark.parametrize("prefetch", [0, 2])
def test_restored_iterator_reproduces_the_batch_sequence(data_dir, prefetch):
    # 64 rows of 1025 bytes per batch: the small train split (~1.6 MB) is ~25 batches, so 30
    # batches cross an epoch boundary before the state is saved. The row-shuffle window is
    # 1024 rows (16 batches): the states are saved at the start, at a window boundary (16)
    # and inside a window (30).
    cfg = small_config(data_dir, seq_len=1024, prefetch_batches=prefetch,
                       shuffle_tokens=1024 * 1025)
    assert data.shuffle_window_rows(cfg) == 16 * 64
    for k, m in [(0, 3), (16, 3), (30, 4)]:
        iterator = data.make_train_iterator(cfg, global_batch_size=64, seed=2)
        for _ in range(k):
            next(iterator)
        state = json.loads(json.dumps(iterator.get_state()))
        assert state["grain"]["pos_in_window"] == ((k * 64 - 1) % 1024 + 1 if k else 0)
        expected = [next(iterator) for _ in range(m)]
        restored = data.make_train_iterator(cfg, global_batch_size=64, seed=2)
        next(restored)  # a restored iterator may have been used before
        restored.set_state(state)
        for want, got in zip(expected, [next(restored) for _ in range(m)]):
            for key in want:
                np.testing.assert_array_equal(want[key], got[key])
        iterator.close()
        restored.close()


def test_state_from_a_different_pipeline_is_rejected(data_dir):
    cfg = small_config(data_dir)
    state = data.make_train_iterator(cfg, global_batch_size=4, seed=1).get_state()
    other = data.make_train_iterator(cfg, global_batch_size=4, seed=2)
    with pytest.raises(ValueError, match="seed"):
        other.set_state(state)
    with pytest.raises(ValueError, match="not a data-iterator state"):
        other.set_state({"next_index": 3})


def test_bad_arguments_raise_value_errors(data_dir):
    with pytest.raises(ValueError, match="tokenizer"):
        data.DataConfig(tokenizer="wordpiece")
    with pytest.raises(ValueError, match="spm_model"):
        data.DataConfig(tokenizer="sentencepiece")
    with pytest.raises(ValueError, match="seq_len"):
        data.DataConfig(seq_len=0)
    with pytest.raises(ValueError, match="shuffle_tokens"):
        data.DataConfig(shuffle_tokens=-1)
    cfg = small_config(data_dir)
    with pytest.raises(ValueError, match="multiple of process_count"):
        data.make_train_iterator(cfg, global_batch_size=6, seed=0, process_count=4)
    with pytest.raises(ValueError, match="process_index"):
        data.make_train_iterator(cfg, global_batch_size=4, seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="no feature 'content'"):
        cfg = small_config(data_dir, text_key="content")
        next(data.make_train_iterator(cfg, global_batch_size=2, seed=0))


# --------------------------------------------------------------------------------------------
# Evaluation batches


def test_eval_batches_are_fixed_held_out_and_shardable(data_dir):
    cfg = small_config(data_dir, eval_sequences=50)
    first = data.make_eval_batches(cfg, batch_size=8)
    train = data.make_train_iterator(cfg, global_batch_size=8, seed=9)
    for _ in range(3):
        next(train)
    second = data.make_eval_batches(cfg, batch_size=8)
    assert len(first) == len(second) == 7  # 50 rows padded to 56
    for a, b in zip(first, second):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    rows = {k: np.concatenate([b[k] for b in first]) for k in first[0]}
    assert (rows["segment_ids"][50:] == 0).all() and (rows["weights"][50:] == 0).all()
    assert (rows["segment_ids"][:50] > 0).all(axis=1).sum() >= 49  # only the last row may pad
    # Every packed piece is text of a held-out document.
    held_out = [r["text"] for r in split_records(data_dir, "validation")]
    for i in range(50):
        for s in np.unique(rows["segment_ids"][i][rows["segment_ids"][i] > 0]):
            piece = rows["inputs"][i][rows["segment_ids"][i] == s].astype(np.uint8).tobytes()
            assert any(piece in doc for doc in held_out)
    # Process slices of each global batch are disjoint and together the global batch.
    halves = [
        data.make_eval_batches(cfg, batch_size=8, process_index=p, process_count=2) for p in range(2)
    ]
    for whole, lo, hi in zip(first, *halves):
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([lo[key], hi[key]]), whole[key])


# --------------------------------------------------------------------------------------------
# Any TFDS dataset, and size information


class ScalingTestTinyLines(tfds.core.GeneratorBasedBuilder):
    """A tiny TFDS dataset with a differently named text feature."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = epath.Path(__file__)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"sentence": tfds.features.Text()})
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0), "test": self._generate_examples(1)}

    def _generate_examples(self, parity):
        for i in range(parity, 60, 2):
            yield i, {"sentence": f"line {i}: " + "ab" * i}


def test_any_tfds_dataset_is_read_through_data_source(tmp_path):
    builder = ScalingTestTinyLines(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    cfg = data.DataConfig(
        dataset="scaling_test_tiny_lines", data_dir=str(tmp_path), text_key="sentence",
        eval_split="test", seq_len=32, num_epochs=1, prefetch_batches=0,
    )
    _, docs = documents_in_read_order(cfg, seed=4)
    check_packing(list(data.packed_train_rows(cfg, seed=4)), docs, 32)
    info = data.split_info(cfg)
    assert info.documents == 30 and info.tokens == sum(len(d) for d in docs)
    assert info.rows == -(-info.tokens // 33)
    assert data.make_eval_batches(cfg, batch_size=2)[0]["inputs"].shape == (2, 32)


def test_tokens_per_epoch_counts_utf8_bytes(data_dir):
    cfg = small_config(data_dir)
    expected = sum(len(r["text"]) for r in split_records(data_dir, "train"))
    assert data.tokens_per_epoch(cfg) == expected
    info = data.split_info(cfg, "validation")
    assert info.documents == len(split_records(data_dir, "validation"))
    assert info.input_tokens == info.tokens - info.rows == info.rows * 128 - (-info.tokens % 129)
    assert data.vocab_size(cfg) == 256


def test_cache_dir_comes_from_argument_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALING_DATA_DIR", str(tmp_path / "env"))
    assert corpus.default_data_dir() == tmp_path / "env"
    assert corpus.default_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("SCALING_DATA_DIR")
    assert str(corpus.default_data_dir()).endswith(".cache/scaling/tfds")
