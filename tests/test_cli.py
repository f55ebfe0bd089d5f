"""The config system and the shared command line: --set typing and errors, JSON round trip,
io's atomic files, and the experiment file's argument handling (no training here)."""

import dataclasses
import json

import pytest

from experiments import train_lm
from experiments.harness import cli, io
from experiments.harness.config import (Config, TrainConfig, apply_overrides, config_hash,
                                        deepseek_batch_tokens, deepseek_lr, from_dict, to_dict)
from experiments.harness.data import DataConfig
from models.transformer import ModelConfig


def base() -> Config:
    return Config(model=ModelConfig(d_model=64, n_layers=2, n_heads=4),
                  data=DataConfig(seq_len=64), train=TrainConfig(tokens=1000))


def test_overrides_are_typed_by_the_dataclass_fields():
    cfg = apply_overrides(base(), [
        "train.tokens=2e7", "model.d_model=256", "train.lr=3e-4", "train.batch_size=48",
        "model.tie_embeddings=true", "data.num_epochs=none", "data.spm_model=none",
        "model.dtype=bfloat16", "mesh=data=2,fsdp=4", "train.schedule=wsd"])
    assert cfg.train.tokens == 20_000_000 and isinstance(cfg.train.tokens, int)
    assert cfg.model.d_model == 256 and cfg.model.tie_embeddings is True
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.batch_size == 48 and isinstance(cfg.train.batch_size, int)
    assert cfg.data.num_epochs is None and cfg.model.dtype == "bfloat16"
    assert cfg.mesh == "data=2,fsdp=4" and cfg.train.schedule == "wsd"
    # union fields take a rule name where a number does not parse
    ruled = apply_overrides(base(), ["train.lr=deepseek", "train.batch_size=deepseek"])
    assert ruled.train.lr == "deepseek" and ruled.train.batch_size == "deepseek"


def test_derived_model_fields_follow_a_width_override_but_explicit_ones_stay():
    cfg = apply_overrides(base(), ["model.d_model=256"])
    assert cfg.model.head_dim == 256 // 4 and cfg.model.d_ff == ModelConfig(d_model=256).d_ff
    pinned = apply_overrides(base(), ["model.d_ff=100", "model.d_model=256"])
    assert pinned.model.d_ff == 100 and pinned.model.head_dim == 64


@pytest.mark.parametrize("override, message", [
    ("train.tokenz=5", "train.tokenz"),
    ("modell.d_model=5", "modell.d_model"),
    ("model.d_model.x=5", "model.d_model.x"),
    ("train=5", "section"),
    ("train.tokens", "key=value"),
    ("train.tokens=2.5", "train.tokens"),
    ("train.tokens=abc", "train.tokens"),
    ("model.tie_embeddings=maybe", "model.tie_embeddings"),
    ("train.lr=fast", "train.lr"),
    ("train.schedule=linear", "train.schedule"),
    ("train.tokens=-5", "train.tokens"),
    ("model.d_model=0", "d_model"),
])
def test_bad_overrides_raise_value_errors_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        apply_overrides(base(), [override])


def test_unknown_key_error_lists_the_known_keys():
    with pytest.raises(ValueError, match=r"train\.tokens"):
        apply_overrides(base(), ["train.tokenz=5"])


def test_config_round_trips_through_json_and_hash_is_stable():
    cfg = apply_overrides(base(), ["train.lr=deepseek", "mesh=fsdp=2"])
    text = json.dumps(to_dict(cfg))
    again = from_dict(json.loads(text))
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert config_hash(apply_overrides(cfg, ["train.seed=1"])) != config_hash(cfg)
    bad = json.loads(text)
    bad["train"]["warmupp"] = 3
    with pytest.raises(ValueError, match="warmupp"):
        from_dict(bad)
    bad = json.loads(text)
    bad["model"]["d_model"] = "wide"
    with pytest.raises(ValueError, match="model.d_model"):
        from_dict(bad)


def test_deepseek_rules_follow_their_power_laws():
    # eta = 0.3118 C^-0.125, B = 0.2920 C^0.3271 with C = 6 N D (arXiv:2401.02954, Eq. 1)
    n, d = 10**8, 2 * 10**9
    c = 6.0 * n * d
    assert deepseek_lr(n, d) == pytest.approx(0.3118 * c ** -0.125)
    assert deepseek_batch_tokens(n, d) == pytest.approx(0.2920 * c ** 0.3271)
    assert deepseek_lr(8 * n, d) < deepseek_lr(n, d)
    assert deepseek_batch_tokens(8 * n, d) > deepseek_batch_tokens(n, d)


def test_cli_applies_preset_mesh_and_sets_in_order():
    args = cli.make_parser("x", train_lm.PRESETS, "smoke").parse_args([
        "--workdir", "/tmp/x", "--mesh", "data=2,fsdp=2,tensor=2",
        "--set", "model.d_model=96", "--set", "train.tokens=2e5", "--set", "model.d_model=128"])
    cfg = cli.config_from_args(args, train_lm.PRESETS)
    smoke = train_lm.smoke()
    assert cfg.mesh == "data=2,fsdp=2,tensor=2" and cfg.model.d_model == 128
    assert cfg.train.tokens == 200_000 and cfg.data == smoke.data
    assert cfg.model.n_layers == smoke.model.n_layers


def test_cli_reports_bad_sets_as_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_lm.main(["--workdir", "/tmp/x", "--set", "train.nope=1"])
    assert exit_info.value.code == 2
    assert "train.nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_lm.main(["--workdir", "/tmp/x", "--preset", "nonexistent"])


def test_cli_rejects_incomplete_distributed_flags():
    args = cli.make_parser("x", train_lm.PRESETS, "smoke").parse_args(
        ["--workdir", "/tmp/x", "--num_processes", "2"])
    with pytest.raises(ValueError, match="coordinator_address"):
        cli.setup_jax(args)


def test_presets_are_valid_configs():
    for name, preset in train_lm.PRESETS.items():
        cfg = preset()
        assert isinstance(cfg, Config), name
        assert cfg.data.seq_len <= cfg.model.max_seq_len, name
        assert from_dict(to_dict(cfg)) == cfg, name
    gpu = train_lm.gpu()
    assert (gpu.model.d_model, gpu.model.n_layers, gpu.data.seq_len, gpu.model.dtype) == (
        1024, 24, 2048, "bfloat16")


def test_atomic_json_files(tmp_path):
    path = tmp_path / "sub" / "result.json"
    io.write_json(path, {"loss": float("nan"), "n": 3, "xs": (1.0, 2.0)})
    assert json.loads(path.read_text()) == {"loss": None, "n": 3, "xs": [1.0, 2.0]}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary left
    lines = tmp_path / "metrics.jsonl"
    io.append_jsonl(lines, [{"step": 1}, {"step": 2}])
    with open(lines, "a") as f:
        f.write('{"step": 3, "trunc')  # a kill in the middle of an append
    assert io.read_jsonl(lines) == [{"step": 1}, {"step": 2}]
    lines.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        io.read_jsonl(lines)


def test_train_config_validation_names_the_field():
    with pytest.raises(ValueError, match="train.warmup"):
        TrainConfig(warmup=-1)
    with pytest.raises(ValueError, match="train.divergence_ratio"):
        TrainConfig(divergence_ratio=1.0)
    assert dataclasses.replace(TrainConfig(), schedule="constant").schedule == "constant"


def test_fields_added_later_keep_earlier_run_ids_until_they_are_set():
    """A run's id comes from its config hash; data.mixture (added after runs existed) is left out
    while empty, so every earlier run keeps its id and checkpoints; setting it changes the hash."""
    cfg = base()
    data = to_dict(cfg)
    del data["data"]["mixture"]  # a config.json written before the field existed
    del data["data"]["unique_tokens"]  # added later too (the unique-token cap)
    del data["sharding_tolerance"]  # never hashed
    del data["quant"]  # added later too: left out while unset
    for name in ("decay_steps", "cooldown", "step_milestones", "step_factor", "parent", "keep_every",
                 "keep_steps", "curve_every", "curve_batches"):  # the schedule, branch and curve fields, added later
        del data["train"][name]
    old_text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    import hashlib

    assert config_hash(cfg) == hashlib.sha256(old_text.encode()).hexdigest()[:12]
    assert from_dict(data) == dataclasses.replace(cfg, sharding_tolerance=from_dict(data).sharding_tolerance)
    mixed = apply_overrides(cfg, ["data.mixture=verifiable_tasks/small:0.3"])
    assert config_hash(mixed) != config_hash(cfg)


def test_errors_after_parsing_are_one_line_exits(capsys):
    """cli.run: a CommandFailed (nothing useful came out) exits 1, a ValueError (bad input found
    after parsing, e.g. a prior whose sizes the shape rule cannot build) exits 2; one line each."""
    def failed():
        raise cli.CommandFailed("all 3 runs failed")

    def bad_input():
        raise ValueError("budget 5e+09: the prior 'x.json' puts a size at 456 parameters\nwhere ...")

    for fn, status, text in ((failed, 1, "all 3 runs failed"), (bad_input, 2, "budget 5e+09")):
        with pytest.raises(SystemExit) as exit_info:
            cli.run(fn)
        assert exit_info.value.code == status
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ": error: " in err[0] and text in err[0]
