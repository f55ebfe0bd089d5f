"""The documentation site builds: `mkdocs build --strict` (mkdocs.yml, docs/), as CI would publish it.

Strict mode turns every warning into a failure: a page missing from the nav or a nav entry without
its page, a broken link or anchor, a figure or snippet that is not there, and an API-reference
entry (``::: module.object``) that mkdocstrings cannot find after a module moved. The build reads
the sources statically (nothing is imported), so it takes a few seconds.
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}    # mkdocs-material's end-of-life banner
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "scaling" / "index.html").is_file()


def test_law_library_page_lists_every_law_with_its_formula():
    """docs/laws.md has a section per registered law, quoting the formula the code states."""
    import scaling.laws

    page = (ROOT / "docs" / "laws.md").read_text()
    for name in scaling.laws.names():
        law = scaling.laws.get(name)
        assert f"### `{name}`" in page, f"docs/laws.md has no section for the law {name!r}"
        assert law.formula in page, f"docs/laws.md does not quote {name}'s formula: {law.formula}"


def test_published_page_lists_every_published_fit():
    import scaling

    page = (ROOT / "docs" / "published.md").read_text()
    for name in scaling.published.names():
        assert f"`{name}`" in page, f"docs/published.md does not list the published fit {name!r}"


def test_readme_links_and_first_commands():
    """The README's relative links reach files (on GitHub too), and its first commands are the
    main job and the tests, as .ci/run runs them."""
    import re

    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert links
    for link in links:
        if not re.match(r"[a-z]+://", link):
            assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"
    commands = re.findall(r"^pip install .*$", readme, flags=re.M)
    assert commands[:2] == [
        "pip install -e . && python -m experiments.isoflop_chinchilla --workdir runs/demo --preset cpu",
        "pip install -e '.[test]' && pytest tests"]
