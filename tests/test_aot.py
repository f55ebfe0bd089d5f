"""experiments.harness.aot: TPU accelerator-type names, and a real ahead-of-time compile of a small
model for a small TPU topology on this CPU machine (libtpu, the `tpu` extra, is needed).

The compile runs in a subprocess, so libtpu's platform settings and start-up noise do not leak
into the other tests.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments.harness import aot
from experiments.harness.config import Config, TrainConfig
from experiments.harness.data import DataConfig
from experiments.harness.train import make_plan
from models.transformer import ModelConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, chips, topology", [
    ("v5p-8", 4, "v5:2x2x1"), ("v5p-16", 8, "v5:2x2x2"), ("v5p-256", 128, "v5:4x4x8"),
    ("v5p-1024", 512, "v5:8x8x8"), ("v4-32", 16, "v4:2x2x4"), ("v4-128", 64, "v4:4x4x4"),
    ("v5e-4", 4, "v5e:2x2"), ("v5e-32", 32, "v5e:4x8"), ("v5e-256", 256, "v5e:16x16"),
    ("v6e-64", 64, "v6e:8x8"), ("v6e-1", 1, "v6e:1x1")])
def test_accelerator_types_map_to_cloud_tpu_slice_shapes(name, chips, topology):
    """Slice shapes as Cloud TPU (and MaxText's accelerator_to_spec_map) name them."""
    tpu = aot.parse_topology(name)
    assert (tpu.chips, tpu.topology_name) == (chips, topology)
    assert tpu.chip_config_name == ("megacore" if name[:3] in ("v4-", "v5p") else "default")


def test_batch_multiple_follows_the_pod_mesh_and_hosts():
    assert aot.batch_multiple("", "v5p-256") == 128  # data over all 128 chips
    assert aot.batch_multiple("fsdp=32,tensor=4", "v5p-256") == 32  # 32 hosts of 4 chips
    assert aot.batch_multiple("tensor=4,fsdp=-1", "v5e-16", slices=2) == 8


@pytest.mark.parametrize("name", ["v5p-12", "v5p-2", "v7-8", "tpu", "v5e-3"])
def test_unknown_or_irregular_accelerator_types_are_refused(name):
    with pytest.raises(ValueError, match="--aot"):
        aot.parse_topology(name)


SCRIPT = textwrap.dedent("""
    import json, sys
    from experiments.harness import aot
    from experiments.harness.config import Config, TrainConfig
    from experiments.harness.data import DataConfig
    from models.transformer import ModelConfig

    def config(d_model, n_layers, n_heads, batch, mesh, remat="none"):
        model = ModelConfig(vocab_size=256, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                            max_seq_len=256, dtype="bfloat16", remat=remat)
        return Config(model=model, data=DataConfig(seq_len=256),
                      train=TrainConfig(tokens=10**8, batch_size=batch), mesh=mesh)

    small = config(128, 2, 2, 16, "fsdp=4")
    runs = [("small_a", small), ("small_b", config(128, 2, 2, 16, "fsdp=4")),
            ("small_dp", config(128, 2, 2, 16, "data=4")),
            ("big", config(4096, 24, 32, 16, "fsdp=4"))]
    records = aot.aot_check(runs, "v5e-4")
    aot.write_aot_json(sys.argv[1], records)
    print(aot.format_table(records))
    print("FAILURES " + json.dumps(aot.failures(records)))
""")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("aot")
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(workdir)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, workdir


def test_small_models_compile_for_a_tpu_topology_and_report_their_memory(compiled):
    proc, workdir = compiled
    assert "Failed to find host bounds" not in proc.stderr  # libtpu noise silenced
    assert "unexpected worker hostname" not in proc.stderr
    records = aot.read_aot_json(workdir / "aot.json")
    by_id = {r["run_id"]: r for r in records}
    assert sorted(by_id) == ["big", "small_a", "small_dp"]  # one record per distinct step
    assert by_id["small_a"]["runs"] == ["small_a", "small_b"]
    small, dp = by_id["small_a"], by_id["small_dp"]
    assert small["topology"] == "v5e-4" and small["chips"] == 4 and small["fits"]
    assert small["hbm_bytes_per_chip"] == 16 * 2**30 and small["attention"] == "splash"
    # float32 params + gradient-sized Adam moments: 12 bytes per parameter at least, split 4
    # ways under fsdp, whole on every chip under pure data parallelism
    n = small["n_params"]
    assert 12 * n / 4 < small["peak_bytes_per_chip"] < dp["peak_bytes_per_chip"]
    assert dp["peak_bytes_per_chip"] > 12 * n
    # the sharding check's numbers: norm scales replicated under fsdp, all of it under data
    assert small["sharding_ok"] and 1 < small["param_bytes_ratio"] < 1.05
    assert dp["param_bytes_ratio"] == 1.0 and dp["sharding_ok"]
    # analytic FLOPs (scaling.flops "exact") and the step time at the stated MFU
    cfg = Config(model=ModelConfig(vocab_size=256, d_model=128, n_layers=2, n_heads=2,
                                   max_seq_len=256, dtype="bfloat16"),
                 data=DataConfig(seq_len=256), train=TrainConfig(tokens=10**8, batch_size=16))
    plan = make_plan(cfg)
    assert small["flops_per_step"] == pytest.approx(plan.flops_per_token["exact"] * 16 * 256)
    assert small["step_time_s"] == pytest.approx(
        small["flops_per_step"] / (4 * 197e12 * small["mfu_assumed"]))


def test_a_shape_that_does_not_fit_names_the_run_and_what_to_change(compiled):
    proc, workdir = compiled
    big = {r["run_id"]: r for r in aot.read_aot_json(workdir / "aot.json")}["big"]
    assert not big["fits"]
    assert big["error"] is not None or big["peak_bytes_per_chip"] > big["hbm_bytes_per_chip"]
    failures = json.loads(proc.stdout.split("FAILURES ", 1)[1])
    assert len(failures) == 1 and failures[0].startswith("run big does not fit v5e-4")
    assert "model.remat=full" in failures[0] and "train.batch_size" in failures[0]
    assert "NO" in proc.stdout and "small_a" in proc.stdout  # the table


def test_every_experiment_command_takes_aot_and_trains_nothing(tmp_path):
    """`--aot v5e-4` on a study: every distinct train step compiled for that topology, the table
    printed, aot.json written, exit 0, and no run trained (the README's pod check, at smoke size)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    proc = subprocess.run([sys.executable, "-m", "experiments.isoflop_chinchilla", "--workdir", "runs/aot",
                           "--preset", "smoke", "--aot", "v5e-4"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = aot.read_aot_json(tmp_path / "runs" / "aot" / "aot.json")
    assert len(records) == len({r["run_id"] for r in records}) >= 3
    assert all(r["fits"] and r["topology"] == "v5e-4" and r["mesh"]["data"] == 4 for r in records)
    assert sum(len(r["runs"]) for r in records) == 9  # every run of the smoke grid, compiled once per shape
    assert not (tmp_path / "runs" / "aot" / "runs").exists() and not (tmp_path / "runs" / "aot" / "results.csv").exists()
    assert "distinct train steps fit v5e-4" in proc.stdout.strip().splitlines()[-1]
