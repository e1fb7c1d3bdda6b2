"""Executes notebooks/pspnet_cityscapes.ipynb top to bottom in a fresh kernel (quick mode):
on the demo set, then on a PSPNET_DATA folder in the same cache."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, make_pairs

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
    # The classes come from the model file's table, not from the Cityscapes constants.
    assert "info.class_table()" in source and "pspnet.palette" not in source


def test_every_pspnet_import_of_the_notebook_resolves():
    """Each `from pspnet... import name` of the notebook names a module or attribute that exists:
    the quick check of the modules' moves, without starting a kernel."""
    import importlib
    import importlib.util
    import re

    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    imports = re.findall(r"^from (pspnet[\w.]*) import ([\w, ]+)$", source, flags=re.M)
    assert imports
    missing = []
    for module_name, names in imports:
        module = importlib.import_module(module_name)
        for name in (n.strip() for n in names.split(",")):
            if not hasattr(module, name) and importlib.util.find_spec(f"{module_name}.{name}") is None:
                missing.append(f"{module_name}.{name}")
    assert missing == []


def _notebook_env(patch: pytest.MonkeyPatch, root: Path) -> None:
    """Quick mode, caches under root, and a kernel spec that starts this very interpreter."""
    spec_dir = root / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pspnet test",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    patch.setenv("JUPYTER_PATH", str(root / "jupyter"))
    patch.setenv("PSPNET_CACHE", str(root / "cache"))
    patch.setenv("PSPNET_NOTEBOOK_QUICK", "1")
    patch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("PSPNET_DATA", "PSPNET_RUN"):
        patch.delenv(name, raising=False)


def _execute(root: Path):
    """Runs the notebook top to bottom in a fresh kernel started in root.

    Returns:
        (the notebook with its outputs, seconds taken).
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=240, resources={"metadata": {"path": str(root)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    return notebook, time.perf_counter() - started


def _outputs(notebook) -> list:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _run_folders(root: Path) -> dict[str, Path]:
    """The notebook's run folders under root's cache, by the name of the data each trained on."""
    folders = [path.parent for path in (root / "cache").glob("notebook-runs-quick/*/config.json")]
    return {Path(json.loads((folder / "config.json").read_text())["data"]).name: folder for folder in folders}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The notebook run once, in quick mode on the demo set: (root folder, notebook, seconds)."""
    root = tmp_path_factory.mktemp("notebook")
    with pytest.MonkeyPatch.context() as patch:
        _notebook_env(patch, root)
        notebook, seconds = _execute(root)
    return root, notebook, seconds


@pytest.mark.slow
def test_notebook_runs_in_a_fresh_kernel(demo_run):
    # How long it takes is measured in docs/BENCHMARKS.md, not asserted: the
    # CI machine's speed varies between runs (each cell has a 240 s hang guard).
    root, notebook, _ = demo_run

    outputs = _outputs(notebook)
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    # Pairs, legend, curves, per-class IoU, predictions, overlays: six figures.
    assert len(images) >= 6
    text = "".join(output.get("text", "") for output in outputs)
    assert "mean_iou" in text  # the evaluation table was printed
    [(data_name, run)] = _run_folders(root).items()
    # Named as pspnet-train names its runs: <data name>-<preset>-<head>.
    assert data_name.startswith("demo-") and run.name == f"{data_name}-fast-classes"
    assert (run / "best.keras").is_file()
    assert (run / f"notebook-eval-{data_name}" / "metrics.json").is_file()
    assert len(list((run / f"notebook-predictions-{data_name}").glob("*_ids.png"))) == 8  # the 8 val pairs


@pytest.mark.slow
def test_notebook_runs_on_pspnet_data_after_the_demo(demo_run, tmp_path, monkeypatch):
    # The same cache as the demo's run: a run folder shared by both would hold another
    # run's config.json, and train() would refuse it.
    root, _, _ = demo_run
    models = {path: path.read_bytes() for path in (root / "cache").rglob("best.keras")}
    assert models, "the demo run trained no model"
    data = tmp_path / "pairs"
    make_pairs(data / "train", 4, size=32, seed=1, split="train")
    make_pairs(data / "val", 3, size=32, seed=1, split="val")
    _notebook_env(monkeypatch, root)
    monkeypatch.setenv("PSPNET_DATA", str(data))

    notebook, _ = _execute(root)

    assert not [output for output in _outputs(notebook) if output.output_type == "error"]
    assert all(path.read_bytes() == model for path, model in models.items())  # the demo's run untouched
    runs = _run_folders(root)
    assert len(runs) == 2 and runs["pairs"].name == "pairs-fast-classes"
    assert (runs["pairs"] / "notebook-eval-pairs" / "metrics.json").is_file()
    assert len(list((runs["pairs"] / "notebook-predictions-pairs").glob("*_ids.png"))) == 3
