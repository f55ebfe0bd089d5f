"""Every import is declared: a fresh machine that runs the README's test command
(``pip install -e '.[test]' && pytest tests``) has every package the code and the tests import.

A package that is only present by chance (installed by hand, or pulled in by an unrelated
package) passes everywhere except on a fresh machine: ``mpmath`` did exactly that. This test
reads every import statement in the repository (with ``ast``, so nothing is imported) and maps it
to the distribution that provides it (``importlib.metadata.packages_distributions``):
- the library's modules (scaling/, models/, experiments/): a top-level import must be a main
  dependency; an import inside a function or a ``try`` block (an optional feature) may come from
  any extra;
- tests/, benchmarks/ and the colabs' code cells: a main dependency or one of the ``test`` extra.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCAL = {"scaling", "models", "experiments", "benchmarks", "tests"} | {p.stem for p in (REPO / "tests").glob("*.py")}
LIBRARY = ("scaling", "models", "experiments")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, set[str]]:
    """{"main": {dist, ...}, extra: {dist, ...}} from pyproject.toml (normalized names)."""
    import tomllib  # python >= 3.11; the project's CI runs 3.11
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {_normalize(Requirement(r).name) for r in reqs}  # noqa: E731
    groups = {"main": names(project["dependencies"])}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        groups[extra] = {n for n in names(reqs) if n != "scaling"}
        # an extra may include others: scaling[ray] -> the ray extra's packages
        for r in reqs:
            req = Requirement(r)
            if _normalize(req.name) == "scaling":
                for inner in req.extras:
                    groups[extra] |= names(project["optional-dependencies"][inner])
    return groups


def imports_of(source: str, where: str) -> list[tuple[str, bool, str]]:
    """(top-level module, optional?, location) of every absolute import in ``source``; optional:
    inside a function, a class body's method or a ``try`` block."""
    tree = ast.parse(source, filename=where)
    found = []

    def visit(node, optional):
        for child in ast.iter_child_nodes(node):
            inner = optional or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Try))
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], optional, f"{where}:{child.lineno}") for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], optional, f"{where}:{child.lineno}"))
            visit(child, inner)

    visit(tree, False)
    return found


def repository_imports():
    for path in sorted(REPO.glob("*/**/*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0].startswith(".") or rel.parts[0] in ("build", "runs", "site"):
            continue
        yield rel.parts[0], imports_of(path.read_text(), str(rel))
    for path in sorted((REPO / "colabs").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("!", "%")))
        yield "colabs", imports_of(code, str(path.relative_to(REPO)))


def undeclared(sources=None, groups=None, providers=None) -> list[str]:
    """One line per import whose package pyproject.toml does not declare where it must."""
    groups = declared() if groups is None else groups
    every_extra = set().union(*groups.values())
    providers = md.packages_distributions() if providers is None else providers
    problems = []
    for folder, found in (repository_imports() if sources is None else sources):
        for module, optional, where in found:
            if module in LOCAL or module in sys.stdlib_module_names or module == "__future__":
                continue
            dists = {_normalize(d) for d in providers.get(module, [])}
            if folder in LIBRARY:
                allowed = every_extra if optional else groups["main"]
                need = "a main dependency" + (" or an extra" if optional else "")
            else:
                allowed = groups["main"] | groups.get("test", set())
                need = "a main dependency or in the 'test' extra"
            if not dists:
                problems.append(f"{where}: imports {module!r}, which no installed distribution provides")
            elif not dists & allowed:
                problems.append(f"{where}: imports {module!r} (from {sorted(dists)}), not {need}")
    return problems


def test_every_import_is_declared_in_pyproject():
    problems = undeclared()
    assert not problems, "undeclared imports (add them to pyproject.toml):\n" + "\n".join(problems)


def test_the_check_catches_an_undeclared_import():
    """Not vacuous: the same check reports mpmath in library code, and an optional import from no
    extra at all, and accepts a test's import of the test extra's package."""
    groups = {"main": {"jax"}, "test": {"mpmath"}, "ray": {"ray"}}
    providers = {"jax": ["jax"], "mpmath": ["mpmath"], "ray": ["ray"], "wandb": ["wandb"]}
    check = lambda folder, code: undeclared([(folder, imports_of(code, "f.py"))], groups, providers)  # noqa: E731
    assert check("tests", "import mpmath\nimport jax\n") == []
    assert check("scaling", "import mpmath\n") == ["f.py:1: imports 'mpmath' (from ['mpmath']), not a main dependency"]
    assert check("experiments", "def f():\n    import ray\n") == []
    assert len(check("experiments", "try:\n    import wandb\nexcept ImportError:\n    pass\n")) == 1
    assert check("tests", "import nosuchpackage_xyz\n") == [
        "f.py:1: imports 'nosuchpackage_xyz', which no installed distribution provides"]
    assert "mpmath" in declared()["test"]
