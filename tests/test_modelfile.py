"""Tests of pspnet.models.modelfile: the model info inside .keras files, damaged files, loading."""

from __future__ import annotations

import zipfile

import keras
import numpy as np
import pytest

from pspnet.data.classes import CITYSCAPES, ClassTable
from pspnet.errors import ConfigError
from pspnet.models.builder import build_pspnet
from pspnet.models.modelfile import INFO_NAME, ModelInfo, check_model_file, load_model, read_model_info, save_model

INFO = ModelInfo(head="classes", num_classes=19, preset="fast", image_size=(32, 48))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A fast model (any input size) saved with INFO: (path, model)."""
    model = build_pspnet("fast", input_shape=(None, None, 3))
    path = tmp_path_factory.mktemp("models") / "model.keras"
    save_model(model, path, INFO)
    return path, model


def test_the_info_travels_inside_the_file_and_the_model_loads(saved):
    path, model = saved
    loaded, info = load_model(path)
    assert (info.head, info.num_classes, info.preset, info.image_size) == ("classes", 19, "fast", (32, 48))
    assert info.pspnet_version
    photos = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict_on_batch(photos), model.predict_on_batch(photos), atol=1e-5)


def test_a_model_saved_without_info_is_described_from_its_output(tmp_path):
    path = tmp_path / "plain.keras"
    build_pspnet("seed", head="rgb", input_shape=(16, 16, 3)).save(path)
    assert read_model_info(path) is None
    _, info = load_model(path)
    assert (info.head, info.preset, info.image_size) == ("rgb", None, None)


def test_a_truncated_file_is_named_as_damaged(saved, tmp_path):
    path = tmp_path / "cut.keras"
    data = saved[0].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=rf"model file is damaged .*: {path}$"):
        load_model(path)


def test_garbage_and_foreign_archives_are_damaged_not_missing(tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip archive at all")
    with pytest.raises(ConfigError, match="model file is damaged"):
        check_model_file(garbage)
    foreign = tmp_path / "foreign.keras"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ConfigError, match=r"damaged \(no config.json in the archive\)"):
        check_model_file(foreign)
    with pytest.raises(ConfigError, match="model file not found"):
        check_model_file(tmp_path / "missing.keras")


def test_a_flipped_byte_fails_the_checksum(saved, tmp_path):
    data = bytearray(saved[0].read_bytes())
    with zipfile.ZipFile(saved[0]) as archive:
        member = archive.getinfo("model.weights.h5")
    offset = member.header_offset + 30 + len(member.filename) + len(member.extra) + member.compress_size // 2
    data[offset] ^= 0xFF
    path = tmp_path / "flipped.keras"
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="damaged"):
        load_model(path)


def test_an_unreadable_info_member_is_one_clear_error(saved, tmp_path):
    path = tmp_path / "odd.keras"
    path.write_bytes(saved[0].read_bytes())
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr(INFO_NAME, "{not json")  # a second member of that name: the last one is read
    with pytest.raises(ConfigError, match=f"unreadable {INFO_NAME}"):
        read_model_info(path)


def test_keras_ignores_the_info_member(saved):
    model = keras.saving.load_model(saved[0], compile=False)
    assert model.name == "pspnet_fast"


@pytest.mark.parametrize("text", ["[1, 2]", '"classes"', "19", "null"])
def test_an_info_member_that_is_not_an_object_is_one_clear_error(saved, tmp_path, text):
    path = tmp_path / "array.keras"
    path.write_bytes(saved[0].read_bytes())
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr(INFO_NAME, text)
    with pytest.raises(ConfigError, match=f"unreadable {INFO_NAME} .*not a JSON object.*{path.name}"):
        read_model_info(path)


def test_a_damaged_compressed_member_is_one_clear_error(saved, tmp_path):
    # Keras stores its members; a file re-zipped with deflate (zip -r) that is
    # then damaged fails in zlib, which testzip does not turn into a bad member.
    deflated = tmp_path / "deflated.keras"
    with zipfile.ZipFile(saved[0]) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            target.writestr(member.filename, source.read(member.filename))
    check_model_file(deflated)  # re-zipped whole, it is a good model file
    with zipfile.ZipFile(deflated) as archive:
        member = archive.getinfo("config.json")
    data = bytearray(deflated.read_bytes())
    data[member.header_offset + 30 + len(member.filename) + len(member.extra)] ^= 0xFF
    path = tmp_path / "damaged.keras"
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=rf"model file is damaged .*: {path}$"):
        load_model(path)


def test_an_info_member_that_is_not_utf8_is_one_clear_error(saved, tmp_path):
    path = tmp_path / "latin1.keras"
    path.write_bytes(saved[0].read_bytes())
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr(INFO_NAME, '{"head": "classes", "num_classes": 19, "preset": "f\xe9st"}'.encode("latin-1"))
    with pytest.raises(ConfigError, match=f"unreadable {INFO_NAME} .*{path.name}"):
        read_model_info(path)


FARM = ClassTable(
    ("soil", "crop", "weed", "water", "stone"),
    ((120, 80, 40), (0, 200, 0), (200, 0, 200), (0, 0, 255), (128, 128, 128)),
    ignore_index=9,
)


def test_a_five_class_model_carries_its_class_table(tmp_path):
    path = tmp_path / "farm.keras"
    save_model(
        build_pspnet("fast", num_classes=5, input_shape=(None, None, 3)),
        path,
        ModelInfo(head="classes", num_classes=5, preset="fast", classes=FARM.to_json()),
    )
    _, info = load_model(path)
    table = info.class_table()
    assert (table.names, table.colors, table.ignore_index) == (FARM.names, FARM.colors, 9)


def test_a_table_of_another_class_count_is_an_unreadable_info(saved, tmp_path):
    path = tmp_path / "mismatch.keras"
    path.write_bytes(saved[0].read_bytes())
    text = ModelInfo(head="classes", num_classes=19, classes=FARM.to_json()).to_json()
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr(INFO_NAME, text)
    with pytest.raises(ConfigError, match=f"unreadable {INFO_NAME} \\(19 classes but a table of 5\\)"):
        read_model_info(path)


def test_a_file_without_a_table_is_cityscapes_only_for_19_classes():
    assert INFO.class_table() == CITYSCAPES  # every model saved before tables were stored
    with pytest.raises(ConfigError, match="predicts 5 classes but does not say which"):
        ModelInfo(head="classes", num_classes=5).class_table()
