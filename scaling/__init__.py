"""scaling: fit neural scaling laws in JAX, and use the fitted laws.

    import scaling
    law = scaling.laws.get("chinchilla")
    fitted = scaling.fit(law, df, target="loss", bootstrap=4000)
    fitted.compute_optimal(C=5.76e23)

Layout (each layer imports only the layers below it; ``tests/test_architecture.py`` checks it):

- `scaling.plots`: figures of laws, fits and isoFLOP analyses (matplotlib).
- `scaling.analysis`: studies built on fitted laws (`scaling.analysis.isoflop`: Hoffmann et al.'s
  three approaches; `scaling.compare`: two recipes by their compute multiplier; `scaling.select`:
  laws ranked by extrapolation error; `scaling.fit_two_step`: task accuracy through a task loss);
  `scaling.published`: published fits and data.
- `scaling.fitting`: the one fitting engine (objectives, solver, `fit`, intervals, profile
  likelihood, the `FittedLaw` container and its file, compute-optimal numerics).
- `scaling.laws`: laws as pure jnp functions (`Law`, `Param`) and the registry (loss,
  quantization and test-time laws).
- `scaling.flops` (FLOP accounting and the FLOP-convention vocabulary) and `scaling.io` (JSON
  files) at the bottom.

Importing this package is cheap and changes no global jax setting: submodules (and jax,
matplotlib) load on first use, and the commands (not the library) choose jax's platform. The module
paths of earlier versions (``scaling.fitted``, ``scaling.isoflop``, ...) still import: they name
the modules that moved (`_MOVED`); ``scaling.test_time`` (now `scaling.laws.pass_at_k`) warns
(`_DEPRECATED`).
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# attribute -> (module, name in module or None for the module itself)
_LAZY = {
    "laws": ("scaling.laws", None),
    "fitting": ("scaling.fitting", None),
    "analysis": ("scaling.analysis", None),
    "io": ("scaling.io", None),
    "Law": ("scaling.laws.law", "Law"),
    "Param": ("scaling.laws.law", "Param"),
    "fit": ("scaling.fitting.fitter", "fit"),
    "FittedLaw": ("scaling.fitting.fitted", "FittedLaw"),
    "load": ("scaling.fitting.fitted", "load"),
    "published": ("scaling.published", None),
    "flops": ("scaling.flops", None),
    "plots": ("scaling.plots", None),
    "isoflop": ("scaling.analysis.isoflop", None),
    "pass_at_k": ("scaling.laws.pass_at_k", None),
    "compare": ("scaling.analysis.compare", "compare"),
    "select": ("scaling.analysis.select", "select"),
    "fit_two_step": ("scaling.analysis.task_accuracy", "fit_two_step"),
    "test_time": ("scaling.laws.pass_at_k", None),   # deprecated name (_DEPRECATED)
}

# old module path -> where the module lives now (the same module object under both names)
_MOVED = {
    "scaling.law": "scaling.laws.law",
    "scaling.loss_laws": "scaling.laws.loss",
    "scaling.quantization_laws": "scaling.laws.quantization",
    "scaling.test_time": "scaling.laws.pass_at_k",
    "scaling.fitted": "scaling.fitting.fitted",
    "scaling.intervals": "scaling.fitting.intervals",
    "scaling.profile": "scaling.fitting.profile",
    "scaling.isoflop": "scaling.analysis.isoflop",
    "scaling.isoflop_plots": "scaling.plots.isoflop",
}

# old names that still work but warn (DeprecationWarning): name -> what to use instead
_DEPRECATED = {"scaling.test_time": "scaling.laws.pass_at_k", "test_time": "scaling.laws.pass_at_k"}

__all__ = sorted(set(_LAZY) - set(_DEPRECATED))


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path (`_MOVED`) as the module at its new path."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in _MOVED else None

    def create_module(self, spec):
        _warn_deprecated(spec.name)
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module):
        pass


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())   # before path-based finders (an editable install of an older tree)


def _warn_deprecated(name: str) -> None:
    if name in _DEPRECATED:
        import warnings

        warnings.warn(f"{name} is deprecated; use {_DEPRECATED[name]}", DeprecationWarning, stacklevel=3)


def __getattr__(name):
    _warn_deprecated(name)
    if name in _LAZY:
        module_name, attr = _LAZY[name]
    elif f"scaling.{name}" in _MOVED:
        module_name, attr = f"scaling.{name}", None
    else:
        raise AttributeError(f"module 'scaling' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
