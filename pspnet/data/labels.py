"""Cityscapes colour labels -> train ids, by one table lookup; pixels per class.

The Kaggle label halves are the official ``gtFine_color`` images resized
bilinearly and JPEG-compressed, so their colours are near, not on, the
palette: every pixel snaps to the nearest of the 29 official colours.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from pspnet.errors import DataError
from pspnet.fileio import atomic_write, default_cache_dir
from pspnet.palette import LABEL_COLORS, LABEL_TRAIN_IDS, NUM_CLASSES

LUT_FORMAT = 1  # bump when the table's layout changes (its file name carries it)

_LUT: np.ndarray | None = None
_LUT_LOCK = threading.Lock()


def _build_lut() -> np.ndarray:
    """Every 24-bit colour -> its nearest palette colour: '<u2' (2**24,), train id | distance << 8.

    The entry of colour (R, G, B) is at ``R | G << 8 | B << 16``, the
    little-endian uint32 of the bytes R, G, B, 0. Built one blue plane at a
    time, a running minimum over the 29 palette colours (numpy releases the
    GIL, so planes run on threads): about 0.75 CPU-seconds, 32 MiB.
    """
    colors = LABEL_COLORS.astype(np.int64)
    levels = np.arange(256, dtype=np.int64)
    # Squared distance along R and along G to every palette colour: (29, 256) each.
    # Squared distances are integers below 2**18: exact in float32.
    red_sq = ((levels[None, :] - colors[:, 0:1]) ** 2).astype(np.float32)
    green_sq = ((levels[None, :] - colors[:, 1:2]) ** 2).astype(np.float32)
    train_ids = LABEL_TRAIN_IDS.astype(np.uint16)
    table = np.empty((256, 256, 256), dtype="<u2")  # [B, G, R]

    def plane(blue: int) -> None:
        best = np.full((256, 256), np.inf, dtype=np.float32)  # [G, R]
        nearest = np.zeros((256, 256), dtype=np.uint8)
        for index in range(len(colors)):
            distance = np.add.outer(green_sq[index], red_sq[index])
            distance += float((blue - colors[index, 2]) ** 2)
            closer = distance < best  # strict: ties keep the earlier (evaluated) colour
            np.minimum(best, distance, out=best)
            np.putmask(nearest, closer, index)
        rounded = np.minimum(np.rint(np.sqrt(best)), 255).astype(np.uint16)
        table[blue] = train_ids[nearest] | (rounded << 8)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(plane, range(256)))
    return table.reshape(-1)


def _lut_is_right(table: np.ndarray) -> bool:
    """Spot check of a stored table: the palette colours and a few others, against brute force."""
    rng = np.random.default_rng(0)
    colors = np.concatenate([LABEL_COLORS, rng.integers(0, 256, size=(64, 3), dtype=np.uint8)]).astype(np.int64)
    codes = colors[:, 0] | colors[:, 1] << 8 | colors[:, 2] << 16
    squared = ((colors[:, None, :] - LABEL_COLORS[None].astype(np.int64)) ** 2).sum(-1)
    nearest = squared.argmin(axis=1)
    distance = np.minimum(np.rint(np.sqrt(squared.min(axis=1))), 255).astype(np.uint16)
    expected = LABEL_TRAIN_IDS[nearest].astype(np.uint16) | (distance << 8)
    return bool(np.array_equal(table[codes], expected))


def _load_or_build_lut() -> np.ndarray:
    """The table from the cache folder (memory-mapped), or built and stored there for next time.

    It depends only on the palette, so one copy serves every later process
    (32 MiB in ``default_cache_dir()``); an unwritable cache folder only costs
    the build in every process.
    """
    path = default_cache_dir() / f"palette-lut-v{LUT_FORMAT}.npy"
    try:
        table = np.asarray(np.load(path, mmap_mode="r"))
        if table.shape == (1 << 24,) and table.dtype == np.dtype("<u2") and _lut_is_right(table):
            return table
    except (OSError, ValueError):
        pass
    table = _build_lut()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temporary: np.save(temporary, table), suffix=".npy")
    except OSError:
        pass  # an unwritable cache only costs the build in every process
    return table


def _lut() -> np.ndarray:
    """The lookup table, loaded or built on first use (once per process)."""
    global _LUT
    if _LUT is None:
        with _LUT_LOCK:
            if _LUT is None:
                _LUT = _load_or_build_lut()
    return _LUT


def _color_codes(pixels: np.ndarray, bgr: bool = False) -> np.ndarray:
    """uint8 (H, W, 3) RGB (or BGR) pixels -> uint32 (H, W) codes R | G << 8 | B << 16."""
    height, width = pixels.shape[:2]
    # cvtColor writes 4 bytes per pixel (R, G, B, 255) in one fast pass; as a
    # little-endian uint32 that is the code plus an alpha byte, masked off.
    padded = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGBA if bgr else cv2.COLOR_RGB2RGBA)
    codes = padded.view("<u4").reshape(height, width)
    np.bitwise_and(codes, 0x00FFFFFF, out=codes)
    return codes


def _decode_packed(pixels: np.ndarray, bgr: bool = False) -> np.ndarray:
    """uint8 (H, W, 3) RGB (or BGR) -> '<u2' (H, W) packed train id | distance << 8: one gather."""
    return np.take(_lut(), _color_codes(pixels, bgr))


def decode_labels(label_rgb: np.ndarray, return_distance: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Snaps label colours to the nearest official Cityscapes colour and its train id.

    Nearest over all 29 distinct colours of the official table (void colours
    included), so a pixel close to a void colour becomes 255, not a class.

    Args:
        label_rgb: uint8 (..., H, W, 3) RGB label image(s).
        return_distance: also return each pixel's distance to its colour.

    Returns:
        uint8 (..., H, W) train ids 0-18, 255 for void; with
        ``return_distance``, ``(train_ids, distance)`` where ``distance`` is
        uint8 (..., H, W), the Euclidean RGB distance rounded and clipped to 255.

    Raises:
        DataError: ``label_rgb`` is not uint8 with 3 channels.
    """
    label_rgb = np.asarray(label_rgb)
    if label_rgb.dtype != np.uint8 or label_rgb.ndim < 3 or label_rgb.shape[-1] != 3:
        raise DataError(f"label colours must be uint8 (..., H, W, 3), got {label_rgb.dtype} {label_rgb.shape}")
    shape = label_rgb.shape[:-1]
    if label_rgb.size == 0:
        packed = np.zeros(shape, dtype="<u2")
    else:
        width = shape[-1]
        flat = label_rgb.reshape(-1, width, 3)  # (rows, W, 3), one cv2 image
        packed = _decode_packed(flat).reshape(shape)
    halves = packed.view(np.uint8).reshape(*shape, 2)
    train_ids = np.ascontiguousarray(halves[..., 0])
    if not return_distance:
        return train_ids
    return train_ids, np.ascontiguousarray(halves[..., 1])


# --- per-class shares -----------------------------------------------------------


def class_pixel_counts(train_ids: np.ndarray, num_classes: int = NUM_CLASSES, batch: int = 64) -> np.ndarray:
    """Pixels per train id, read in batches (works on memory maps).

    Args:
        train_ids: integer maps (..., H, W), e.g. the second output of ``load_split``.
        num_classes: number of classes C.
        batch: images per read, to bound memory.

    Returns:
        int64 (C + 1,): counts of ids 0..C-1, then of every other id (void, 255).
    """
    if not hasattr(train_ids, "shape"):
        train_ids = np.asarray(train_ids)
    counts = np.zeros(num_classes + 1, dtype=np.int64)
    if train_ids.ndim <= 2:
        chunks: Iterable = [train_ids]
    else:
        chunks = (train_ids[start : start + batch] for start in range(0, len(train_ids), batch))
    for chunk in chunks:
        values = np.asarray(chunk).reshape(-1)
        if values.dtype != np.uint8:  # any other id, negative ones included, is void
            values = np.where((values >= 0) & (values < num_classes), values, num_classes)
        counts += np.bincount(values, minlength=256)[: num_classes + 1]
        counts[num_classes] += int(np.count_nonzero(values > num_classes))
    return counts


def class_pixel_shares(train_ids: np.ndarray, num_classes: int = NUM_CLASSES, valid_only: bool = False) -> np.ndarray:
    """Share of pixels per class.

    Args:
        train_ids: integer maps (..., H, W); ids outside 0..C-1 are void.
        num_classes: number of classes C.
        valid_only: divide by the non-void pixels instead of all pixels.

    Returns:
        float64 (C,). With ``valid_only=False`` the void share is ``1 - sum``.
    """
    counts = class_pixel_counts(train_ids, num_classes)
    total = counts[:num_classes].sum() if valid_only else counts.sum()
    return counts[:num_classes] / max(int(total), 1)
