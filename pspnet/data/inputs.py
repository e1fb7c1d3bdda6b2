"""The inputs of a prediction: photos, photo|label composites, folders of them, and videos by their suffix.

``list_inputs`` names the images of a file or folder (a Cityscapes split's
city folders one level down), ``read_input`` reads one leniently
(``pspnet.data.read_any_photo``) as a photo or, where its right half looks
like a label image, a photo|label composite (``label_share``), and
``is_video`` tells a video by its suffix (``VIDEO_SUFFIXES``).

Composites: with ``pairs="auto"`` an image exactly twice as wide as high is
a photo|label composite (the Kaggle format) only when most pixels of its
right half lie near a Cityscapes palette colour; a wide street photo is not.
``pairs="never"`` reads every image as a photo, ``pairs="always"`` insists
that every input is a composite.

Example::

    for path in list_inputs("cityscapes_data/val"):
        item = read_input(path, pairs="auto")  # item.photo, item.label_rgb (None for a photo), item.notes
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from pspnet.data.composites import split_composite
from pspnet.data.files import IMAGE_SUFFIXES, list_images, natural_key, read_any_photo
from pspnet.data.labels import decode_labels
from pspnet.errors import DataError

__all__ = [
    "InputImage",
    "LABEL_DISTANCE",
    "LABEL_SHARE",
    "PAIRS",
    "VIDEO_SUFFIXES",
    "is_video",
    "label_share",
    "list_inputs",
    "read_input",
]

PAIRS = ("auto", "always", "never")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
# A 2:1 image is a composite when at least LABEL_SHARE of its right half lies
# within LABEL_DISTANCE (RGB) of a palette colour. Measured on 60 real val
# composites: label halves 0.74-0.90 (min 0.74), photo halves at most 0.385
# (mean 0.14); the synthetic pairs of pspnet.data.synth score 0.91-0.99.
LABEL_DISTANCE = 16
LABEL_SHARE = 0.6


def list_inputs(path: str | Path) -> list[Path]:
    """The images to predict: the file itself, or a folder's images in natural order.

    A folder without images whose sub-folders hold some (a Cityscapes split,
    ``leftImg8bit/val/CITY/``) gives the images of each sub-folder in turn.

    Args:
        path: an image file or a folder (non-images in it are skipped with one warning).

    Returns:
        A list of paths.

    Raises:
        DataError: the path does not exist or the folder holds no image (nor folders of them).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    if not path.is_dir():
        return [path]
    entries = sorted(path.iterdir(), key=lambda entry: natural_key(entry.name))
    if not any(entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES for entry in entries):
        folders = [
            entry
            for entry in entries
            if entry.is_dir()
            and any(child.suffix.lower() in IMAGE_SUFFIXES for child in entry.iterdir() if child.is_file())
        ]
        if folders:
            return [image for folder in folders for image in list_images(folder)]
    return list_images(path)


class InputImage(NamedTuple):
    """One input as read by ``read_input``."""

    photo: np.ndarray  # uint8 (H, W, 3) RGB: what is predicted
    label_rgb: np.ndarray | None  # uint8 (H, W, 3) RGB label half of a composite, else None
    notes: list[str]  # what reading changed, e.g. "greyscale converted" (for inputs.csv)

    @property
    def read_as(self) -> str:
        """ "composite" or "photo"."""
        return "photo" if self.label_rgb is None else "composite"


def label_share(image: np.ndarray) -> float:
    """The share of pixels within ``LABEL_DISTANCE`` of a Cityscapes palette colour.

    Args:
        image: uint8 (H, W, 3) RGB.

    Returns:
        A number in [0, 1]: high for colour label images, low for photos.
    """
    _, distance = decode_labels(image, return_distance=True)
    return float(np.count_nonzero(distance <= LABEL_DISTANCE)) / max(distance.size, 1)


def read_input(path: Path, pairs: str = "auto") -> InputImage:
    """Reads one input image as a photo or a photo|label composite.

    Args:
        path: a .jpg/.jpeg/.png file.
        pairs: "auto", "always" or "never" (see the module docstring).

    Returns:
        An ``InputImage``: ``photo`` uint8 (H, W, 3) RGB, for composites the
        label half ``label_rgb`` (else None), and ``notes``.

    Raises:
        DataError: missing, empty, truncated, corrupt or non-JPEG/PNG file,
            or (pairs="always") not a 2:1 composite; the message names the file.
    """
    image, notes = read_any_photo(path)
    height, width = image.shape[:2]
    if pairs == "never":
        return InputImage(image, None, notes)
    if pairs == "auto" and (width != 2 * height or label_share(image[:, height:]) < LABEL_SHARE):
        return InputImage(image, None, notes)
    photo, label_rgb = split_composite(image, path)
    return InputImage(photo, label_rgb, notes)


def is_video(path: str | Path) -> bool:
    """True for a path (not a folder) whose suffix is one of ``VIDEO_SUFFIXES``."""
    path = Path(path)
    return path.suffix.lower() in VIDEO_SUFFIXES and not path.is_dir()
