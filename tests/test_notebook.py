"""Executes notebooks/pspnet_cityscapes.ipynb top to bottom in a fresh kernel (quick mode)."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "pspnet_cityscapes.ipynb"
KERNEL = "pspnet-test-python"


def test_notebook_is_stored_without_outputs():
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code_cells) >= 8
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code_cells)
    # Told with the package: it imports it and defines no functions or classes of its own.
    source = "\n".join(cell.source for cell in code_cells)
    assert "import pspnet" in source
    assert "def " not in source and "class " not in source


@pytest.mark.slow
def test_notebook_runs_in_a_fresh_kernel(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # A kernel spec that starts this very interpreter, whatever specs are installed.
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pspnet test", "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PSPNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PSPNET_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("PSPNET_DATA", "PSPNET_RUN"):
        monkeypatch.delenv(name, raising=False)

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=240,
                            resources={"metadata": {"path": str(tmp_path)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    seconds = time.perf_counter() - started
    assert seconds < 300, f"the notebook took {seconds:.0f} s"

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    # Pairs, legend, curves, per-class IoU, predictions, overlays: six figures.
    assert len(images) >= 6
    text = "".join(output.get("text", "") for output in outputs)
    assert "mean_iou" in text  # the evaluation table was printed
    run = tmp_path / "cache" / "notebook-run"
    assert (run / "best.keras").is_file() and (run / "notebook-eval" / "metrics.json").is_file()
    assert len(list((run / "notebook-predictions").glob("*_ids.png"))) == 8  # the 8 val pairs
