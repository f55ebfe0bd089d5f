"""Test set-up: 8 simulated CPU devices, so sharded and unsharded runs compare in one process.

The flag must be set before JAX initializes its backends; single-device tests use
``jax.devices()[:1]``.

The suite's models are tiny, so its time goes into compiling, not running, XLA programs: the
tests compile with the CPU backend's optimization level 0 (``--xla_backend_optimization_level=0``,
machine code that is built faster and runs slower; the HLO programs are the same, float results
may differ in their last bits), which cut tests/test_model.py from 87 to 51 CPU-seconds and the
fitting tests (test_loss_laws, test_fitting, test_isoflop) from 108 to 78 (2026-12-04). Subprocesses
and notebook kernels inherit it through XLA_FLAGS, except those of `user_env`: the smoke studies
(and the tests that rerun them and compare) compile as on a user's laptop, with XLA's defaults,
so their numbers are the ones users get. Float results differ in their last bits between
optimization levels and between processors, and training amplifies them: no test holds a trained
model's number to a bound that one machine's numerics happen to meet (the PTQ smoke's int4 delta
was -2 paired standard errors on one processor and -5.2 on another; its check now compares with
the held-out loss's own sampling error). An XLA_FLAGS that already sets a level keeps its own.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    flags = (flags + " --xla_force_host_platform_device_count=8").strip()
TEST_FLAGS = ["xla_force_host_platform_device_count"]  # the flags user_env takes out again
if "xla_backend_optimization_level" not in flags:
    flags += " --xla_backend_optimization_level=0"
    TEST_FLAGS.append("xla_backend_optimization_level")
os.environ["XLA_FLAGS"] = flags


# ----------------------------------------------------------------------------- shared studies
# The smoke studies run once per test session, exactly as their docstrings and the README say
# (relative workdir, from an empty directory, one CPU device, the repository importable as after
# `pip install -e .`); the study tests and the colab tests read their outputs.
#
# They start in the background as soon as the session's first test is set up (only the studies
# that a collected test needs), and the tests that read them run last: the studies' subprocesses
# use the second core while the in-process tests run on the first (CI has 2 cores, and a
# subprocess that pytest waits on leaves one idle), so the suite does not wait ~4.5 min for them
# in series. The fixtures then wait for their own study and check its exit status, as before.

import pathlib  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
STUDY_TIMEOUT_S = 1800  # from the study's start; it shares the machine with the rest of the suite


def discover_studies(folder: pathlib.Path = REPO / "experiments" / "studies") -> dict:
    """Every study file's smoke run, from its module constant ``SMOKE = {"fixture", "command",
    "workdir", "compile_cache", "notebook"}`` (read with `ast`, without importing the study): a
    new study registers nowhere else. Returns ``{fixture: SMOKE}``."""
    import ast

    found = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SMOKE" for t in node.targets):
                smoke = ast.literal_eval(node.value)
                assert smoke["fixture"] not in found, f"{path.name}: fixture {smoke['fixture']} declared twice"
                found[smoke["fixture"]] = {"compile_cache": False, "notebook": None, **smoke, "module": path.stem}
    return found


SMOKES = discover_studies()
# fixture -> (command, workdir relative to the command's directory, whether it gets a compile cache)
STUDIES = {name: (s["command"], s["workdir"], bool(s["compile_cache"])) for name, s in SMOKES.items()}
# the colab notebooks find a finished study through these variables (tests/test_colabs.py)
NOTEBOOK_VARIABLES = {s["notebook"]: name for name, s in SMOKES.items() if s["notebook"]}
README_MAIN = STUDIES["smoke_grid"][0]
PTQ_COMMAND = STUDIES["ptq_smoke"][0]
TTS_COMMAND = STUDIES["tts_smoke"][0]


def user_env(cache_dir=None) -> dict:
    """A subprocess environment as on a laptop: one CPU device (no simulated devices), XLA's
    default optimization level, the repository importable; ``cache_dir``: JAX's persistent
    compilation cache (shared by a test's subprocesses so that rerunning the same runs does not
    compile them again; no number changes)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if not any(name in f for name in TEST_FLAGS))
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if cache_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def _argv(command: str) -> list[str]:
    argv = command.split()
    assert argv[:2] == ["python", "-m"], command
    return [sys.executable, *argv[1:]]


def run_as_written(command: str, cwd, env, timeout: float = 900):
    proc = subprocess.run(_argv(command), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def studies_needed(items) -> list[str]:
    """The study fixtures that these test items read (directly, or through a notebook)."""
    needed = set()
    for item in items:
        needed.update(name for name in getattr(item, "fixturenames", ()) if name in STUDIES)
        path = getattr(getattr(item, "callspec", None), "params", {}).get("path")
        if path is not None and str(path).endswith(".ipynb"):
            text = pathlib.Path(path).read_text()
            needed.update(f for v, f in NOTEBOOK_VARIABLES.items() if v in text)
    return [name for name in STUDIES if name in needed]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (its worker hook)
def pytest_collection_modifyitems(session, config, items):
    """Tests that read a smoke study run after the others (stable order otherwise).

    The suite runs on two pytest-xdist workers (``--dist loadgroup``, set in pyproject.toml):
    each test goes to whichever worker is free, except that the tests of a module that share a
    module-scoped fixture (a compiled model, an emulator, a trained checkpoint) form one group
    and run on one worker, so the fixture is built once."""
    reads = {id(item) for item in items if studies_needed([item])}
    items[:] = [i for i in items if id(i) not in reads] + [i for i in items if id(i) in reads]
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        shared = info is not None and any(defs and defs[-1].scope == "module"
                                          for defs in info.name2fixturedefs.values())
        if shared and id(item) not in reads:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


_WRAPPER = ("import pathlib, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
            "pathlib.Path(sys.argv[1]).write_text(str(rc))")


class BackgroundStudy:
    """One smoke command running in its own empty directory; output to files (not pipes, which
    fill up and stall the child while nobody reads them). A small wrapper writes the command's
    exit status to ``returncode``, so any pytest process (an xdist worker that did not start it)
    can wait for it."""

    def __init__(self, command: str, root: pathlib.Path, workdir: str, cache: pathlib.Path | None,
                 start: bool = True):
        self.command, self.root, self.cache = command, root, cache
        self.workdir = root / workdir
        self.out, self.err, self.rc = root / "stdout.txt", root / "stderr.txt", root / "returncode"
        self.proc = None
        if start:
            with self.out.open("w") as out, self.err.open("w") as err:
                self.proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(self.rc), *_argv(command)],
                                             cwd=root, env=user_env(cache), stdout=out, stderr=err,
                                             text=True, start_new_session=True)
        self.started = time.time()
        self._done = None

    def wait(self) -> subprocess.CompletedProcess:
        if self._done is None:
            while not self.rc.exists() or not self.rc.read_text().strip():
                if time.time() - self.started > STUDY_TIMEOUT_S:
                    self.stop()
                    raise TimeoutError(f"{self.command}: not finished after {STUDY_TIMEOUT_S} s")
                if self.proc is not None and self.proc.poll() is not None and not self.rc.exists():
                    raise RuntimeError(f"{self.command}: its wrapper exited {self.proc.returncode}")
                time.sleep(0.5)
            if self.proc is not None:
                self.proc.wait()
            self._done = subprocess.CompletedProcess(_argv(self.command), int(self.rc.read_text()),
                                                     self.out.read_text(), self.err.read_text())
        assert self._done.returncode == 0, self._done.stderr[-4000:]
        return self._done

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _shared_temp(tmp_path_factory) -> pathlib.Path:
    """The session's temporary folder that every pytest-xdist worker sees (each worker's own
    basetemp is a folder inside it); the basetemp itself without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _open_study(name: str, root: pathlib.Path, start: bool) -> BackgroundStudy:
    command, workdir, cached = STUDIES[name]
    return BackgroundStudy(command, root, workdir, root / "jax_cache" if cached else None, start=start)


@pytest.fixture(scope="session", autouse=True)
def _studies(request, tmp_path_factory):
    """Starts every smoke study this session's tests read, at once, in the background: once per
    session, by the first pytest-xdist worker to get here (the others find them by their folder
    in the shared temporary directory, under a file lock)."""
    import filelock

    shared = _shared_temp(tmp_path_factory)
    started, mine = {}, []
    with filelock.FileLock(str(shared / "studies.lock")):
        for name in studies_needed(request.session.items):
            root = shared / f"study_{name}"
            new = not root.exists()
            root.mkdir(exist_ok=True)
            started[name] = _open_study(name, root, start=new)
            if new:
                mine.append(started[name])
    yield started
    # The studies this process started: a study that another worker still reads is waited for;
    # after a failure or an interruption (-x) they are stopped.
    for study in mine:
        if request.session.testsfailed or request.session.shouldstop:
            study.stop()
        else:
            try:
                study.wait()
            except (AssertionError, TimeoutError, RuntimeError):
                pass  # its own tests report it


def _finished(studies, name, tmp_path_factory) -> BackgroundStudy:
    if name not in studies:  # not foreseen (e.g. requested through getfixturevalue): run it now
        import filelock

        shared = _shared_temp(tmp_path_factory)
        with filelock.FileLock(str(shared / "studies.lock")):
            root = shared / f"study_{name}"
            new = not root.exists()
            root.mkdir(exist_ok=True)
            studies[name] = _open_study(name, root, start=new)
    studies[name].wait()
    return studies[name]


def _study_fixture(name: str):
    """A session fixture for one discovered smoke study: (workdir, completed process), plus the
    compile cache when the study has one (e.g. ``smoke_grid``: the README's main command)."""
    def fixture(_studies, tmp_path_factory):
        study = _finished(_studies, name, tmp_path_factory)
        done = study.wait()
        return (study.workdir, done, study.cache) if STUDIES[name][2] else (study.workdir, done)

    fixture.__name__ = name
    fixture.__doc__ = f"The smoke run of experiments.studies.{SMOKES[name]['module']}: {STUDIES[name][0]}"
    return pytest.fixture(scope="session", name=name)(fixture)


for _name in STUDIES:
    globals()[_name] = _study_fixture(_name)
