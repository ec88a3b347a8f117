"""The notebook: committed without outputs, and it runs top to bottom on a seeded month."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import find_kernel_specs
from nbclient import NotebookClient

from .conftest import Seeded

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "sales_ranking.ipynb"
KERNEL = "python3"


def test_the_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == []
        assert cell.execution_count is None
    assert notebook.metadata["kernelspec"]["name"] == KERNEL


@pytest.mark.slow
def test_the_notebook_runs_on_a_seeded_month(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ipykernel provides the python3 kernel (the `analysis` extra installs it).
    assert KERNEL in find_kernel_specs()
    # The kernel inherits this environment: the database to read, and no GUI.
    monkeypatch.setenv("FLASHSALE_DATABASE_URL", seeded.url)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # bump charts, stability, heatmap, units vs orders, spikes
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"database: {seeded.url}" in text
    assert "on limited items" in text
