"""The Kaggle photo|label composites: one 2:1 image, the photo left, the colour label right."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from pspnet.data.files import _read_image
from pspnet.errors import DataError


def _check_composite(image: np.ndarray, path: Path) -> None:
    """Raises DataError unless the image is twice as wide as high."""
    height, width = image.shape[:2]
    if width != 2 * height:
        raise DataError(
            f"not a 2:1 photo|label composite: {path.name} is {width}x{height} pixels "
            f"(width x height), expected a width of twice the height: {path}"
        )


def split_composite(image: np.ndarray, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Splits a photo|label composite read whole (e.g. by ``read_photo``) into its halves.

    Args:
        image: (H, 2H, C) array.
        path: its file, named in the error.

    Returns:
        ``(left half, right half)``, views of ``image``.

    Raises:
        DataError: the image is not twice as wide as high.
    """
    _check_composite(image, Path(path))
    width = image.shape[1] // 2
    return image[:, :width], image[:, width:]


def _read_composite(path: Path) -> np.ndarray:
    """Reads one composite strictly: uint8 BGR (H, 2H, 3). Raises DataError."""
    image = _read_image(path, "an RGB photo|label composite")
    _check_composite(image, path)
    return image


def read_pair(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads one composite and splits it into photo and label halves.

    Args:
        path: a .jpg/.jpeg/.png file, photo on the left, colour label on the right.

    Returns:
        ``(photo, label_rgb)``, each uint8 (H, H, 3) RGB.

    Raises:
        DataError: missing, unreadable, truncated or greyscale file, or not a
            2:1 composite; the message names the file.
    """
    image = _read_composite(Path(path))
    width = image.shape[1] // 2
    photo = cv2.cvtColor(image[:, :width], cv2.COLOR_BGR2RGB)
    label_rgb = cv2.cvtColor(image[:, width:], cv2.COLOR_BGR2RGB)
    return photo, label_rgb
