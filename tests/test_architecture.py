"""The package's architecture, enforced: import-linter's contracts, no registration on import, old paths."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _lint_imports(config: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    code = ("import sys; from importlinter.cli import lint_imports_command; "
            f"sys.argv = ['lint-imports', '--config', {str(config)!r}, '--no-cache']; lint_imports_command()")
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_import_linter_contracts_are_kept():
    """Layers experiments -> models -> scaling; inside scaling plots -> analysis | published -> fitting
    -> laws -> flops | io; inside models and experiments their layers; no cycles between sibling
    modules (the contracts in .importlinter, every one of them)."""
    out = _lint_imports(ROOT / ".importlinter")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    contracts = (ROOT / ".importlinter").read_text().count("[importlinter:contract:")
    assert f"{contracts} kept, 0 broken" in out.stdout, out.stdout[-3000:]


def test_import_linter_sees_function_level_imports(tmp_path):
    """A circle closed by an import inside a function breaks an acyclic_siblings contract
    (grimp reads every import statement, not only the module-level ones), so the contracts
    above hold function-level imports too."""
    package = tmp_path / "circle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circle import b\n")
    (package / "b.py").write_text("def f():\n    from circle import a\n    return a\n")
    config = tmp_path / ".importlinter"
    config.write_text("[importlinter]\nroot_packages =\n    circle\n\n"
                      "[importlinter:contract:acyclic]\nname = no circles\ntype = acyclic_siblings\n"
                      "ancestors =\n    circle\n")
    out = _lint_imports(config, tmp_path)
    assert out.returncode != 0 and "0 kept, 1 broken" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]


JAX_SETTINGS = """
import json, os, sys
import jax
def settings():
    names = sorted(n for n in jax.config.values if isinstance(jax.config.values[n], (bool, int, float, str, type(None))))
    return {n: jax.config.values[n] for n in names}, dict(os.environ)
before, env = settings()
for name in sys.argv[1:]:
    __import__(name)
after, env_after = settings()
changed = {n: (before[n], after.get(n)) for n in before if before[n] != after.get(n)}
changed_env = sorted(k for k in set(env) | set(env_after) if env.get(k) != env_after.get(k))
print(json.dumps({"config": changed, "environ": changed_env}, default=str))
"""


def test_importing_models_and_the_harness_changes_no_jax_setting():
    """Importing the library (models, the training harness) leaves jax's global configuration and
    the environment as they were; the commands (``cli``, the entry points) decide the platform."""
    modules = ["models", "models.transformer", "models.sharding", "models.shapes", "models.quantization",
               "models.sampling", "experiments.harness.train", "experiments.harness.data",
               "experiments.harness.aot", "experiments.harness.restore", "experiments.harness.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", JAX_SETTINGS, *modules], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    changes = json.loads(out.stdout.strip().splitlines()[-1])
    assert changes == {"config": {}, "environ": []}, changes


def test_law_registry_does_not_depend_on_what_was_imported():
    out = _python(
        "import scaling.laws as L\n"
        "before = L.names()\n"
        "import scaling.isoflop, scaling.isoflop_plots, scaling.plots, scaling.published, scaling.fitting\n"
        "import scaling.analysis.isoflop, scaling.test_time\n"
        "assert L.names() == before, (before, L.names())\n"
        "print(len(before))\n")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "23"


def test_old_module_paths_are_the_moved_modules():
    out = _python(
        "import sys, scaling\n"
        "assert 'jax' not in sys.modules\n"
        "import scaling.fitted, scaling.isoflop, scaling.isoflop_plots, scaling.test_time, scaling.law\n"
        "import scaling.intervals, scaling.profile, scaling.loss_laws, scaling.quantization_laws\n"
        "from scaling.fitted import FittedLaw, load\n"
        "assert scaling.fitted is scaling.fitting.fitted and FittedLaw is scaling.FittedLaw\n"
        "assert scaling.isoflop is scaling.analysis.isoflop and scaling.isoflop_plots is scaling.plots.isoflop\n"
        "assert scaling.test_time is scaling.laws.pass_at_k and scaling.law is scaling.laws.law\n"
        "assert scaling.intervals is scaling.fitting.intervals and scaling.profile is scaling.fitting.profile\n"
        "assert scaling.loss_laws is scaling.laws.loss and scaling.quantization_laws is scaling.laws.quantization\n"
        "assert scaling.fit is scaling.fitting.fit and scaling.load is load\n")
    assert out.returncode == 0, out.stderr[-3000:]


def test_split_modules_keep_their_old_import_paths():
    """harness.train, harness.data and models.quantization were split along their seams; the names
    they held are still importable from them, and are the moved objects."""
    out = _python(
        "import experiments.harness.train as train, experiments.harness.data as data\n"
        "import models.quantization as quant\n"
        "from experiments.harness import plan, step, evaluate, divergence, tokenizers, sources, packing, mixtures\n"
        "from models import quant_formats, qwix_rules, ptq, qat\n"
        "assert train.make_plan is plan.make_plan and train.build is step.build and train.StepKey is step.StepKey\n"
        "assert train.evaluate is evaluate.evaluate and train.DivergenceMonitor is divergence.DivergenceMonitor\n"
        "assert train.token_losses is step.token_losses and train.with_schedule is step.with_schedule\n"
        "assert data.make_tokenizer is tokenizers.make_tokenizer and data.load_source is sources.load_source\n"
        "assert data.packed_train_rows is packing.packed_train_rows and data.mixed_train_rows is mixtures.mixed_train_rows\n"
        "assert data.split_info is sources.split_info and data.train_sentencepiece is tokenizers.train_sentencepiece\n"
        "assert quant.QuantConfig is quant_formats.QuantConfig and quant.parse_format is quant_formats.parse_format\n"
        "assert quant.block_rules is qwix_rules.block_rules and quant.ptq is ptq.ptq and quant.qat_model is qat.qat_model\n")
    assert out.returncode == 0, out.stderr[-3000:]


def test_renamed_pass_at_k_module_keeps_its_old_paths_with_a_deprecation_warning():
    out = _python(
        "import warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "import scaling.laws as L, scaling.laws.pass_at_k as new\n"
        "names = L.names()\n"
        "for old in ('scaling.laws.test_time', 'scaling.test_time'):\n"
        "    try:\n"
        "        __import__(old)\n"
        "    except DeprecationWarning as w:\n"
        "        assert 'scaling.laws.pass_at_k' in str(w), w\n"
        "    else:\n"
        "        raise AssertionError(old + ' did not warn')\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "import importlib, sys\n"
        "assert importlib.import_module('scaling.laws.test_time') is new\n"
        "assert importlib.import_module('scaling.test_time') is new and L.names() == names\n"
        "assert new.fitted_pass_at_k is importlib.import_module('scaling.laws.test_time').fitted_pass_at_k\n")
    assert out.returncode == 0, out.stderr[-3000:]


def test_importing_and_fitting_changes_no_global_jax_setting():
    """The library leaves the platform to the commands: importing every scaling module, and a fit
    (which runs on the CPU in float64 through thread-local contexts), leave jax.config as it was."""
    out = _python(
        "import jax\n"
        "before = dict(jax.config.values)\n"
        "import scaling, scaling.fitting, scaling.fitting.solver, scaling.laws, scaling.analysis, scaling.published\n"
        "import scaling.plots, scaling.analysis.isoflop\n"
        "assert dict(jax.config.values) == before, {k: (before.get(k), v) for k, v in jax.config.values.items()\n"
        "                                            if before.get(k) != v}\n"
        "import numpy as np\n"
        "x = np.geomspace(1e18, 1e21, 12)\n"
        "f = scaling.fit('power_law', {'x': x, 'y': 1.8 + 500 * x ** -0.15})\n"
        "assert abs(f.params['alpha'] - 0.15) < 1e-3, f.params\n"
        "assert dict(jax.config.values) == before\n"
        "assert 'float64' in f.fit['device'] and f.fit['device'].startswith('cpu')\n")
    assert out.returncode == 0, out.stderr[-3000:]


def test_old_study_paths_are_the_moved_modules_and_test_named_ones_warn():
    """Study files live in experiments/studies/; the old import paths are the same modules (no copy),
    and the product modules that were named like tests warn that they moved."""
    out = _python(
        "import warnings\n"
        "import experiments.isoflop_chinchilla as a, experiments.isoflop_nonembed as b\n"
        "import experiments.quantization_degradation as c\n"
        "from experiments import studies\n"
        "assert a is studies.isoflop_chinchilla and b is studies.isoflop_nonembed and c is studies.quantization_degradation\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import experiments.test_time_scaling as t, experiments.reports.test_time as r\n"
        "    import experiments.reports.test_time_plots as p\n"
        "import experiments.studies.inference_compute as t2, experiments.reports.pass_at_k as r2\n"
        "import experiments.reports.pass_at_k_plots as p2\n"
        "assert t is t2 and r is r2 and p is p2\n"
        "moved = [w for w in caught if issubclass(w.category, DeprecationWarning) and 'deprecated' in str(w.message)]\n"
        "assert len(moved) == 3, [str(w.message) for w in caught]\n")
    assert out.returncode == 0, out.stderr[-3000:]


def test_the_old_test_time_command_still_runs_with_a_deprecation_warning():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "experiments.test_time_scaling", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "experiments.studies.inference_compute" in proc.stderr and "DeprecationWarning" in proc.stderr
    assert "--preset" in proc.stdout


def test_every_study_file_is_found_without_registration():
    """The tests' smoke fixtures come from the study files' SMOKE constants (tests/conftest.py), and
    the import-linter layer is the package: a new file in experiments/studies/ needs neither."""
    import conftest

    found = conftest.discover_studies()
    assert {"smoke_grid", "ptq_smoke", "tts_smoke"} <= set(found)
    assert found["tts_smoke"]["module"] == "inference_compute"
    text = (ROOT / ".importlinter").read_text()
    assert "studies : train_lm" in text and "isoflop_chinchilla :" not in text
