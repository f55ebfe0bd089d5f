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
    assert out.stdout.strip() == "20"


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
