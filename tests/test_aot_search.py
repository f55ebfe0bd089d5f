"""experiments.harness.aot_search: the largest per-device batch that fits, per remat policy.

The search logic runs against a stand-in compiler (a fits/does-not-fit rule, no libtpu); the
command line (``--aot v5e-4 --aot_search 2`` on one model of the smoke grid) compiles for real,
six small programs, in a subprocess as tests/test_aot.py does.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.harness import aot_search
from experiments.harness.config import Config, TrainConfig
from experiments.harness.data import DataConfig
from models.transformer import ModelConfig

REPO = Path(__file__).resolve().parents[1]


def config(mesh="fsdp=4", d_model=64):
    model = ModelConfig(vocab_size=256, d_model=d_model, n_layers=2, n_heads=2, max_seq_len=128)
    return Config(model=model, data=DataConfig(seq_len=128), train=TrainConfig(tokens=10**6, batch_size=8),
                  mesh=mesh)


@pytest.fixture
def stand_in_compiler(monkeypatch):
    """Per-device batches up to LIMIT[remat] fit (peak grows with the batch); records each probe."""
    limits = {"none": 5, "dots_saveable": 12, "full": 40}
    calls = []

    def probe(run_id, cfg, remat, per_device, shard, topology, slices):
        calls.append((cfg.model.d_model, remat, per_device))
        fits = per_device <= limits[remat] // (cfg.model.d_model // 64)
        return {"per_device_batch": per_device, "global_batch": per_device * shard,
                "peak_bytes_per_chip": per_device * 2**28, "fits": fits, "step_time_s": 0.1 * per_device,
                "hbm_bytes_per_chip": 16 * 2**30, "sharding_ok": True, "error": None}

    monkeypatch.setattr(aot_search, "_probe", probe)
    return limits, calls


def test_search_finds_the_largest_fitting_batch_per_policy(stand_in_compiler):
    limits, calls = stand_in_compiler
    runs = [("a", config()), ("a_again", config()), ("wide", config(d_model=128))]
    frontier = aot_search.search(runs, "v5e-4", max_per_device=1024)
    assert [(r["run_id"], r["remat"]) for r in frontier] == [
        ("a", "none"), ("a", "full"), ("a", "dots_saveable"),
        ("wide", "none"), ("wide", "full"), ("wide", "dots_saveable")]  # one row per distinct model
    assert [r["max_per_device_batch"] for r in frontier] == [5, 40, 12, 2, 20, 6]
    a_none = frontier[0]
    assert a_none["global_batch"] == 5 * 4 and not a_none["capped"] and a_none["mesh"]["fsdp"] == 4
    assert [p["per_device_batch"] for p in a_none["probes"]] == [1, 2, 4, 5, 6, 8]
    assert len(calls) <= 6 * 2 * 7  # doubling then bisection: about 2 log2(limit) probes each
    table = aot_search.format_frontier(frontier)
    assert "compiler's estimate" in table and "dots_saveable" in table


def test_search_stops_at_its_cap_and_respects_the_host_multiple(stand_in_compiler):
    frontier = aot_search.search([("a", config())], "v5e-4", remats=("full",), max_per_device=16)
    assert frontier[0]["max_per_device_batch"] == 16 and frontier[0]["capped"]
    assert "16+" in aot_search.format_frontier(frontier)
    # v5e-16 has 4 hosts; with tensor=8, fsdp=2 a data shard is 2 chips, so a global batch that is
    # a multiple of the 4 hosts needs per-device batches in steps of 2
    frontier = aot_search.search([("t", config(mesh="fsdp=2,tensor=8"))], "v5e-16", remats=("none",))
    assert all(p["per_device_batch"] % 2 == 0 for p in frontier[0]["probes"])
    assert frontier[0]["max_per_device_batch"] == 4


def test_aot_search_on_the_command_line_compiles_and_writes_the_frontier(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    proc = subprocess.run([sys.executable, "-m", "experiments.isoflop_chinchilla", "--workdir", "runs/aot",
                           "--preset", "smoke", "--set", "budgets=5e9", "--set", "sizes_per_budget=1",
                           "--aot", "v5e-4", "--aot_search", "2"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "runs" / "aot" / "aot_search.json").read_text())
    assert "estimate" in saved["note"]
    rows = saved["frontier"]
    assert [r["remat"] for r in rows] == ["none", "full", "dots_saveable"]
    for r in rows:  # a tiny model fits at the cap under every policy
        assert r["max_per_device_batch"] == 2 and r["capped"] and r["global_batch"] == 8
        assert 0 < r["peak_bytes_per_chip"] < r["hbm_bytes_per_chip"]
        assert [p["per_device_batch"] for p in r["probes"]] == [1, 2]
    assert "Note: peak/chip is the compiler's estimate" in proc.stdout
    assert not (tmp_path / "runs" / "aot" / "results.csv").exists()
