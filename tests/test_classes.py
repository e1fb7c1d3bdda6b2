"""Tests for pspnet.data.classes: ClassTable, CITYSCAPES and dataset.json reading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pspnet.data.classes import CITYSCAPES, ClassTable, read_dataset_json
from pspnet.errors import DataError
from pspnet.palette import CLASSES, palette

FIVE = ClassTable(
    ("ground", "wall", "plant", "sky", "mover"),
    ((90, 90, 90), (200, 120, 40), (40, 170, 60), (110, 170, 240), (230, 40, 120)),
    9,
)


def test_cityscapes_table_is_the_palette():
    assert CITYSCAPES.num_classes == 19 and CITYSCAPES.ignore_index == 255
    assert CITYSCAPES.names == tuple(c.name for c in CLASSES)
    np.testing.assert_array_equal(CITYSCAPES.palette(), palette())


def test_palette_colours_classes_and_the_rest():
    table = FIVE.palette(ignore_color=(1, 2, 3))
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert table[4].tolist() == [230, 40, 120] and table[5].tolist() == [1, 2, 3] and table[9].tolist() == [1, 2, 3]


def test_json_round_trip():
    data = json.loads(json.dumps(FIVE.to_json()))
    assert data["classes"][1] == {"name": "wall", "color": [200, 120, 40]} and data["ignore_index"] == 9
    assert ClassTable.from_json(data) == FIVE


def test_ignore_index_defaults_to_255():
    table = ClassTable.from_json({"classes": [{"name": "a", "color": [0, 0, 0]}, {"name": "b", "color": [1, 1, 1]}]})
    assert table.ignore_index == 255 and table.num_classes == 2


def test_difference_in_words():
    assert FIVE.difference(FIVE) is None
    assert CITYSCAPES.difference(FIVE) == "19 classes against 5"
    renamed = ClassTable(("ground", "building", *FIVE.names[2:]), FIVE.colors, 9)
    assert FIVE.difference(renamed) == "class 1 is 'wall' against 'building'"
    recoloured = ClassTable(FIVE.names, ((90, 90, 90), (1, 2, 3), *FIVE.colors[2:]), 9)
    assert FIVE.difference(recoloured) == "class 1 ('wall') is coloured [200, 120, 40] against [1, 2, 3]"
    assert FIVE.difference(ClassTable(FIVE.names, FIVE.colors, 255)) == "ignore index 9 against 255"


@pytest.mark.parametrize(
    "names, colors, ignore, problem",
    [
        (("a",), ((0, 0, 0),), 255, "it has 1 classes; 2 to 255 are supported"),
        (("a", "b"), ((0, 0, 0),), 255, "2 names but 1 colours"),
        (("a", "b"), ((0, 0, 0), (0, 0, 256)), 255, "every colour must be three integers 0-255"),
        (("a", "a"), ((0, 0, 0), (1, 1, 1)), 255, "the name 'a' is given to two classes"),
        (("a", " "), ((0, 0, 0), (1, 1, 1)), 255, "class 1 has an empty name"),
        (("a", "b"), ((5, 5, 5), (5, 5, 5)), 255, r"the colour \[5, 5, 5\] is given to two classes"),
        (("a", "b", "c"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)), 1, "ignore_index 1 must be from 3"),
        (("a", "b"), ((0, 0, 0), (1, 1, 1)), 256, "ignore_index 256 must be from 2"),
    ],
)
def test_unusable_tables(names, colors, ignore, problem):
    with pytest.raises(ValueError, match=problem):
        ClassTable(names, colors, ignore)


def test_255_classes_leave_no_ignore_index():
    names = tuple(f"c{i}" for i in range(255))
    colors = tuple((i, 0, 0) for i in range(255))
    assert ClassTable(names, colors, 255).num_classes == 255
    with pytest.raises(ValueError, match="it has 256 classes"):
        ClassTable((*names, "x"), (*colors, (0, 1, 0)), 255)


@pytest.mark.parametrize(
    "data, problem",
    [
        ([], "it must be a JSON object"),
        ({"names": []}, 'it has no "classes" list'),
        ({"classes": ["road"]}, 'class 0 is not an object with a "name" string'),
        ({"classes": [{"name": "road", "color": [1, 2]}]}, r"class 0 \('road'\) has no \"color\" of three integers"),
        ({"classes": [{"name": "road", "color": [1, 2, True]}]}, 'has no "color" of three integers'),
        (
            {"classes": [{"name": "a", "color": [1, 2, 3]}, {"name": "b", "color": [3, 2, 1]}], "ignore_index": "255"},
            '"ignore_index" must be an integer',
        ),
    ],
)
def test_from_json_names_the_problem(data, problem):
    with pytest.raises(ValueError, match=problem):
        ClassTable.from_json(data)


def test_read_dataset_json(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(FIVE.to_json()))
    assert read_dataset_json(path) == FIVE


@pytest.mark.parametrize(
    "text, problem",
    [
        (None, r"no dataset.json \(the class names and colours of an image/mask folder root\)"),
        ("{", "dataset.json is not valid JSON"),
        (b"\xff\xfe", "cannot read dataset.json"),
        (
            json.dumps({"classes": [{"name": "a", "color": [1, 2, 3]}, {"name": "a", "color": [3, 2, 1]}]}),
            "dataset.json describes no usable class table: the name 'a' is given to two classes",
        ),
    ],
)
def test_read_dataset_json_errors_name_the_file(tmp_path, text, problem):
    path = tmp_path / "dataset.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(DataError, match=f"{problem}.*: {path}$"):
        read_dataset_json(path)
