"""pspnet.inference.predict and pspnet-predict on tiny untrained models and generated pairs."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, make_pairs

from pspnet.data.inputs import read_input
from pspnet.errors import ConfigError, DataError, PspnetWarning
from pspnet.inference.predict import PredictConfig, predict
from pspnet.inference.predict_folder import MANIFEST
from pspnet.palette import NUM_CLASSES

SUFFIXES = ("color", "overlay", "ids")


@pytest.fixture(scope="module")
def any_size_model(tmp_path_factory) -> Path:
    """An untrained fast PSPNet taking any input size, saved as .keras."""
    import pspnet

    model = pspnet.build_pspnet("fast", input_shape=(None, None, 3))
    path = tmp_path_factory.mktemp("model") / "any.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def fixed_model(tmp_path_factory) -> Path:
    """An untrained seed-preset rgb-head model fixed at 32x32, saved as .keras."""
    import pspnet

    model = pspnet.build_pspnet("seed", input_shape=(32, 32, 3), head="rgb")
    path = tmp_path_factory.mktemp("model") / "rgb32.keras"
    model.save(path)
    return path


@pytest.fixture
def pairs(tmp_path) -> Path:
    """A folder of three 32x64 generated composites."""
    return make_pairs(tmp_path / "pairs", 3, size=32, seed=1, split="val")


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def test_folder_of_pairs_writes_every_picture(any_size_model, pairs, tmp_path):
    out = tmp_path / "out"
    result = predict(PredictConfig(any_size_model, pairs, out, batch_size=2, verbose=False))
    assert result["num_images"] == 3
    assert result["image_size"] == [256, 256]  # any-size models run at 256 by default
    assert result["head"] == "classes"
    expected = {f"{n}_{suffix}.png" for n in (1, 2, 3) for suffix in SUFFIXES}
    assert {p.name for p in out.iterdir()} == expected | {"inputs.csv", MANIFEST}
    assert len(result["files"]) == 9
    assert result["read_as"] == {str(pairs / f"{n}.jpg"): "composite" for n in (1, 2, 3)}
    for n in (1, 2, 3):
        # The left half only: 32x32 pictures for 32x64 composites.
        assert _read(out / f"{n}_color.png").shape == (32, 32, 3)
        assert _read(out / f"{n}_overlay.png").shape == (32, 32, 3)
        ids = _read(out / f"{n}_ids.png")
        assert ids.shape == (32, 32) and ids.dtype == np.uint8
        assert ids.max() < NUM_CLASSES


def test_color_png_is_the_palette_of_the_ids(any_size_model, pairs, tmp_path):
    from pspnet.inference.viz import colorize

    out = tmp_path / "out"
    predict(PredictConfig(any_size_model, pairs / "2.jpg", out, verbose=False))
    ids = _read(out / "2_ids.png")
    color = cv2.cvtColor(_read(out / "2_color.png"), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(color, colorize(ids))


def test_single_plain_photo_keeps_its_size(any_size_model, pairs, tmp_path):
    photo = read_input(pairs / "1.jpg").photo
    wide = cv2.resize(photo, (48, 40))  # not 2:1, so a plain photo
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), cv2.cvtColor(wide, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    predict(PredictConfig(any_size_model, path, out, verbose=False))
    assert sorted(p.name for p in out.iterdir()) == [
        "inputs.csv",
        MANIFEST,
        *(f"street_{s}.png" for s in sorted(SUFFIXES)),
    ]
    assert _read(out / "street_ids.png").shape == (40, 48)


def test_a_redo_that_fails_mid_write_keeps_the_pictures_whole(any_size_model, pairs, tmp_path, monkeypatch):
    # The same model may redo its folder; a write cut short (full disk, Ctrl-C) must leave the old
    # picture, not a truncated PNG under its name, and no temporary file.
    out = tmp_path / "out"
    config = PredictConfig(any_size_model, pairs / "1.jpg", out, with_truth=True, verbose=False)
    predict(config)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    write_bytes = Path.write_bytes

    def half_then_full_disk(self, data):
        write_bytes(self, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full_disk)
    with pytest.raises(OSError, match="No space left"):
        predict(config)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_native_size_and_pairs_never(any_size_model, pairs, tmp_path):
    out = tmp_path / "out"
    result = predict(PredictConfig(any_size_model, pairs / "1.jpg", out, native=True, pairs="never", verbose=False))
    # Native: the 32x64 photo at the model's trained scale (256x256: its file does not say), aspect kept.
    assert result["native"] is True and result["image_size"] == [256, 256]
    assert result["run_sizes"] == {str(pairs / "1.jpg"): [128, 256]}
    # pairs="never": the whole 32x64 composite is one photo.
    assert _read(out / "1_ids.png").shape == (32, 64)


def test_with_truth_writes_a_panel(any_size_model, pairs, tmp_path):
    out = tmp_path / "out"
    predict(PredictConfig(any_size_model, pairs, out, with_truth=True, verbose=False))
    for n in (1, 2, 3):
        panel = _read(out / f"{n}_panel.png")
        # Three panels side by side: much wider than high.
        assert panel.ndim == 3 and panel.shape[1] > 2.5 * panel.shape[0]


def test_rgb_head_is_decoded_to_train_ids(fixed_model, pairs, tmp_path):
    out = tmp_path / "out"
    result = predict(PredictConfig(fixed_model, pairs, out, verbose=False))
    assert result["head"] == "rgb" and result["image_size"] == [32, 32]
    ids = _read(out / "1_ids.png")
    assert ids.shape == (32, 32)
    assert set(np.unique(ids)) <= set(range(NUM_CLASSES)) | {255}


def test_native_on_fixed_size_model_is_refused(fixed_model, pairs, tmp_path):
    with pytest.raises(ConfigError, match="--native needs a model that takes any size"):
        predict(PredictConfig(fixed_model, pairs, tmp_path / "out", native=True, verbose=False))


def test_inputs_sharing_a_stem_get_distinct_names(any_size_model, pairs, tmp_path):
    photo = read_input(pairs / "1.jpg").photo
    cv2.imwrite(str(pairs / "1.png"), cv2.cvtColor(cv2.resize(photo, (48, 40)), cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    predict(PredictConfig(any_size_model, pairs, out, verbose=False))
    names = {p.name for p in out.iterdir()}
    assert {f"1_jpg_{s}.png" for s in SUFFIXES} | {f"1_png_{s}.png" for s in SUFFIXES} <= names
    assert _read(out / "1_png_ids.png").shape == (40, 48) and _read(out / "1_jpg_ids.png").shape == (32, 32)
    assert f"2_{SUFFIXES[0]}.png" in names


def test_corrupt_file_stops_after_the_good_ones(any_size_model, pairs, tmp_path):
    (pairs / "4.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=re.escape(str(pairs / "4.jpg"))):
        predict(PredictConfig(any_size_model, pairs, out, batch_size=4, verbose=False))
    # The three images read before it were predicted and written.
    assert {p.name for p in out.iterdir()} == {f"{n}_{s}.png" for n in (1, 2, 3) for s in SUFFIXES} | {MANIFEST}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_greyscale_16_bit_and_alpha_pngs_are_predicted(any_size_model, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rows, columns = np.mgrid[0:32, 0:48]
    cv2.imwrite(str(folder / "grey.png"), (rows * 4 + columns).astype(np.uint8))  # (32, 48), one channel
    deep = np.random.default_rng(1).integers(0, 65536, (32, 48, 3), dtype=np.uint16)
    cv2.imwrite(str(folder / "deep.png"), deep)
    cv2.imwrite(str(folder / "alpha.png"), np.random.default_rng(2).integers(0, 256, (32, 48, 4), dtype=np.uint8))
    out = tmp_path / "out"
    result = predict(PredictConfig(any_size_model, folder, out, batch_size=2, verbose=False))
    assert result["num_images"] == 3
    for name in ("grey", "deep", "alpha"):
        assert _read(out / f"{name}_ids.png").shape == (32, 48)
        assert _read(out / f"{name}_overlay.png").shape == (32, 48, 3)
    notes = {Path(row["file"]).name: row["notes"] for row in _read_csv(out / "inputs.csv")}
    assert notes == {"alpha.png": "", "deep.png": "16-bit converted", "grey.png": "greyscale converted"}


def test_inputs_csv_and_closing_line_say_how_files_were_read(any_size_model, pairs, tmp_path, capsys):
    rows, columns = np.mgrid[0:32, 0:64]
    cv2.imwrite(str(pairs / "4.png"), np.stack([columns * 4, rows * 8, 255 - columns * 4], -1).astype(np.uint8))
    out = tmp_path / "out"
    result = predict(PredictConfig(any_size_model, pairs, out, batch_size=2))
    assert result["read_as"] == {
        **{str(pairs / f"{n}.jpg"): "composite" for n in (1, 2, 3)},
        str(pairs / "4.png"): "photo",
    }
    table = _read_csv(out / "inputs.csv")
    assert [(row["file"], row["read_as"]) for row in table] == list(result["read_as"].items())
    assert f"4 images (3 composites, 1 photo): wrote 12 files and inputs.csv to {out}" in capsys.readouterr().out


def test_skip_bad_skips_a_corrupt_image_with_one_warning(any_size_model, pairs, tmp_path):
    (pairs / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predict(PredictConfig(any_size_model, pairs, out, batch_size=2, skip_bad=True, verbose=False))
    messages = [str(w.message) for w in caught if issubclass(w.category, PspnetWarning)]
    assert len(messages) == 1 and str(pairs / "2.jpg") in messages[0]
    assert result["num_images"] == 2 and result["skipped"] == [str(pairs / "2.jpg")]
    assert {p.name for p in out.iterdir()} == {f"{n}_{s}.png" for n in (1, 3) for s in SUFFIXES} | {
        "inputs.csv",
        MANIFEST,
    }
    assert [row["read_as"] for row in _read_csv(out / "inputs.csv")] == ["composite", "skipped", "composite"]


def test_cli_skip_bad_is_one_warning_line(any_size_model, pairs, tmp_path, capsys):
    from pspnet.cli import predict_main

    (pairs / "1.jpg").write_bytes(b"garbage")
    out = tmp_path / "out"
    code = predict_main(
        [
            "--model",
            str(any_size_model),
            "--input",
            str(pairs),
            "--out",
            str(out),
            "--quiet",
            "--batch-size",
            "2",
            "--skip-bad",
        ]
    )
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pspnet-predict:")]
    assert lines == [f"pspnet-predict: warning: skipped an unusable image: not a JPEG or PNG image: {pairs / '1.jpg'}"]
    assert (out / "2_ids.png").is_file() and (out / "3_ids.png").is_file()


def test_failing_first_input_leaves_no_output_folder(any_size_model, pairs, tmp_path):
    (pairs / "1.jpg").write_bytes(b"")
    out = tmp_path / "new" / "out"
    with pytest.raises(DataError, match=re.escape(f"empty file: {pairs / '1.jpg'}")):
        predict(PredictConfig(any_size_model, pairs, out, verbose=False))
    assert not (tmp_path / "new").exists()


def test_an_output_folder_that_is_read_as_input_is_refused(any_size_model, pairs, tmp_path):
    # Written into the input folder, 1.jpg's 1_color.png would replace the photo 1_color.png, and a
    # second run would predict the first run's pictures; a sub-folder of a Cityscapes-style root is read too.
    mine = pairs / "1_color.png"
    cv2.imwrite(str(mine), np.full((32, 32, 3), 7, np.uint8))
    before = mine.read_bytes()
    with pytest.raises(ConfigError, match=re.escape(f"the output folder is read as input: {pairs}")):
        predict(PredictConfig(any_size_model, pairs, pairs, verbose=False))
    assert mine.read_bytes() == before and not (pairs / MANIFEST).exists()
    root = tmp_path / "root"
    make_pairs(root / "city", 1, size=32)
    with pytest.raises(ConfigError, match="the output folder is read as input"):
        predict(PredictConfig(any_size_model, root, root / "out", verbose=False))
    assert not (root / "out").exists()


def test_a_folder_claimed_by_another_model_during_the_load_is_refused(any_size_model, pairs, tmp_path, monkeypatch):
    # Two pspnet-predict of two models on one new --out both passed the check before either wrote.
    import json

    from pspnet.inference import predict as module

    out, other = tmp_path / "out", tmp_path / "other.keras"
    load = module._load

    def load_while_another_claims(config):
        loaded = load(config)
        out.mkdir()
        (out / MANIFEST).write_text(json.dumps({"model": str(other.resolve())}))
        return loaded

    monkeypatch.setattr(module, "_load", load_while_another_claims)
    with pytest.raises(ConfigError, match=re.escape(f"{out} holds the predictions of {other.resolve()}")):
        predict(PredictConfig(any_size_model, pairs, out, verbose=False))
    assert sorted(path.name for path in out.iterdir()) == [MANIFEST]


def test_skip_bad_with_no_usable_image_is_an_error_and_no_folder(any_size_model, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"none of the 1 images could be read; first: truncated PNG"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predict(PredictConfig(any_size_model, folder, out, skip_bad=True, verbose=False))
    assert not out.exists()


def test_video_input_goes_to_pspnet_video(any_size_model, tmp_path, monkeypatch):
    from pspnet.inference.segmenter import Segmenter

    calls = []

    def predict_video(
        segmenter, video_path, out_dir, every=1, colour_video=False, alpha=0.5, verbose=True, classes=None
    ):
        calls.append(
            dict(
                segmenter=segmenter,
                video_path=video_path,
                out_dir=out_dir,
                every=every,
                colour_video=colour_video,
                alpha=alpha,
                verbose=verbose,
                classes=classes,
            )
        )
        Path(out_dir).mkdir(parents=True)
        return {"frames": 4}

    monkeypatch.setitem(sys.modules, "pspnet.inference.video", types.SimpleNamespace(predict_video=predict_video))
    clip = tmp_path / "street.MP4"
    clip.write_bytes(b"not read here")
    out = tmp_path / "out"
    result = predict(
        PredictConfig(any_size_model, clip, out, batch_size=2, every=3, colour_video=True, alpha=0.25, verbose=False)
    )
    assert result == {"frames": 4, "read_as": {str(clip): "video"}, "inputs_csv": str(out / "inputs.csv")}
    (call,) = calls
    assert isinstance(call["segmenter"], Segmenter)
    assert call["segmenter"].input_size == (256, 256) and call["segmenter"].batch_size == 2
    assert (call["video_path"], call["out_dir"]) == (clip, out)
    assert (call["every"], call["colour_video"], call["alpha"], call["verbose"]) == (3, True, 0.25, False)
    assert call["classes"].names[0] == "road"  # the model's (Cityscapes) colours
    assert _read_csv(out / "inputs.csv") == [{"file": str(clip), "read_as": "video", "notes": "every 3 frames"}]


def test_image_input_does_not_import_pspnet_video(any_size_model, pairs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pspnet.inference.video", None)  # any import of it now fails
    result = predict(PredictConfig(any_size_model, pairs / "1.jpg", tmp_path / "out", verbose=False))
    assert result["num_images"] == 1


def test_every_below_one_is_refused(any_size_model, pairs, tmp_path, capsys):
    from pspnet.cli import predict_main

    with pytest.raises(ConfigError, match="every must be at least 1"):
        predict(PredictConfig(any_size_model, pairs, tmp_path / "out", every=0, verbose=False))
    with pytest.raises(SystemExit) as exit_info:
        predict_main(["--model", "m.keras", "--input", "x.mp4", "--out", "o", "--every", "0"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("pspnet-predict: error: argument --every") and "\n" not in error


# TensorFlow's native start-up log reaches stderr before absl is initialised.
TF_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} |To enable the following)")


def _run_cli(*args):
    """Runs scripts/predict.py; returns (exit code, stdout, stderr lines of our own)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "predict.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = [line for line in done.stderr.splitlines() if line and not TF_NATIVE_LOG.match(line)]
    return done.returncode, done.stdout, lines


@pytest.mark.slow
def test_cli_corrupt_file_is_one_line(any_size_model, pairs, tmp_path):
    (pairs / "2.jpg").write_bytes(b"garbage")
    (pairs / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code, _, lines = _run_cli(
        "--model", str(any_size_model), "--input", str(pairs), "--out", str(out), "--quiet", "--batch-size", "1"
    )
    assert code == 1
    assert not any("Traceback" in line for line in lines)
    warnings_ = [line for line in lines if line.startswith("pspnet-predict: warning:")]
    errors = [line for line in lines if not line.startswith("pspnet-predict: warning:")]
    assert len(warnings_) == 1 and "notes.txt" in warnings_[0]
    assert errors == [f"pspnet-predict: error: not a JPEG or PNG image: {pairs / '2.jpg'}"]
    # 1.jpg came before the corrupt file: its pictures stay.
    assert {p.name for p in out.iterdir()} == {f"1_{s}.png" for s in SUFFIXES} | {MANIFEST}


@pytest.mark.slow
def test_cli_single_composite_with_truth(any_size_model, pairs, tmp_path):
    out = tmp_path / "out"
    code, stdout, lines = _run_cli(
        "--model", str(any_size_model), "--input", str(pairs / "3.jpg"), "--out", str(out), "--with-truth"
    )
    assert code == 0, lines
    assert {p.name for p in out.iterdir()} == {f"3_{s}.png" for s in (*SUFFIXES, "panel")} | {"inputs.csv", MANIFEST}
    assert f"1 image (1 composite): wrote 4 files and inputs.csv to {out}" in stdout


def test_a_folder_of_another_models_predictions_is_refused_and_kept(
    any_size_model, fixed_model, pairs, tmp_path, capsys
):
    from pspnet.cli import predict_main

    out = tmp_path / "out"
    predict(PredictConfig(any_size_model, pairs, out, verbose=False))
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    # Another model, on fewer inputs: it would replace some pictures and leave the others.
    assert (
        predict_main(["--model", str(fixed_model), "--input", str(pairs / "1.jpg"), "--out", str(out), "--quiet"]) == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pspnet-predict: error: {out} holds the predictions of "), err
    assert str(any_size_model.resolve()) in err and "--out" in err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    # The same model may add to (or redo) its own predictions.
    assert predict(PredictConfig(any_size_model, pairs / "1.jpg", out, verbose=False))["num_images"] == 1


def test_predictions_of_an_unknown_model_are_refused(any_size_model, pairs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "7_ids.png").write_bytes(b"someone's")
    with pytest.raises(ConfigError, match=r"holds predictions of an unknown model \(no predictions.json\)"):
        predict(PredictConfig(any_size_model, pairs, out, verbose=False))
    assert [path.name for path in out.iterdir()] == ["7_ids.png"]


# --- the trained scale, official label ids, Cityscapes splits, other class tables ------------------


def _described_model(path: Path, num_classes: int, image_size, classes=None) -> Path:
    """A tiny any-size model saved with its description (trained size, class table)."""
    import keras

    from pspnet.models.modelfile import ModelInfo, save_model

    inputs = keras.Input((None, None, 3))
    layer = keras.layers.Conv2D(num_classes, 1, name="logits")
    outputs = layer(keras.layers.Rescaling(1 / 255)(inputs))
    # Fixed weights, large enough that no pixel's decision is a near tie.
    rng = np.random.default_rng(0)
    layer.set_weights([rng.normal(0, 10, (1, 1, 3, num_classes)).astype(np.float32), np.zeros(num_classes, np.float32)])
    save_model(
        keras.Model(inputs, outputs),
        path,
        ModelInfo(
            head="classes",
            num_classes=num_classes,
            image_size=image_size,
            classes=None if classes is None else classes.to_json(),
        ),
    )
    return path


def _photo(path: Path, height: int, width: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return path


def test_native_runs_at_the_trained_scale_not_the_files_size(tmp_path, capsys):
    model = _described_model(tmp_path / "m.keras", NUM_CLASSES, (32, 32))
    photo = _photo(tmp_path / "wide.png", 64, 128)
    native = predict(PredictConfig(model, photo, tmp_path / "native", native=True))
    assert native["run_sizes"] == {str(photo): [16, 32]}  # 64x128 fitted into 32x32, not run at 64x128
    assert "ran the model at 16x32 (each photo fitted into 32x32 keeping its aspect ratio" in capsys.readouterr().out
    resized = predict(PredictConfig(model, photo, tmp_path / "resized", verbose=False))
    assert resized["run_sizes"] == {str(photo): [32, 32]} and resized["native"] is False
    for folder in ("native", "resized"):
        assert _read(tmp_path / folder / "wide_ids.png").shape == (64, 128)


def test_label_ids_are_the_official_ids_of_the_train_ids_at_the_photos_size(tmp_path):
    from pspnet.palette import LABEL_IDS

    model = _described_model(tmp_path / "m.keras", NUM_CLASSES, (32, 32))
    photo = _photo(tmp_path / "in" / "street.png", 40, 72)
    result = predict(PredictConfig(model, photo, tmp_path / "out", label_ids=True, verbose=False))
    assert result["label_ids"] == str(tmp_path / "out" / "labelIds")
    label_ids = _read(tmp_path / "out" / "labelIds" / "street_labelIds.png")
    train_ids = _read(tmp_path / "out" / "street_ids.png")
    assert label_ids.shape == (40, 72) and label_ids.dtype == np.uint8
    np.testing.assert_array_equal(label_ids, np.asarray(LABEL_IDS, np.uint8)[train_ids])
    assert sorted(path.name for path in (tmp_path / "out" / "labelIds").iterdir()) == ["street_labelIds.png"]


def test_label_ids_are_refused_for_a_model_of_other_classes(tmp_path, capsys):
    from pspnet.cli import predict_main
    from pspnet.data.classes import ClassTable

    table = ClassTable(("soil", "crop", "weed"), ((90, 60, 30), (0, 160, 0), (200, 0, 200)))
    model = _described_model(tmp_path / "farm.keras", 3, (32, 32), classes=table)
    photo = _photo(tmp_path / "field.png", 32, 48)
    out = tmp_path / "out"
    assert predict_main(["--model", str(model), "--input", str(photo), "--out", str(out), "--label-ids"]) == 1
    assert capsys.readouterr().err == (
        "pspnet-predict: error: --label-ids writes official Cityscapes label ids, but the model predicts other "
        f"classes (3 classes against 19, the model's first): {model}\n"
    )
    assert not out.exists()
    # Without it, the pictures are in the model's own colours.
    predict(PredictConfig(model, photo, out, verbose=False))
    colours = {tuple(c) for c in _read(out / "field_color.png")[..., ::-1].reshape(-1, 3)}
    assert colours <= set(table.colors) and len(colours) >= 1


def test_a_cityscapes_split_folder_is_read_one_level_of_cities_down(tmp_path):
    from conftest import make_cityscapes

    root = make_cityscapes(tmp_path / "cs", train=1, val=3, height=32, width=64)
    model = _described_model(tmp_path / "m.keras", NUM_CLASSES, (32, 64))
    result = predict(
        PredictConfig(model, root / "leftImg8bit" / "val", tmp_path / "out", label_ids=True, native=True, verbose=False)
    )
    photos = sorted((root / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))
    assert result["num_images"] == 3 == len(photos)
    names = sorted(path.name for path in (tmp_path / "out" / "labelIds").iterdir())
    assert names == sorted(path.name.replace("_leftImg8bit.png", "_labelIds.png") for path in photos)
    assert all(_read(tmp_path / "out" / "labelIds" / name).shape == (32, 64) for name in names)


def test_one_name_in_two_folders_gets_the_folders_name():
    from pspnet.inference.predict_folder import output_names

    paths = [Path("a/1.jpg"), Path("b/1.jpg"), Path("b/2.png"), Path("c/x_leftImg8bit.png")]
    assert list(output_names(paths).values()) == ["a_1_jpg", "b_1_jpg", "2", "x"]


def test_names_that_still_clash_are_numbered_not_shared():
    # a.jpg and a.png become a_jpg and a_png, which a_jpg.png already is: one picture would overwrite another.
    from pspnet.inference.predict_folder import output_names

    names = output_names([Path("d/a.jpg"), Path("d/a.png"), Path("d/a_jpg.png"), Path("d/d_a_jpg_2.png")])
    assert len(set(names.values())) == 4
    assert output_names([Path("x/a.jpg"), Path("y/a.jpg"), Path("x/y_a_jpg.png")])[Path("x/a.jpg")] == "x_a_jpg"


def test_sliding_windows_scales_and_flips_predict_as_evaluate_does(tmp_path, capsys):
    from pspnet.cli import predict_main

    model = _described_model(tmp_path / "m.keras", NUM_CLASSES, (32, 64))  # 1x1: windows change nothing
    photo = _photo(tmp_path / "in" / "street.png", 64, 128)
    predict(PredictConfig(model, photo, tmp_path / "whole", native=True, tta_flip=True, verbose=False))
    assert (
        predict_main(
            [
                "--model",
                str(model),
                "--input",
                str(photo),
                "--out",
                str(tmp_path / "slide"),
                "--native",
                "--slide",
                "16x32",
                "8x16",
                "--scales",
                "1",
                "--tta",
            ]
        )
        == 0
    )
    assert (
        "ran the model at 32x64 (each photo fitted into 32x64 keeping its aspect ratio: the scale the model "
        "was trained at; 16x32 windows every 8x16)"
    ) in capsys.readouterr().out
    np.testing.assert_array_equal(
        _read(tmp_path / "slide" / "street_ids.png"), _read(tmp_path / "whole" / "street_ids.png")
    )
    assert (
        predict_main(["--model", str(model), "--input", str(photo), "--out", str(tmp_path / "x"), "--scales", "-1"])
        == 1
    )
    assert capsys.readouterr().err.startswith("pspnet-predict: error: scales must be one or more numbers above 0")
    assert not (tmp_path / "x").exists()


def test_label_ids_for_a_video_are_one_warning(any_size_model, tmp_path, monkeypatch):
    def predict_video(segmenter, video_path, out_dir, **options):
        Path(out_dir).mkdir(parents=True)
        return {"frames": 1}

    monkeypatch.setitem(sys.modules, "pspnet.inference.video", types.SimpleNamespace(predict_video=predict_video))
    clip = tmp_path / "street.mp4"
    clip.write_bytes(b"not read here")
    with pytest.warns(PspnetWarning, match="--label-ids and --with-truth apply to images only"):
        predict(PredictConfig(any_size_model, clip, tmp_path / "out", label_ids=True, verbose=False))
