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


def test_import_linter_contracts_are_kept():
    """Layers experiments -> models -> scaling; inside scaling plots -> analysis | published -> fitting
    -> laws -> flops | io; no cycles between sibling modules (the contracts in .importlinter)."""
    out = _python("import sys; from importlinter.cli import lint_imports_command; "
                  "sys.argv = ['lint-imports', '--config', '.importlinter', '--no-cache']; lint_imports_command()")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "5 kept, 0 broken" in out.stdout, out.stdout[-3000:]


def test_law_registry_does_not_depend_on_what_was_imported():
    out = _python(
        "import scaling.laws as L\n"
        "before = L.names()\n"
        "import scaling.isoflop, scaling.isoflop_plots, scaling.plots, scaling.published, scaling.fitting\n"
        "import scaling.analysis.isoflop, scaling.test_time\n"
        "assert L.names() == before, (before, L.names())\n"
        "print(len(before))\n")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "18"


def test_old_module_paths_are_the_moved_modules():
    out = _python(
        "import sys, scaling\n"
        "assert 'jax' not in sys.modules\n"
        "import scaling.fitted, scaling.isoflop, scaling.isoflop_plots, scaling.test_time, scaling.law\n"
        "import scaling.intervals, scaling.profile, scaling.loss_laws, scaling.quantization_laws\n"
        "from scaling.fitted import FittedLaw, load\n"
        "assert scaling.fitted is scaling.fitting.fitted and FittedLaw is scaling.FittedLaw\n"
        "assert scaling.isoflop is scaling.analysis.isoflop and scaling.isoflop_plots is scaling.plots.isoflop\n"
        "assert scaling.test_time is scaling.laws.test_time and scaling.law is scaling.laws.law\n"
        "assert scaling.intervals is scaling.fitting.intervals and scaling.profile is scaling.fitting.profile\n"
        "assert scaling.loss_laws is scaling.laws.loss and scaling.quantization_laws is scaling.laws.quantization\n"
        "assert scaling.fit is scaling.fitting.fit and scaling.load is load\n")
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
