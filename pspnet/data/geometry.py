"""Image geometry shared by training batches and inference: the padding colour, fitting, padded arrays.

Pure NumPy (no Keras), so that ``pspnet.inference.segmenter`` and
``pspnet.data.pipeline`` fit and pad images with one implementation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PAD_RGB", "fit_size", "pad_rows", "padded_photos", "scaled_size"]

# Photo padding: the ImageNet mean colour (as hszhao/semseg pads), an average
# photo pixel, rather than black, which no street photo is and which would pull
# batch-norm statistics; labels there are 255 and never scored.
PAD_RGB = (124, 116, 104)


def scaled_size(base: tuple[int, int], scale: float = 1.0) -> tuple[int, int]:
    """``base`` (H, W) times ``scale``, rounded; ``base`` itself at scale 1."""
    if scale == 1.0:
        return int(base[0]), int(base[1])
    return max(1, round(int(base[0]) * scale)), max(1, round(int(base[1]) * scale))


def fit_size(shape: tuple[int, ...], base: tuple[int, int], scale: float = 1.0) -> tuple[int, int]:
    """The (height, width) of an image of ``shape`` rescaled keeping its aspect ratio
    to fit inside ``base`` times ``scale`` (mmsegmentation's ``keep_ratio``).

    Integer arithmetic decides which side is the limit, so an image of the
    base's aspect ratio (a square in a square) fits exactly.

    Example:
        >>> fit_size((1024, 2048), (512, 512))
        (256, 512)
    """
    height, width = int(shape[0]), int(shape[1])
    base_h, base_w = scaled_size(base, scale)
    if base_h * width <= base_w * height:  # the height is the limit
        return base_h, min(max(int(round(width * base_h / height)), 1), base_w)
    return min(max(int(round(height * base_w / width)), 1), base_h), base_w


def padded_photos(count: int, size: tuple[int, int], dtype=np.float32) -> np.ndarray:
    """(count, H, W, 3) photos of ``PAD_RGB`` only: a frame to place smaller photos in."""
    photos = np.empty((count, int(size[0]), int(size[1]), 3), dtype=dtype)
    photos[...] = PAD_RGB
    return photos


def pad_rows(array: np.ndarray, rows: int, fill=0) -> np.ndarray:
    """``array`` with rows of ``fill`` appended up to ``rows`` (a full batch); itself when it has as many.

    Example:
        >>> pad_rows(np.ones((3, 2)), 4).shape
        (4, 2)
    """
    missing = rows - len(array)
    if missing <= 0:
        return array
    return np.concatenate([array, np.full((missing, *array.shape[1:]), fill, array.dtype)])
