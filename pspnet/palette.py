"""The Cityscapes label table and colour <-> train-id conversion tables.

Transcribed from the official definition, ``cityscapesscripts/helpers/labels.py``
(Cordts et al., 2016); ``tests/test_palette.py`` checks it against that package.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

IGNORE_INDEX = 255  # train id of every void / ignored label


class ClassInfo(NamedTuple):
    """One of the 19 Cityscapes training classes."""

    train_id: int
    name: str
    color: tuple[int, int, int]  # RGB


# The 19 training classes in train-id order.
CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "road", (128, 64, 128)),
    ClassInfo(1, "sidewalk", (244, 35, 232)),
    ClassInfo(2, "building", (70, 70, 70)),
    ClassInfo(3, "wall", (102, 102, 156)),
    ClassInfo(4, "fence", (190, 153, 153)),
    ClassInfo(5, "pole", (153, 153, 153)),
    ClassInfo(6, "traffic light", (250, 170, 30)),
    ClassInfo(7, "traffic sign", (220, 220, 0)),
    ClassInfo(8, "vegetation", (107, 142, 35)),
    ClassInfo(9, "terrain", (152, 251, 152)),
    ClassInfo(10, "sky", (70, 130, 180)),
    ClassInfo(11, "person", (220, 20, 60)),
    ClassInfo(12, "rider", (255, 0, 0)),
    ClassInfo(13, "car", (0, 0, 142)),
    ClassInfo(14, "truck", (0, 0, 70)),
    ClassInfo(15, "bus", (0, 60, 100)),
    ClassInfo(16, "train", (0, 80, 100)),
    ClassInfo(17, "motorcycle", (0, 0, 230)),
    ClassInfo(18, "bicycle", (119, 11, 32)),
)
NUM_CLASSES = len(CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)

# Every distinct colour of the official table (29 of them) with its train id.
# Void labels (unlabeled, dynamic, ground, parking, rail track, guard rail,
# bridge, tunnel, caravan, trailer) map to IGNORE_INDEX. Two colours are shared
# in the official table: (153,153,153) by pole and polegroup, (0,0,142) by car
# and license plate; both resolve to the evaluated class (pole, car).
VOID_COLORS: dict[str, tuple[int, int, int]] = {
    "unlabeled": (0, 0, 0),  # also ego vehicle, rectification border, out of roi, static
    "dynamic": (111, 74, 0),
    "ground": (81, 0, 81),
    "parking": (250, 170, 160),
    "rail track": (230, 150, 140),
    "guard rail": (180, 165, 180),
    "bridge": (150, 100, 100),
    "tunnel": (150, 120, 90),
    "caravan": (0, 0, 90),
    "trailer": (0, 0, 110),
}

# (29, 3) uint8 colours and (29,) uint8 train ids, void last.
LABEL_COLORS = np.array([c.color for c in CLASSES] + list(VOID_COLORS.values()), dtype=np.uint8)
LABEL_TRAIN_IDS = np.array([c.train_id for c in CLASSES] + [IGNORE_INDEX] * len(VOID_COLORS), dtype=np.uint8)


# The official label id (``*_gtFine_labelIds.png``) of each train id, in train-id order.
LABEL_IDS: tuple[int, ...] = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def label_id_to_train_id() -> np.ndarray:
    """(256,) uint8: official label id -> train id; every id without one (void) -> IGNORE_INDEX."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    table[list(LABEL_IDS)] = np.arange(len(LABEL_IDS), dtype=np.uint8)
    return table


def train_id_to_label_id() -> np.ndarray:
    """(256,) uint8: train id -> official label id; IGNORE_INDEX and any other id -> 0 (unlabeled)."""
    table = np.zeros(256, dtype=np.uint8)
    table[: len(LABEL_IDS)] = LABEL_IDS
    return table


def palette(ignore_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Returns a (256, 3) uint8 table mapping train id -> RGB colour.

    Ids 0-18 get their official colour; every other id (255 included) gets
    ``ignore_color``. Index it with a train-id map: ``palette()[train_ids]``.
    """
    table = np.empty((256, 3), dtype=np.uint8)
    table[:] = ignore_color
    for info in CLASSES:
        table[info.train_id] = info.color
    return table
