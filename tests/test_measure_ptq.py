"""experiments.harness.restore and measure_ptq on one tiny trained run (d_model 32, 2 layers,
100 steps on the small embedded corpus, checkpoints at steps 50 and 100), shared by the module."""

import jax
import numpy as np
import pytest

from experiments.harness import corpus
from experiments.harness.config import Config, TrainConfig
from experiments.harness.data import DataConfig
from experiments.harness.measure_ptq import ROW_KEYS, ptq_measure, ratio_sem
from experiments.harness.restore import checkpoint_steps, load_run
from experiments.harness.train import train
from models.quantization import QuantConfig
from models.transformer import ModelConfig

pytestmark = pytest.mark.filterwarnings("ignore:'VariableState' was removed:DeprecationWarning")

SMALL = "python_stdlib/small"
STEPS, BATCH, SEQ = 100, 16, 64
FORMATS = ["int8", "int4", "int2", QuantConfig(weights="int2", method="gptq"),
           QuantConfig(weights="int4", activations="int8"), {"kv": "int2"}]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ptq")
    corpus.prepare(SMALL, root / "tfds")
    cfg = Config(
        model=ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, max_seq_len=SEQ),
        data=DataConfig(dataset=SMALL, data_dir=str(root / "tfds"), seq_len=SEQ, eval_sequences=32,
                        prefetch_batches=0),
        train=TrainConfig(tokens=STEPS * BATCH * SEQ, batch_size=BATCH, lr=1e-2, warmup=0.1,
                          log_every=STEPS, checkpoint_every=50, eval_batch_size=16))
    workdir = root / "run"
    result = train(cfg, workdir, devices=jax.devices()[:1])
    return cfg, workdir, result


@pytest.fixture(scope="module")
def rows(run):
    return ptq_measure(run[1], FORMATS, eval_tokens=128 * SEQ)


def test_load_run(run):
    cfg, workdir, result = run
    assert checkpoint_steps(workdir) == [50, 100]
    latest = load_run(workdir)
    assert latest.config == cfg and latest.step == 100 and latest.tokens == result["tokens"] == 100 * BATCH * SEQ
    assert latest.run_id == "run" and latest.n_params["total"] == result["n_params"]
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(latest.params))
    early = load_run(workdir, 50, device=True)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(early.params)) and early.tokens == 50 * BATCH * SEQ
    assert not np.allclose(early.params["embed"]["embedding"], latest.params["embed"]["embedding"])
    with pytest.raises(ValueError, match="no checkpoint at step 75"):
        load_run(workdir, 75)
    with pytest.raises(ValueError, match="no config.json"):
        load_run(workdir / "checkpoints")


def test_float_loss_is_the_training_evaluation(run):
    """On the training run's own held-out rows (32 x 64 tokens) the restored float model gives
    the eval_loss and SEM that train() computed from its in-memory params."""
    _, workdir, result = run
    (row,) = ptq_measure(workdir, [], eval_tokens=32 * SEQ)
    assert row["loss"] == pytest.approx(result["eval_loss"], rel=1e-5)
    assert row["loss_sem"] == pytest.approx(result["eval_loss_sem"], rel=1e-4)
    assert row["label"] == "float" and row["delta"] == 0.0 and row["eval_sequences"] == 32


def test_deltas_grow_as_bits_shrink(rows):
    by = {r["label"]: r for r in rows}
    assert [r["label"] for r in rows] == ["float", "W8", "W4", "W2", "W2 gptq", "W4A8", "KV2"]
    assert all(tuple(r) == ROW_KEYS for r in rows)
    w8, w4, w2 = by["W8"], by["W4"], by["W2"]
    assert 0 < w8["delta"] < w4["delta"] < w2["delta"]
    # paired standard errors resolve the deltas: small against them and against the unpaired SEM
    assert w8["delta_sem"] < w4["delta"] / 5 and w4["delta_sem"] < w2["delta"] / 5
    assert w2["delta_sem"] < w2["delta"] / 3 and w2["delta_sem"] < w2["loss_sem"] / 3
    for r in rows:
        assert r["delta"] == pytest.approx(r["loss_quantized"] - r["loss"], abs=1e-12)
        assert r["eval_tokens"] == rows[0]["eval_tokens"] and r["checkpoint_step"] == 100
        assert r["tokens"] == STEPS * BATCH * SEQ and r["n_params_nonembedding"] < r["n_params"]
    assert by["W2 gptq"]["delta"] < 0.7 * w2["delta"]  # GPTQ's error compensation
    assert by["W4A8"]["delta"] > 0 and by["KV2"]["delta"] > 3 * by["KV2"]["delta_sem"]
    assert w4["bits"] == 4 and 4 < w4["bits_per_weight"] < 5 and by["KV2"]["bits"] is None
    assert by["W2 gptq"]["qtype"] == "int2" and by["W2 gptq"]["method"] == "gptq"


def test_ratio_sem_matches_the_cluster_formula():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 60, 40).astype(float)
    s = rng.normal(2.0, 0.3, 40) * n
    ratio, sem = ratio_sem(np.append(s, 0.0), np.append(n, 0.0))  # an all-padding row is dropped
    k = 40
    expect = np.sqrt(np.sum((s - s.sum() / n.sum() * n) ** 2) / (k * (k - 1))) / n.mean()
    assert ratio == pytest.approx(s.sum() / n.sum()) and sem == pytest.approx(expect)
    with pytest.raises(ValueError, match="no weighted tokens"):
        ratio_sem(np.zeros(3), np.zeros(3))


def test_earlier_checkpoint_and_bad_formats(run):
    _, workdir, _ = run
    rows = ptq_measure(workdir, ["int4"], eval_tokens=16 * SEQ, checkpoint_step=50)
    assert [r["checkpoint_step"] for r in rows] == [50, 50] and rows[1]["tokens"] == 50 * BATCH * SEQ
    with pytest.raises(ValueError, match="unsupported quantization type"):
        ptq_measure(workdir, ["int9"], eval_tokens=SEQ)
    with pytest.raises(ValueError, match="eval_tokens"):
        ptq_measure(workdir, ["int4"], eval_tokens=0)
