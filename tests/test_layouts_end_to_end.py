"""Every command on generated sets of each layout: train one epoch, evaluate, predict and export.

A 5-class folders set of non-square images (names and colours from its
dataset.json) and the official Cityscapes layout with frames larger than the
crop, driven through the command-line entry points as a user runs them.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import make_cityscapes, make_folders, make_pairs

from pspnet.cli import EXIT_ERROR, evaluate_main, export_main, predict_main, train_main

pytestmark = pytest.mark.slow

# One short epoch of 32 px crops from images fitted into 32x64.
TRAIN_FLAGS = [
    "--preset",
    "fast",
    "--base-size",
    "32",
    "64",
    "--crop-size",
    "32",
    "--batch-size",
    "2",
    "--epochs",
    "1",
    "--steps-per-epoch",
    "3",
    "--workers",
    "1",
    "--verbose",
    "0",
]


def _generated(kind: str, root):
    if kind == "folders":
        return make_folders(root, train=4, val=2, height=48, width=80)  # 5 classes, 48x80 images
    return make_cityscapes(root, train=3, val=2, height=64, width=128)  # frames twice the base, four crops


@pytest.fixture(scope="module", params=["folders", "cityscapes"])
def trained(request, tmp_path_factory):
    """(layout, data root, run folder) after one epoch of pspnet-train on that layout."""
    base = tmp_path_factory.mktemp(request.param)
    root = _generated(request.param, base / "data")
    run = base / "run"
    assert train_main(["--data", str(root), "--out", str(run), *TRAIN_FLAGS]) == 0
    return request.param, root, run


def _class_names(root, layout: str) -> list[str]:
    if layout == "folders":
        return [entry["name"] for entry in json.loads((root / "dataset.json").read_text())["classes"]]
    from pspnet.data.classes import CITYSCAPES

    return list(CITYSCAPES.names)


def test_evaluate_scores_the_val_split_of_the_root_with_the_data_sets_classes(trained, tmp_path):
    layout, root, run = trained
    out = tmp_path / "eval"
    assert evaluate_main(["--model", str(run / "best.keras"), "--data", str(root), "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["per_class_iou"]) == _class_names(root, layout)
    assert metrics["num_images"] == 2 and metrics["layout"] == layout and metrics["split"] == "val"
    assert 0.0 <= metrics["pixel_accuracy"] <= 1.0


def test_predict_writes_maps_at_each_photos_size_in_the_models_colours(trained, tmp_path):
    layout, root, run = trained
    photos = root / ("images/val" if layout == "folders" else "leftImg8bit/val")
    out = tmp_path / "predictions"
    assert predict_main(["--model", str(run / "best.keras"), "--input", str(photos), "--out", str(out), "--quiet"]) == 0
    ids_files = sorted(out.glob("*_ids.png"))
    assert len(ids_files) == 2
    height, width = (48, 80) if layout == "folders" else (64, 128)
    names = _class_names(root, layout)
    for path in ids_files:
        ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert ids.shape == (height, width) and int(ids.max()) < len(names)
        colour = cv2.imread(str(path).replace("_ids.png", "_color.png"))[..., ::-1]
        if layout == "folders":  # painted with dataset.json's colours, not the Cityscapes palette
            table = np.array([entry["color"] for entry in json.loads((root / "dataset.json").read_text())["classes"]])
            np.testing.assert_array_equal(colour, table[ids])


def test_export_carries_the_class_table(trained, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    layout, root, run = trained
    out = tmp_path / "model.onnx"
    assert (
        export_main(
            ["--model", str(run / "best.keras"), "--format", "onnx", "--out", str(out), "--check-data", str(root)]
        )
        == 0
    )
    description = json.loads((tmp_path / "model.onnx.json").read_text())
    assert list(description["classes"]) == _class_names(root, layout)
    assert description["ignore_index"] == 255 and len(description["colors"]) == len(description["classes"])


def test_a_model_is_refused_on_a_data_set_of_other_classes(trained, tmp_path, capsys):
    layout, root, run = trained
    other = _generated("cityscapes" if layout == "folders" else "folders", tmp_path / "other")
    capsys.readouterr()
    status = evaluate_main(
        ["--model", str(run / "best.keras"), "--data", str(other), "--out", str(tmp_path / "eval"), "--quiet"]
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert status == EXIT_ERROR and len(error) == 1 and "other classes" in error[0]
    assert not (tmp_path / "eval").exists()  # nothing written


def test_a_cityscapes_model_evaluates_on_the_pairs_which_share_its_classes(trained, tmp_path):
    layout, _, run = trained
    if layout != "cityscapes":
        pytest.skip("the folders set has classes of its own")
    pairs = make_pairs(tmp_path / "pairs" / "val", 2, size=32, split="val").parent
    out = tmp_path / "eval"
    assert evaluate_main(["--model", str(run / "best.keras"), "--data", str(pairs), "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layout"] == "pairs" and metrics["num_images"] == 2
