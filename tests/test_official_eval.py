"""pspnet-evaluate against cityscapesscripts' evalPixelLevelSemanticLabeling, the official evaluator.

On a generated set in the official layout (rectangular frames), a tiny trained
model's predictions written by ``pspnet-predict --label-ids`` are scored by
the official script (in-process, its ``main()``'s steps, with the settings
CITYSCAPES_RESULTS would give; its instance-level scores off), and the same
model is scored by ``pspnet-evaluate --data ROOT``: the class-IoU averages,
and every class's IoU, agree within 1e-4.
"""

from __future__ import annotations

import glob
import importlib
import json
import math

import cv2
import numpy as np
import pytest

pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")

from conftest import make_cityscapes

OFFICIAL = "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"


def _trained_model(root, path):
    """A 3x3-then-1x1 convolution fitted for a few epochs on the train frames, saved with its trained size."""
    import keras

    from pspnet.data.layouts import open_split
    from pspnet.models.modelfile import ModelInfo, save_model
    from pspnet.palette import NUM_CLASSES

    split = open_split(root, "train")
    photos, ids = zip(*(split.read(index) for index in range(len(split))))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 1, name="logits")(x))
    model.compile(
        keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    )
    model.fit(np.stack(photos).astype("float32"), np.stack(ids), epochs=25, batch_size=2, verbose=0)
    # Trained at half the frames' size: every prediction is made small and resized to the label's size.
    height, width = photos[0].shape[:2]
    save_model(model, path, ModelInfo(head="classes", num_classes=NUM_CLASSES, image_size=(height // 2, width // 2)))
    return path


def _official_scores(root, results, monkeypatch):
    """The official script's results on ROOT's gtFine/val and the predictions in ``results``, run as its
    ``main()`` runs (ground truth found by its search pattern, each prediction by ``getPrediction``)."""
    official = importlib.import_module(OFFICIAL)
    for name, value in (
        ("groundTruthSearch", str(root / "gtFine" / "val" / "*" / "*_gtFine_labelIds.png")),
        ("predictionPath", str(results)),  # what CITYSCAPES_RESULTS sets
        ("predictionWalk", None),
        # Its instance-level scores need *_instanceIds.png files and call np.in1d, gone from NumPy 2.4;
        # the class IoUs compared here do not depend on them.
        ("evalInstLevelScore", False),
        ("JSONOutput", False),
        ("quiet", True),
    ):
        monkeypatch.setattr(official.args, name, value)
    truths = sorted(glob.glob(official.args.groundTruthSearch))
    assert len(truths) == 3
    predictions = [official.getPrediction(official.args, truth) for truth in truths]
    return official.evaluateImgLists(predictions, truths, official.args)


def test_pspnet_evaluate_gives_the_official_class_iou_average(tmp_path, monkeypatch):
    from pspnet.cli import evaluate_main, predict_main

    root = make_cityscapes(tmp_path / "cityscapes", train=2, val=3, height=64, width=128, seed=3)
    model = _trained_model(root, tmp_path / "tiny.keras")
    out = tmp_path / "predictions"
    assert (
        predict_main(
            [
                "--model",
                str(model),
                "--input",
                str(root / "leftImg8bit" / "val"),
                "--out",
                str(out),
                "--native",
                "--label-ids",
                "--quiet",
            ]
        )
        == 0
    )
    written = sorted((out / "labelIds").iterdir())
    assert len(written) == 3 and all(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (64, 128) for path in written)
    official = _official_scores(root, out / "labelIds", monkeypatch)

    assert evaluate_main(["--model", str(model), "--data", str(root), "--out", str(tmp_path / "ours"), "--quiet"]) == 0
    ours = json.loads((tmp_path / "ours" / "metrics.json").read_text())
    assert ours["num_images"] == 3
    assert ours["mean_iou"] == pytest.approx(official["averageScoreClasses"], abs=1e-4)
    for name, iou in ours["per_class_iou"].items():
        theirs = official["classScores"][name]
        assert (iou is None) == math.isnan(theirs), name
        if iou is not None:
            assert iou == pytest.approx(theirs, abs=1e-4), name
    # Not a trivial agreement: several classes are scored, and neither perfectly nor not at all.
    scored = [iou for iou in ours["per_class_iou"].values() if iou is not None]
    assert len(scored) >= 3 and 0.0 < ours["mean_iou"] < 1.0
