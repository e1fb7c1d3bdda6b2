"""Tests for pspnet.inference.evaluate and pspnet-evaluate on tiny generated pairs and hand-made models."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from pspnet.cli import evaluate_main  # noqa: E402
from pspnet.errors import ConfigError  # noqa: E402
from pspnet.inference.evaluate import EvalConfig, evaluate, format_table  # noqa: E402
from pspnet.models.modelfile import describe_model  # noqa: E402
from pspnet.palette import CLASS_NAMES, CLASSES, NUM_CLASSES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ROAD, VEGETATION, CAR = 0, 8, 13
# Photo colour (RGB) that stands for each class: the oracle reads it back.
PHOTO_CODES = {ROAD: (200, 0, 0), VEGETATION: (0, 200, 0), CAR: (0, 0, 200)}
# (left half, right half) class of each 32x32 sample; the last has a void top.
LAYOUTS = [(ROAD, CAR), (VEGETATION, ROAD), (CAR, VEGETATION)]
METRIC_KEYS = ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou", "per_class_iou")


def _write_split(folder: Path) -> Path:
    """Writes three 32x64 composites: photo left, colour label right.

    Regions are 16-pixel aligned and JPEG chroma is not subsampled, so the
    flat colours survive compression and decode exactly.
    """
    folder.mkdir(parents=True)
    for index, (left, right) in enumerate(LAYOUTS, start=1):
        photo = np.zeros((32, 32, 3), np.uint8)
        label = np.zeros((32, 32, 3), np.uint8)
        for class_id, columns in ((left, slice(0, 16)), (right, slice(16, 32))):
            photo[:, columns] = PHOTO_CODES[class_id]
            label[:, columns] = CLASSES[class_id].color
        if index == len(LAYOUTS):
            label[:16] = (0, 0, 0)  # void (unlabeled): must be ignored
        composite = np.concatenate([photo, label], axis=1)[..., ::-1]  # RGB -> BGR
        cv2.imwrite(
            str(folder / f"{index}.jpg"),
            composite,
            [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
        )
    return folder


def _oracle_logits(inputs):
    """A 1x1 convolution whose logits pick the class coded by the photo colour."""
    layer = keras.layers.Conv2D(NUM_CLASSES, 1, name="oracle_logits")
    outputs = layer(inputs)
    kernel = np.zeros((1, 1, 3, NUM_CLASSES), np.float32)
    bias = np.full((NUM_CLASSES,), -100.0, np.float32)
    for class_id, code in PHOTO_CODES.items():
        kernel[0, 0, int(np.argmax(code)), class_id] = 1.0
        bias[class_id] = 0.0
    layer.set_weights([kernel, bias])
    return outputs


def _save(model, path: Path) -> Path:
    model.save(path)
    return path


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return _write_split(tmp_path_factory.mktemp("data") / "val")


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """Points the split cache at a temporary folder, so tests never write to ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PSPNET_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def oracle_path(tmp_path_factory):
    # A fixed 16x16 input: photos are resized down and logits back up.
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, _oracle_logits(inputs))
    return _save(model, tmp_path_factory.mktemp("oracle") / "best.keras")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(NUM_CLASSES, 1)(x)
    model = keras.Model(inputs, outputs)
    return _save(model, tmp_path_factory.mktemp("tiny") / "model.keras")


def test_cli_writes_metrics_json_with_every_key_and_the_figure(split, tiny_path, tmp_path, capsys):
    code = evaluate_main(
        [
            "--model",
            str(tiny_path),
            "--data",
            str(split.parent),
            "--out",
            str(tmp_path / "out"),
            "--batch-size",
            "2",
            "--image-size",
            "32",
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert key in metrics
    assert list(metrics["per_class_iou"]) == list(CLASS_NAMES)
    assert metrics["num_images"] == 3 and metrics["head"] == "classes"
    assert metrics["data"] == str(split)  # the data folder's val/ was used
    assert metrics["image_size"] == [32, 32]
    assert 0.0 <= metrics["pixel_accuracy"] <= 1.0
    # The confusion matrix counts every labelled pixel: 3 x 32 x 32 minus the void 16 x 32.
    assert np.sum(metrics["confusion_matrix"]) == 3 * 32 * 32 - 16 * 32
    png = tmp_path / "out" / "confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "mean_iou" in printed and "vegetation" in printed


def test_oracle_scores_perfectly_and_absent_classes_are_null(split, oracle_path, tmp_path):
    results = evaluate(EvalConfig(model=oracle_path, data=split, out=tmp_path, batch_size=2, verbose=False))
    assert results["image_size"] == [16, 16]  # the model's own input size
    assert results["mean_iou"] == pytest.approx(1.0)
    assert results["pixel_accuracy"] == pytest.approx(1.0)
    assert results["frequency_weighted_iou"] == pytest.approx(1.0)
    present = {CLASS_NAMES[i] for i in PHOTO_CODES}
    for name, value in results["per_class_iou"].items():
        assert (value == pytest.approx(1.0)) if name in present else math.isnan(value)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["per_class_iou"]["sky"] is None
    assert written["mean_class_accuracy"] == pytest.approx(1.0)


def test_flip_tta_maps_predictions_back(split, oracle_path, tmp_path):
    # Left and right halves differ, so a mirrored prediction left unmirrored would score 0.
    results = evaluate(
        EvalConfig(model=oracle_path, data=split, out=tmp_path, batch_size=3, tta_flip=True, verbose=False)
    )
    assert results["tta"] is True
    assert results["pixel_accuracy"] == pytest.approx(1.0)


def test_dict_output_model_is_scored_on_main(split, tmp_path):
    inputs = keras.Input((None, None, 3))
    junk = keras.layers.Conv2D(NUM_CLASSES, 1, name="aux")(inputs)
    main = keras.layers.Identity(name="main")(_oracle_logits(inputs))
    model = keras.Model(inputs, {"aux": junk, "main": main})
    path = _save(model, tmp_path / "dict.keras")
    results = evaluate(EvalConfig(model=path, data=split, out=tmp_path, image_size=32, verbose=False))
    assert results["mean_iou"] == pytest.approx(1.0)


def test_rgb_head_is_scored_by_decoding_its_colours(split, tmp_path):
    # A sigmoid colour head that paints everything road.
    road = np.array(CLASSES[ROAD].color, np.float64) / 255.0
    inputs = keras.Input((32, 32, 3))
    head = keras.layers.Conv2D(3, 1, activation="sigmoid", name="last_conv")
    model = keras.Model(inputs, head(inputs))
    head.set_weights([np.zeros((1, 1, 3, 3), np.float32), np.log(road / (1 - road)).astype(np.float32)])
    assert describe_model(model).head == "rgb"
    path = _save(model, tmp_path / "rgb.keras")
    results = evaluate(EvalConfig(model=path, data=split, out=tmp_path, verbose=False))
    assert results["head"] == "rgb"
    # Truth: road 2 halves, car 1.5 halves, vegetation 1.5 halves (of 512 px each).
    assert results["per_class_iou"]["road"] == pytest.approx(1024 / 2560)
    assert results["per_class_iou"]["car"] == 0.0
    assert results["per_class_iou"]["vegetation"] == 0.0
    assert results["pixel_accuracy"] == pytest.approx(1024 / 2560)
    assert results["mean_iou"] == pytest.approx((1024 / 2560) / 3)


def test_seed_style_flattened_rgb_output_is_described_and_reshaped(split, tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(3, 1, name="last_conv")(inputs)
    x = keras.layers.Activation("sigmoid", name="last_conv_relu")(x)
    model = keras.Model(inputs, keras.layers.Flatten(name="last_conv_flatten")(x))
    assert describe_model(model).head == "rgb"
    path = _save(model, tmp_path / "seed.keras")
    results = evaluate(EvalConfig(model=path, data=split, out=tmp_path, verbose=False))
    assert results["head"] == "rgb" and results["num_images"] == 3


@pytest.mark.parametrize("head", ["classes", "rgb"])
def test_built_pspnet_loads_and_scores_with_its_head(split, tmp_path, head):
    from pspnet import build_pspnet

    model = build_pspnet("fast", input_shape=(32, 32, 3), head=head)
    assert describe_model(model).head == head
    path = _save(model, tmp_path / "best.keras")
    results = evaluate(EvalConfig(model=path, data=split, batch_size=2, verbose=False))
    assert results["head"] == head and results["num_images"] == 3
    assert 0.0 <= results["pixel_accuracy"] <= 1.0


def test_classes_head_with_wrong_channel_count_is_one_clear_error(split, tmp_path, capsys):
    from pspnet.models.modelfile import ModelInfo, save_model

    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(5, 1)(inputs))
    path = tmp_path / "five.keras"
    save_model(model, path, ModelInfo(head="classes", num_classes=19))  # its file says 19
    assert evaluate_main(["--model", str(path), "--data", str(split), "--quiet"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("pspnet-evaluate: error:") and "must output 19 channels" in error
    assert "five.keras" in error and "\n" not in error
    # Saved without a description, its 5 channels are 5 classes that nothing names.
    _save(model, path)
    assert evaluate_main(["--model", str(path), "--data", str(split), "--quiet"]) == 1
    assert capsys.readouterr().err == (
        f"pspnet-evaluate: error: the model predicts 5 classes but does not say which: {path}\n"
    )


def test_fixed_size_model_rejects_another_image_size(split, oracle_path, capsys):
    assert evaluate_main(["--model", str(oracle_path), "--data", str(split), "--image-size", "32", "--quiet"]) == 1
    assert "takes 16x16 images" in capsys.readouterr().err


def test_default_out_dir_is_a_folder_of_its_own_beside_the_model(split, tmp_path):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, _oracle_logits(inputs))
    (tmp_path / "run").mkdir()
    path = _save(model, tmp_path / "run" / "best.keras")
    results = evaluate(EvalConfig(model=path, data=split, image_size=32, verbose=False))
    assert results["out"] == str(tmp_path / "run" / "eval-best-val")
    for name in ("metrics.json", "confusion_matrix.png", "per_class_iou.png"):
        assert (tmp_path / "run" / "eval-best-val" / name).is_file()
    assert not (tmp_path / "run" / "metrics.json").exists()
    flipped = evaluate(EvalConfig(model=path, data=split, image_size=32, tta_flip=True, verbose=False))
    assert flipped["out"] == str(tmp_path / "run" / "eval-best-val-tta")


def test_data_demo_scores_the_training_demo_val_split(tmp_path):
    from pspnet.data.synth import DEMO_SIZE, DEMO_VAL

    inputs = keras.Input((DEMO_SIZE, DEMO_SIZE, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 1)(inputs))
    path = _save(model, tmp_path / "demo.keras")
    results = evaluate(EvalConfig(model=path, data="demo", batch_size=8, verbose=False))
    assert results["num_images"] == DEMO_VAL
    assert Path(results["data"]).name == "val" and Path(results["data"]).is_dir()


def test_skip_bad_scores_the_readable_files_and_warns_once(split, oracle_path, tmp_path, capsys):
    import shutil

    folder = tmp_path / "val"
    shutil.copytree(split, folder)
    (folder / "4.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off")
    args = [
        "--model",
        str(oracle_path),
        "--data",
        str(folder),
        "--out",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--batch-size",
        "2",
        "--quiet",
    ]
    assert evaluate_main(args) == 1  # without --skip-bad the file stops the run
    assert capsys.readouterr().err == (
        f"pspnet-evaluate: error: truncated JPEG (no end-of-image marker): {folder / '4.jpg'}\n"
    )
    assert evaluate_main([*args, "--skip-bad"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pspnet-evaluate: warning: skipped 1 unusable file")
    assert "4.jpg" in lines[0]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["mean_iou"] == pytest.approx(1.0)


def test_format_table_lists_classes_and_na():
    table = format_table(
        {
            "per_class_iou": {"road": 0.5, "sky": float("nan")},
            "per_class_accuracy": {"road": 0.75, "sky": float("nan")},
            "mean_iou": 0.5,
            "pixel_accuracy": 0.75,
            "mean_class_accuracy": 0.75,
            "frequency_weighted_iou": 0.5,
        }
    )
    lines = table.splitlines()
    assert lines[2].split() == ["road", "0.500", "0.750"]
    assert lines[3].split() == ["sky", "n/a", "n/a"]
    assert "mean_iou" in table


# TensorFlow's native start-up log (cudart_stub, cpu_feature_guard) reaches stderr
# before absl is initialised, whatever TF_CPP_MIN_LOG_LEVEL says: not ours to judge.
TF_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} |To enable the following)")


def _run_cli(*args):
    """Runs scripts/evaluate.py; returns (exit code, stderr lines of our own)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "evaluate.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = [line for line in done.stderr.splitlines() if line and not TF_NATIVE_LOG.match(line)]
    return done.returncode, lines


def test_bad_model_path_is_one_line_without_traceback(split, tmp_path):
    code, lines = _run_cli("--model", str(tmp_path / "missing.keras"), "--data", str(split))
    assert code == 1
    assert lines == [f"pspnet-evaluate: error: model file not found: {tmp_path / 'missing.keras'}"]


def test_bad_data_path_and_corrupt_model_file_are_one_line(split, tmp_path, capsys):
    # In-process (an escaping exception would fail the test): saves a 15 s start-up.
    nowhere = tmp_path / "nowhere"
    assert evaluate_main(["--model", str(tmp_path / "x.keras"), "--data", str(nowhere)]) == 1
    assert capsys.readouterr().err == f"pspnet-evaluate: error: data folder not found: {nowhere}\n"

    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    assert evaluate_main(["--model", str(corrupt), "--data", str(split), "--quiet"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("pspnet-evaluate: error: model file is damaged")
    assert error.endswith("corrupt.keras")
    assert "\n" not in error


def test_an_output_path_at_or_under_a_file_is_refused_before_scoring(split, oracle_path, tmp_path, monkeypatch):
    # Found only at the first write, it cost the whole (hours long, with --slide) scoring first.
    from pspnet.inference import evaluate as module

    monkeypatch.setattr(module, "_score", lambda *args: pytest.fail("scored before the output was checked"))
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n")
    for out in (taken, taken / "eval"):
        with pytest.raises(ConfigError, match=re.escape(f"not a folder: {taken}")):
            evaluate(EvalConfig(oracle_path, split, out=out, verbose=False))
    assert taken.read_text() == "mine\n"


def test_scores_another_run_wrote_during_the_scoring_are_not_replaced(split, oracle_path, tmp_path, monkeypatch):
    # Two runs of two models on one --out both passed the check before the (long) scoring.
    from pspnet.inference import evaluate as module

    out, other = tmp_path / "eval", tmp_path / "other.keras"
    theirs = json.dumps({"model": str(other), "data": str(split), "model_file": str(other), "data_folder": str(split)})
    score = module._score

    def score_while_another_writes(*args):
        out.mkdir()
        (out / "metrics.json").write_text(theirs)
        return score(*args)

    monkeypatch.setattr(module, "_score", score_while_another_writes)
    with pytest.raises(ConfigError, match=re.escape(f"{out} holds the scores of {other}")):
        evaluate(EvalConfig(oracle_path, split, out=out, verbose=False))
    assert (out / "metrics.json").read_text() == theirs


def test_bad_flag_is_one_usage_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--model", "m.keras", "--data", "d", "--batch-size", "two"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("pspnet-evaluate: error: argument --batch-size") and "\n" not in error


def test_scores_of_another_data_set_or_model_never_replace_a_folders_scores(
    split, oracle_path, tiny_path, tmp_path, capsys
):
    import shutil

    (tmp_path / "run").mkdir()
    model = Path(shutil.copy(oracle_path, tmp_path / "run" / "best.keras"))
    assert evaluate_main(["--model", str(model), "--data", str(split), "--quiet"]) == 0
    metrics = tmp_path / "run" / "eval-best-val" / "metrics.json"
    before = metrics.read_bytes()
    assert json.loads(before)["data_folder"] == str(split.resolve())
    # Another folder also named val, two of the images: the default folder is the same name.
    other = tmp_path / "other" / "val"
    other.mkdir(parents=True)
    for name in ("1.jpg", "2.jpg"):
        shutil.copy(split / name, other / name)
    assert evaluate_main(["--model", str(model), "--data", str(other), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pspnet-evaluate: error: {metrics.parent} holds the scores of "), (
        err
    )
    assert str(split.resolve()) in err and "--out" in err
    # Another model into that folder (--out): refused too.
    assert (
        evaluate_main(
            [
                "--model",
                str(tiny_path),
                "--data",
                str(split),
                "--out",
                str(metrics.parent),
                "--image-size",
                "16",
                "--quiet",
            ]
        )
        == 1
    )
    assert str(model.resolve()) in capsys.readouterr().err
    assert metrics.read_bytes() == before
    # The same model on the same data replaces its own scores.
    assert evaluate_main(["--model", str(model), "--data", str(split), "--quiet"]) == 0


# --- the cityscapes and folders layouts -------------------------------------------------------------


def _saved(tmp_path, name, num_classes, image_size, classes=None, kernel=1):
    """A tiny any-size model saved with its description (trained size, class table)."""
    from pspnet.models.modelfile import ModelInfo, save_model

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Conv2D(num_classes, kernel, padding="same", name="logits")(x)
    path = tmp_path / name
    info = ModelInfo(
        head="classes",
        num_classes=num_classes,
        image_size=image_size,
        classes=None if classes is None else classes.to_json(),
    )
    save_model(keras.Model(inputs, outputs), path, info)
    return path


def test_a_cityscapes_root_is_scored_on_its_val_split_at_the_labels_full_size(tmp_path, capsys):
    from conftest import make_cityscapes

    from pspnet.data.layouts import open_split

    root = make_cityscapes(tmp_path / "cs", train=1, val=3, height=64, width=128)
    model = _saved(tmp_path, "m.keras", NUM_CLASSES, (32, 64), kernel=3)
    assert evaluate_main(["--model", str(model), "--data", str(root), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "eval-m-val" / "metrics.json").read_text())
    split = open_split(root, "val")
    labelled = sum(int((split.read_label(i) != 255).sum()) for i in range(len(split)))
    assert metrics["num_images"] == 3 and metrics["layout"] == "cityscapes" and metrics["split"] == "val"
    assert sum(map(sum, metrics["confusion_matrix"])) == labelled  # every 64x128 label pixel, none resized
    assert metrics["inference"] == {
        "mode": "whole",
        "crop": None,
        "stride": None,
        "scales": [1.0],
        "flip": False,
        "keep_aspect": True,
        "base_size": [32, 64],
    }
    assert list(metrics["per_class_iou"]) == list(CLASS_NAMES)
    assert (
        evaluate_main(
            [
                "--model",
                str(model),
                "--data",
                str(root),
                "--split",
                "train",
                "--quiet",
                "--out",
                str(tmp_path / "train"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "train" / "metrics.json").read_text())["num_images"] == 1


def test_sliding_windows_and_scales_are_recorded_and_get_folders_of_their_own(tmp_path):
    from conftest import make_cityscapes

    root = make_cityscapes(tmp_path / "cs", train=1, val=2, height=64, width=128)
    model = _saved(tmp_path, "m.keras", NUM_CLASSES, (64, 128))  # 1x1: windows change nothing
    whole = evaluate(EvalConfig(model=model, data=root, verbose=False))
    slide = evaluate(EvalConfig(model=model, data=root, slide=(32, 24), verbose=False))
    assert Path(slide["out"]).name == "eval-m-val-slide" and Path(whole["out"]).name == "eval-m-val"
    assert slide["inference"]["mode"] == "slide" and slide["inference"]["crop"] == [32, 32]
    assert slide["inference"]["stride"] == [24, 24]
    assert slide["confusion_matrix"] == whole["confusion_matrix"]
    scaled = evaluate(EvalConfig(model=model, data=root, scales=(0.5, 1.0), tta_flip=True, verbose=False))
    assert Path(scaled["out"]).name == "eval-m-val-ms-tta"
    assert scaled["inference"]["scales"] == [0.5, 1.0] and scaled["inference"]["flip"] is True


def test_cli_slide_scales_and_base_size_flags(tmp_path, capsys):
    from conftest import make_cityscapes

    root = make_cityscapes(tmp_path / "cs", train=1, val=1, height=64, width=128)
    model = _saved(tmp_path, "m.keras", NUM_CLASSES, (64, 128))
    assert (
        evaluate_main(
            [
                "--model",
                str(model),
                "--data",
                str(root),
                "--slide",
                "32x64",
                "16x32",
                "--scales",
                "0.5",
                "1",
                "--base-size",
                "32",
                "64",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "32x64 windows every 16x32 of photos fitted into 32x64 at scales 0.5, 1" in out
    inference = json.loads((tmp_path / "o" / "metrics.json").read_text())["inference"]
    assert inference["base_size"] == [32, 64] and inference["crop"] == [32, 64] and inference["scales"] == [0.5, 1.0]
    assert evaluate_main(["--model", str(model), "--data", str(root), "--slide", "16", "32", "--quiet"]) == 1
    assert capsys.readouterr().err.startswith("pspnet-evaluate: error: the slide stride 32x32 exceeds the crop 16x16")
    assert evaluate_main(["--model", str(model), "--data", str(root), "--scales", "0", "--quiet"]) == 1
    assert "scales must be one or more numbers above 0" in capsys.readouterr().err


def test_a_five_class_folders_set_is_scored_with_its_own_names(tmp_path):
    from conftest import make_folders

    from pspnet.data.classes import read_dataset_json

    root = make_folders(tmp_path / "f", train=1, val=2, height=48, width=80)
    table = read_dataset_json(root / "dataset.json")
    model = _saved(tmp_path, "five.keras", 5, (48, 80), classes=table)
    results = evaluate(EvalConfig(model=model, data=root, verbose=False))
    assert list(results["per_class_iou"]) == list(table.names) and len(results["confusion_matrix"]) == 5
    assert results["layout"] == "folders" and results["num_images"] == 2


def test_a_model_of_other_classes_is_refused_in_one_line_naming_both(tmp_path, capsys):
    from conftest import make_folders

    root = make_folders(tmp_path / "f", train=1, val=1)
    model = _saved(tmp_path, "cityscapes.keras", NUM_CLASSES, (48, 80))
    assert evaluate_main(["--model", str(model), "--data", str(root), "--quiet"]) == 1
    assert capsys.readouterr().err == (
        "pspnet-evaluate: error: the model was trained on other classes than the data set's (19 classes against "
        f"5, the model's first): {model} against {root / 'dataset.json'}\n"
    )
    assert not (tmp_path / "eval-cityscapes-val").exists()


def test_layout_forces_how_a_root_is_read(tmp_path, capsys):
    from conftest import make_cityscapes

    root = make_cityscapes(tmp_path / "cs", train=1, val=1)
    model = _saved(tmp_path, "m.keras", NUM_CLASSES, (64, 128))
    assert evaluate_main(["--model", str(model), "--data", str(root), "--layout", "folders", "--quiet"]) == 1
    assert "dataset.json" in capsys.readouterr().err
