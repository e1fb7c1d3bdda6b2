"""pspnet.palette against the official Cityscapes table (cityscapesscripts' labels.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pspnet.palette import CLASS_NAMES, CLASSES, IGNORE_INDEX, LABEL_COLORS, LABEL_TRAIN_IDS, NUM_CLASSES, palette

labels_module = pytest.importorskip("cityscapesscripts.helpers.labels")
OFFICIAL = labels_module.labels


def test_training_classes_match_official_table():
    official = sorted(
        (label.trainId, label.name, tuple(label.color))
        for label in OFFICIAL
        if 0 <= label.trainId < 255 and not label.ignoreInEval
    )
    ours = [(info.train_id, info.name, tuple(info.color)) for info in CLASSES]
    assert ours == official
    assert NUM_CLASSES == 19 and CLASS_NAMES[0] == "road" and CLASS_NAMES[-1] == "bicycle"
    assert [info.train_id for info in CLASSES] == list(range(19))


def test_label_colours_are_every_official_colour_once():
    official = {tuple(label.color) for label in OFFICIAL}
    ours = [tuple(int(v) for v in row) for row in LABEL_COLORS]
    assert LABEL_COLORS.shape == (29, 3) and LABEL_COLORS.dtype == np.uint8
    assert len(set(ours)) == len(ours) == 29
    assert set(ours) == official


def test_label_colour_train_ids():
    # A colour maps to the evaluated class that uses it (pole over polegroup,
    # car over license plate); colours used only by void labels map to 255.
    for colour, train_id in zip(LABEL_COLORS, LABEL_TRAIN_IDS):
        users = [label for label in OFFICIAL if tuple(label.color) == tuple(int(v) for v in colour)]
        evaluated = {label.trainId for label in users if 0 <= label.trainId < 255 and not label.ignoreInEval}
        assert len(evaluated) <= 1
        expected = evaluated.pop() if evaluated else IGNORE_INDEX
        assert int(train_id) == expected, [label.name for label in users]
    assert IGNORE_INDEX == 255


def test_palette_table():
    table = palette()
    assert table.shape == (256, 3) and table.dtype == np.uint8
    for info in CLASSES:
        assert tuple(table[info.train_id]) == info.color
    assert tuple(table[IGNORE_INDEX]) == (0, 0, 0)
    assert tuple(palette(ignore_color=(1, 2, 3))[IGNORE_INDEX]) == (1, 2, 3)


def test_label_id_tables_match_the_official_ids():
    from pspnet.palette import label_id_to_train_id, train_id_to_label_id

    to_train, to_label = label_id_to_train_id(), train_id_to_label_id()
    for label in labels_module.labels:
        if label.id < 0:
            continue
        expected = label.trainId if 0 <= label.trainId < 255 else 255
        assert to_train[label.id] == expected, label.name
        if expected != 255:
            assert to_label[expected] == label.id, label.name
