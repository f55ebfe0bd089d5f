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
