"""Both notebooks run top to bottom in a Jupyter kernel (nbclient), in a temporary folder, so they never rot.

Each notebook asserts its own outcomes (rows kept, verify checks passing, the paper's gap); a failing
cell fails the test. The two share one kernel, so one JVM: the second reuses the first's Spark session.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path_factory.mktemp("notebooks")))
    yield km
    km.shutdown_kernel(now=True)


@pytest.mark.parametrize("name", ["quickstart.ipynb", "paper_reproduction.ipynb"])
def test_notebook_runs(name, kernel):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, km=kernel, timeout=900).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
