"""Class tables: the names, colours and ignore index a data set and its models share.

A ``ClassTable`` travels with the data (the Cityscapes train ids for the
pairs and the official layout, ``dataset.json`` for image/mask folders) and
with every model trained on it (``pspnet.json`` in the ``.keras`` file, an
export's ``PATH.json``), so that the loss, the scores, the figures and the
colour maps use the classes the model learned.

    {"classes": [{"name": "road", "color": [128, 64, 128]}, ...], "ignore_index": 255}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pspnet.errors import DataError
from pspnet.palette import CLASSES, IGNORE_INDEX

__all__ = ["CITYSCAPES", "ClassTable", "DATASET_JSON", "read_dataset_json"]

DATASET_JSON = "dataset.json"  # the class table of an image/mask folder root
MIN_CLASSES, MAX_CLASSES = 2, 255  # uint8 masks: 255 classes leave no room for an ignore index above them


@dataclass(frozen=True)
class ClassTable:
    """The classes of a data set, in index order, and the index that is never scored."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]  # RGB, one per class
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(str(name) for name in self.names))
        object.__setattr__(self, "colors", tuple(tuple(int(v) for v in color) for color in self.colors))
        problem = _problem(self.names, self.colors, self.ignore_index)
        if problem:
            raise ValueError(problem)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def palette(self, ignore_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """(256, 3) uint8: class index -> RGB colour; every other index gets ``ignore_color``."""
        table = np.empty((256, 3), dtype=np.uint8)
        table[:] = ignore_color
        table[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8)
        return table

    def to_json(self) -> dict[str, Any]:
        """The ``dataset.json`` form: ``{"classes": [{"name", "color"}, ...], "ignore_index"}``."""
        return {
            "classes": [{"name": name, "color": list(color)} for name, color in zip(self.names, self.colors)],
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_json(cls, data: Any) -> ClassTable:
        """Reads the ``to_json`` form. Raises ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError('it must be a JSON object with a "classes" list')
        classes = data.get("classes")
        if not isinstance(classes, list):
            raise ValueError('it has no "classes" list')
        names, colors = [], []
        for number, entry in enumerate(classes):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ValueError(f'class {number} is not an object with a "name" string')
            color = entry.get("color")
            if not (
                isinstance(color, list)
                and len(color) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)
            ):
                raise ValueError(f'class {number} ({entry["name"]!r}) has no "color" of three integers 0-255')
            names.append(entry["name"])
            colors.append(tuple(color))
        ignore = data.get("ignore_index", IGNORE_INDEX)
        if not isinstance(ignore, int) or isinstance(ignore, bool):
            raise ValueError(f'"ignore_index" must be an integer, got {ignore!r}')
        return cls(tuple(names), tuple(colors), ignore)

    def difference(self, other: ClassTable) -> str | None:
        """What differs from ``other``, in words; None when the tables are the same."""
        if self == other:
            return None
        if self.num_classes != other.num_classes:
            return f"{self.num_classes} classes against {other.num_classes}"
        for index, (mine, theirs) in enumerate(zip(self.names, other.names)):
            if mine != theirs:
                return f"class {index} is {mine!r} against {theirs!r}"
        for index, (mine, theirs) in enumerate(zip(self.colors, other.colors)):
            if mine != theirs:
                return f"class {index} ({self.names[index]!r}) is coloured {list(mine)} against {list(theirs)}"
        return f"ignore index {self.ignore_index} against {other.ignore_index}"


def _problem(names: tuple, colors: tuple, ignore_index: int) -> str | None:
    """What makes a table unusable, or None."""
    if not MIN_CLASSES <= len(names) <= MAX_CLASSES:
        return f"it has {len(names)} classes; {MIN_CLASSES} to {MAX_CLASSES} are supported"
    if len(colors) != len(names):
        return f"{len(names)} names but {len(colors)} colours"
    blank = next((index for index, name in enumerate(names) if not name.strip()), None)
    if blank is not None:  # it would head a blank column of scores and a blank legend entry
        return f"class {blank} has an empty name"
    if any(len(color) != 3 or not all(0 <= v <= 255 for v in color) for color in colors):
        return "every colour must be three integers 0-255"
    for kind, values in (("name", names), ("colour", colors)):
        seen = set()
        for value in values:
            if value in seen:
                shown = list(value) if kind == "colour" else repr(value)
                return f"the {kind} {shown} is given to two classes"
            seen.add(value)
    if not 0 <= ignore_index <= 255 or ignore_index < len(names):
        return f"ignore_index {ignore_index} must be from {len(names)} (the class count) to 255"
    return None


CITYSCAPES = ClassTable(tuple(c.name for c in CLASSES), tuple(c.color for c in CLASSES), IGNORE_INDEX)


def read_dataset_json(path: str | os.PathLike) -> ClassTable:
    """The class table in a ``dataset.json`` file.

    Raises:
        DataError: the file is missing, is not JSON, or describes no usable
            table (too few or too many classes, a duplicate name or colour,
            a bad colour or ignore index); the message names the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"no {DATASET_JSON} (the class names and colours of an image/mask folder root): {path}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {DATASET_JSON} ({getattr(error, 'strerror', None) or error}): {path}") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise DataError(f"{DATASET_JSON} is not valid JSON ({error}): {path}") from None
    try:
        return ClassTable.from_json(data)
    except ValueError as error:
        raise DataError(f"{DATASET_JSON} describes no usable class table: {error}: {path}") from None
