"""Drawing primitives of the synthetic scenes: noise textures, masks and the canvas.

A ``Canvas`` holds a scene's photo (float RGB) and its label (one palette row
per pixel); ``Canvas.paint`` puts a texture into the photo and its class into
the label under the same mask, so the two always agree.
"""

from __future__ import annotations

import cv2
import numpy as np

from pspnet.palette import CLASS_NAMES

__all__ = [
    "VOID_ROW",
    "Canvas",
    "box_mask",
    "ellipse_mask",
    "fine_noise",
    "jitter_color",
    "polygon_mask",
    "smooth_noise",
    "tint",
]

VOID_ROW = len(CLASS_NAMES)  # palette row of "unlabeled" (0, 0, 0)


# --- textures ---------------------------------------------------------------


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise (height, width) float32, about unit variance, features ~cell pixels."""
    height, width = max(height, 1), max(width, 1)
    rows = max(2, int(height / max(cell, 1.0)) + 2)
    cols = max(2, int(width / max(cell, 1.0)) + 2)
    grid = rng.standard_normal((rows, cols)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def fine_noise(rng: np.random.Generator, height: int, width: int, sigma: float) -> np.ndarray:
    """Per-pixel grey noise (height, width, 1) float32 with standard deviation sigma."""
    noise = rng.standard_normal((height, width, 1), dtype=np.float32)
    noise *= sigma
    return noise


def tint(color, height: int, width: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(color, np.float32), (height, width, 3)).copy()


def jitter_color(rng, color, amount: float = 12.0):
    return np.clip(np.asarray(color, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


# --- canvas -----------------------------------------------------------------


class Canvas:
    """The photo (float RGB) and the label (palette row per pixel) drawn together."""

    def __init__(self, side: int):
        self.side = side
        self.photo = np.zeros((side, side, 3), np.float32)
        self.index = np.full((side, side), VOID_ROW, np.uint8)

    def paint(self, top: int, left: int, mask: np.ndarray, texture: np.ndarray, row: int) -> None:
        """Paints texture where mask (local, placed at top/left) is set; clipped to the canvas."""
        height = min(mask.shape[0], texture.shape[0])
        width = min(mask.shape[1], texture.shape[1])
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + height, self.side), min(left + width, self.side)
        if y0 >= y1 or x0 >= x1:
            return
        local = mask[y0 - top : y1 - top, x0 - left : x1 - left].astype(bool)
        source = texture[y0 - top : y1 - top, x0 - left : x1 - left]
        np.copyto(self.photo[y0:y1, x0:x1], source, where=local[..., None])
        np.copyto(self.index[y0:y1, x0:x1], np.uint8(row), where=local)


def polygon_mask(points, top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    local = np.round(np.asarray(points, np.float64) - [left, top]).astype(np.int32)
    cv2.fillPoly(mask, [local], 1)
    return mask


def ellipse_mask(height: int, width: int) -> np.ndarray:
    height, width = max(height, 1), max(width, 1)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (max(width // 2, 1), max(height // 2, 1)), 0, 0, 360, 1, -1)
    return mask


def box_mask(height: int, width: int) -> np.ndarray:
    return np.ones((max(height, 1), max(width, 1)), np.uint8)
