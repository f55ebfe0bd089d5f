"""Every notebook in colabs/ executes top to bottom without an error (nbclient, python3 kernel).

The kernel inherits this process's environment (CPU JAX, see conftest.py) and runs with the
repository root as its working directory; the notebooks' install cells only act inside Colab.
Notebooks that train a smoke study first look for one that already ran (``ISOFLOP_WORKDIR``,
``PTQ_WORKDIR``, ``TTS_WORKDIR``): the tests hand them a copy of the session's smoke studies, so CI trains each
smoke study once.
"""

import pathlib
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import NOTEBOOK_VARIABLES as STUDY_FIXTURES  # conftest starts those studies

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))


def test_there_are_colabs_to_run():
    assert NOTEBOOKS, "colabs/ holds no notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_colab_executes_without_errors(path, request, monkeypatch, tmp_path):
    text = path.read_text()
    for variable, fixture in STUDY_FIXTURES.items():
        if variable in text:  # a copy: the notebook may write into it
            workdir = request.getfixturevalue(fixture)[0]
            copy = tmp_path / variable.lower()
            shutil.copytree(workdir, copy)
            monkeypatch.setenv(variable, str(copy))
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code" and c.source.strip())
