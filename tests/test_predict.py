"""pspnet.predict and pspnet-predict on tiny untrained models and generated pairs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, make_pairs
from pspnet.errors import ConfigError, DataError
from pspnet.palette import NUM_CLASSES
from pspnet.predict import PredictConfig, predict, read_input

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
    assert {p.name for p in out.iterdir()} == expected
    assert len(result["files"]) == 9
    for n in (1, 2, 3):
        # The left half only: 32x32 pictures for 32x64 composites.
        assert _read(out / f"{n}_color.png").shape == (32, 32, 3)
        assert _read(out / f"{n}_overlay.png").shape == (32, 32, 3)
        ids = _read(out / f"{n}_ids.png")
        assert ids.shape == (32, 32) and ids.dtype == np.uint8
        assert ids.max() < NUM_CLASSES


def test_color_png_is_the_palette_of_the_ids(any_size_model, pairs, tmp_path):
    from pspnet.viz import colorize

    out = tmp_path / "out"
    predict(PredictConfig(any_size_model, pairs / "2.jpg", out, verbose=False))
    ids = _read(out / "2_ids.png")
    color = cv2.cvtColor(_read(out / "2_color.png"), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(color, colorize(ids))


def test_single_plain_photo_keeps_its_size(any_size_model, pairs, tmp_path):
    photo, _ = read_input(pairs / "1.jpg")
    wide = cv2.resize(photo, (48, 40))  # not 2:1, so a plain photo
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), cv2.cvtColor(wide, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    predict(PredictConfig(any_size_model, path, out, verbose=False))
    assert sorted(p.name for p in out.iterdir()) == [f"street_{s}.png" for s in sorted(SUFFIXES)]
    assert _read(out / "street_ids.png").shape == (40, 48)


def test_native_size_and_pairs_never(any_size_model, pairs, tmp_path):
    out = tmp_path / "out"
    result = predict(
        PredictConfig(any_size_model, pairs / "1.jpg", out, native=True, pairs="never", verbose=False)
    )
    assert result["image_size"] is None
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


def test_pairs_always_rejects_a_plain_photo(tmp_path):
    path = tmp_path / "plain.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="plain.png"):
        read_input(path, pairs="always")


def test_truncated_plain_photo_is_named(tmp_path):
    path = tmp_path / "street.jpg"
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    path.write_bytes(data.tobytes()[: len(data) // 2])  # cut off: no end-of-image marker
    with pytest.raises(DataError, match=r"truncated JPEG .*street\.jpg"):
        read_input(path)


def test_inputs_sharing_a_stem_get_distinct_names(any_size_model, pairs, tmp_path):
    photo, _ = read_input(pairs / "1.jpg")
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
    assert {p.name for p in out.iterdir()} == {f"{n}_{s}.png" for n in (1, 2, 3) for s in SUFFIXES}


# TensorFlow's native start-up log reaches stderr before absl is initialised.
TF_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} |To enable the following)")


def _run_cli(*args):
    """Runs scripts/predict.py; returns (exit code, stdout, stderr lines of our own)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "predict.py"), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line and not TF_NATIVE_LOG.match(line)]
    return done.returncode, done.stdout, lines


@pytest.mark.slow
def test_cli_corrupt_file_is_one_line(any_size_model, pairs, tmp_path):
    (pairs / "2.jpg").write_bytes(b"garbage")
    (pairs / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code, _, lines = _run_cli("--model", str(any_size_model), "--input", str(pairs),
                              "--out", str(out), "--quiet", "--batch-size", "1")
    assert code == 1
    assert not any("Traceback" in line for line in lines)
    warnings_ = [line for line in lines if line.startswith("pspnet-predict: warning:")]
    errors = [line for line in lines if not line.startswith("pspnet-predict: warning:")]
    assert len(warnings_) == 1 and "notes.txt" in warnings_[0]
    assert errors == [f"pspnet-predict: error: not a JPEG or PNG image: {pairs / '2.jpg'}"]
    # 1.jpg came before the corrupt file: its pictures stay.
    assert {p.name for p in out.iterdir()} == {f"1_{s}.png" for s in SUFFIXES}


@pytest.mark.slow
def test_cli_single_composite_with_truth(any_size_model, pairs, tmp_path):
    out = tmp_path / "out"
    code, stdout, lines = _run_cli("--model", str(any_size_model), "--input", str(pairs / "3.jpg"),
                                   "--out", str(out), "--with-truth")
    assert code == 0, lines
    assert {p.name for p in out.iterdir()} == {f"3_{s}.png" for s in (*SUFFIXES, "panel")}
    assert "1 image: wrote 4 files" in stdout
