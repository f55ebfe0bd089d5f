"""Test set-up: 8 simulated CPU devices, so sharded and unsharded runs compare in one process.

The flag must be set before JAX initializes its backends; single-device tests use
``jax.devices()[:1]``.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()


# ----------------------------------------------------------------------------- shared studies
# The smoke studies run once per test session, exactly as their docstrings and the README say
# (relative workdir, from an empty directory, one CPU device, the repository importable as after
# `pip install -e .`); the study tests and the colab tests read their outputs.

import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
README_MAIN = "python -m experiments.isoflop_chinchilla --workdir runs/ci --preset smoke"
PTQ_COMMAND = "python -m experiments.quantization_degradation --workdir runs/ptq_ci --preset smoke"


def user_env(cache_dir=None) -> dict:
    """A subprocess environment as on a laptop: one CPU device (no simulated devices), the
    repository importable; ``cache_dir``: JAX's persistent compilation cache (shared by a test's
    subprocesses so that rerunning the same runs does not compile them again; no number changes)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if cache_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def run_as_written(command: str, cwd, env, timeout: float = 900):
    argv = command.split()
    assert argv[:2] == ["python", "-m"], command
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="session")
def smoke_grid(tmp_path_factory):
    """The README's main command at smoke size: (workdir, completed process, compile cache)."""
    root = tmp_path_factory.mktemp("smoke")
    cache = root / "jax_cache"
    proc = run_as_written(README_MAIN, root, user_env(cache))
    return root / "runs" / "ci", proc, cache


@pytest.fixture(scope="session")
def ptq_smoke(tmp_path_factory):
    """The PTQ study's smoke command: (workdir, completed process)."""
    root = tmp_path_factory.mktemp("ptq")
    proc = run_as_written(PTQ_COMMAND, root, user_env())
    return root / "runs" / "ptq_ci", proc
