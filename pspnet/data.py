"""Cityscapes image pairs on disk -> cached uint8 arrays (and, via pipeline, batches).

The Kaggle "cityscapes-image-pairs" files are 256x512 JPEG composites: the
street photo on the left half, the ``gtFine_color`` label image (resized
bilinearly, then JPEG-compressed) on the right. This module reads them
strictly, snaps every label pixel to the nearest official colour with one
table lookup, and caches the decoded split on disk so that the second load is
a memory map.

Example::

    photos, train_ids = load_split("cityscapes_data/val")  # (500,256,256,3), (500,256,256)
    dataset = SegmentationDataset(photos, train_ids, batch_size=8)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from pspnet.errors import ConfigError, DataError, PspnetWarning
from pspnet.fileio import TEMPORARY_MARK, atomic_write, temporary_name
from pspnet.palette import LABEL_COLORS, LABEL_TRAIN_IDS, NUM_CLASSES

__all__ = [
    "CACHE_FORMAT",
    "FAR_DISTANCE",
    "IMAGE_SUFFIXES",
    "SegmentationDataset",
    "SplitSummary",
    "class_pixel_counts",
    "class_pixel_shares",
    "decode_labels",
    "default_cache_dir",
    "list_images",
    "load_split",
    "natural_key",
    "read_any_photo",
    "read_pair",
    "read_photo",
    "split_composite",
    "summarize_split",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# A label pixel farther than this (Euclidean RGB) from every palette colour is
# "far". Measured on real val labels: JPEG noise moves 99.5% of the pixels of
# uniform regions by at most 16; 29% of border pixels (bilinear blends) and
# ~10% of all pixels lie beyond 30; see tests/test_real_data.py.
FAR_DISTANCE = 30
FAR_IMAGE_SHARE = 0.5  # a label half with more far pixels than this triggers a warning
CACHE_FORMAT = 1  # bump when the cache layout or the decoding changes
TARGETS = ("train_ids", "rgb")

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TAIL_BYTES = 64  # where the end marker (JPEG EOI, PNG IEND) lies in a file that ends with it
_CHUNK = 32  # images per decoding task


# --- files ------------------------------------------------------------------


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: 1, 2, ..., 10, not 1, 10, 2.

    Args:
        name: a file name.

    Returns:
        A list alternating text (lower case) and integers, then the name itself.
    """
    parts: list = [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
    return parts + [name]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The .jpg/.jpeg/.png files of a folder in natural order.

    Other files are skipped and counted in one ``PspnetWarning``; sub-folders
    are ignored.

    Args:
        folder: a split folder, e.g. ``cityscapes_data/train``.

    Returns:
        Paths in natural order (1.jpg, 2.jpg, ..., 10.jpg).

    Raises:
        DataError: the folder is missing, is not a folder, or holds no image.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"data folder not found: {folder}")
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    images, others = [], []
    for entry in os.scandir(folder):
        if entry.is_dir():
            continue
        if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
            images.append(entry.name)
        else:
            others.append(entry.name)
    if others:
        others.sort(key=natural_key)
        examples = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        warnings.warn(
            f"skipped {len(others)} non-image file{'s' if len(others) > 1 else ''} in {folder} "
            f"({examples}); only {'/'.join(IMAGE_SUFFIXES)} are read",
            PspnetWarning,
            stacklevel=2,
        )
    if not images:
        hint = ""
        splits = [name for name in ("train", "val") if (folder / name).is_dir()]
        if splits:
            hint = f"; it holds {'/ '.join(splits)}/: pass one of them"
        raise DataError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder}{hint}")
    images.sort(key=natural_key)
    return [folder / name for name in images]


def _decode_file(path: Path, flags: int) -> tuple[np.ndarray, np.ndarray]:
    """Reads one file, checks it is a whole JPEG/PNG, decodes it with ``flags``.

    Returns:
        ``(image, data)``: what ``cv2.imdecode`` made of it and the file's bytes.

    Raises:
        DataError: missing, unreadable, empty, truncated, not JPEG/PNG, or corrupt.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    if data.size == 0:
        raise DataError(f"empty file: {path}")
    head = data[:8].tobytes()
    tail = data[-_TAIL_BYTES:].tobytes()
    if head.startswith(_JPEG_MAGIC):
        # libjpeg decodes a cut-off file silently (grey bottom rows); the
        # missing end-of-image marker is what gives it away. Most files end
        # with it; phones' motion photos and maker data put bytes after it.
        if b"\xff\xd9" not in tail and _jpeg_end(data) is None:
            raise DataError(f"truncated JPEG (no end-of-image marker): {path}")
    elif head.startswith(_PNG_MAGIC):
        if b"IEND" not in tail:
            raise DataError(f"truncated PNG (no IEND chunk): {path}")
    else:
        raise DataError(f"not a JPEG or PNG image: {path}")
    image = cv2.imdecode(data, flags)
    if image is None:
        raise DataError(f"cannot decode image (corrupt data): {path}")
    return image, data


def _jpeg_end(data: np.ndarray) -> int | None:
    """The offset just past a JPEG's end-of-image marker after its last scan; None when it is cut off.

    Walks the markers from the start, jumping over each segment by its length
    and over each scan's entropy-coded data to the next marker with a
    vectorised search, so a few dozen Python steps whatever the file's size.
    Whatever follows the marker (an MP4, maker data) is not read.
    """
    size = len(data)
    position = 2  # after start-of-image
    while position + 1 < size:
        if data[position] != 0xFF:
            return None  # no marker where one must be: damaged
        marker = int(data[position + 1])
        if marker == 0xFF:  # a fill byte before a marker
            position += 1
        elif marker == 0xD9:
            return position + 2
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a segment
            position += 2
        elif position + 4 > size:
            return None
        else:
            position += 2 + (int(data[position + 2]) << 8 | int(data[position + 3]))
            if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next marker
                position = _next_marker(data, position)
                if position is None:
                    return None
    return None


_SCAN_CHUNK = 1 << 20  # bytes searched for a marker at a time


def _next_marker(data: np.ndarray, start: int) -> int | None:
    """The offset of the first marker at or after ``start`` in entropy-coded data, or None.

    Inside a scan 0xFF is followed only by 0x00 (a stuffed byte), a restart
    marker (0xD0-0xD7, part of the scan) or another 0xFF (fill): any other
    byte after it begins the marker that ends the scan.
    """
    for begin in range(start, len(data) - 1, _SCAN_CHUNK):
        candidates = begin + np.flatnonzero(data[begin : min(begin + _SCAN_CHUNK, len(data) - 1)] == 0xFF)
        following = data[candidates + 1]
        found = np.flatnonzero((following != 0x00) & (following != 0xFF) & ((following < 0xD0) | (following > 0xD7)))
        if len(found):
            return int(candidates[found[0]])
    return None


def _read_image(path: Path, what: str) -> np.ndarray:
    """Reads one JPEG/PNG strictly: uint8 BGR (H, W, 3). Raises DataError.

    ``what`` names the expected content in the greyscale messages.
    """
    # IMREAD_UNCHANGED ignores EXIF orientation: training pairs are read as stored.
    image, _ = _decode_file(path, cv2.IMREAD_UNCHANGED)
    if image.dtype != np.uint8:
        raise DataError(f"{image.dtype} image, expected 8 bits per channel: {path}")
    if image.ndim == 2 or image.shape[2] == 1:
        raise DataError(f"greyscale image, expected {what}: {path}")
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if _is_grey(image):
        raise DataError(f"greyscale image (all three channels equal), expected {what}: {path}")
    return image


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """Reads one photo (or composite, whole) with the checks of ``read_pair``.

    Args:
        path: a .jpg/.jpeg/.png file.

    Returns:
        uint8 (H, W, 3) RGB.

    Raises:
        DataError: missing, unreadable, truncated, corrupt or greyscale file;
            the message names the file.
    """
    return cv2.cvtColor(_read_image(Path(path), "an RGB photo"), cv2.COLOR_BGR2RGB)


def _exif_orientation(data: np.ndarray) -> int:
    """The EXIF orientation (1-8) in a JPEG/PNG file's bytes; 1 when there is none.

    Walks the JPEG markers (PNG chunks) before the image data only: a few
    jumps through the header, not a second decode.
    """
    import struct

    view = memoryview(data)
    tiff = None
    try:
        if view[:3] == _JPEG_MAGIC:
            offset = 2
            while offset + 4 <= len(view) and view[offset] == 0xFF:
                marker = view[offset + 1]
                if marker in (0xD9, 0xDA):  # end of image, start of scan: no metadata after
                    break
                length = struct.unpack_from(">H", view, offset + 2)[0]
                if marker == 0xE1 and view[offset + 4 : offset + 10] == b"Exif\0\0":
                    tiff = view[offset + 10 : offset + 2 + length]
                    break
                offset += 2 + length
        else:
            offset = len(_PNG_MAGIC)
            while offset + 8 <= len(view):  # chunks: length, type, data, CRC
                length = struct.unpack_from(">I", view, offset)[0]
                kind = view[offset + 4 : offset + 8].tobytes()
                if kind == b"eXIf":
                    tiff = view[offset + 8 : offset + 8 + length]
                    break
                if kind in (b"IDAT", b"IEND"):
                    break
                offset += 12 + length
        if tiff is None:
            return 1
        order = {b"II": "<", b"MM": ">"}[tiff[:2].tobytes()]
        ifd = struct.unpack_from(order + "I", tiff, 4)[0]
        for entry in range(struct.unpack_from(order + "H", tiff, ifd)[0]):
            tag, kind = struct.unpack_from(order + "HH", tiff, ifd + 2 + 12 * entry)
            if tag == 0x0112 and kind == 3:  # Orientation, a SHORT
                value = struct.unpack_from(order + "H", tiff, ifd + 2 + 12 * entry + 8)[0]
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error):
        pass  # malformed metadata: the decoder ignores it too
    return 1


def read_any_photo(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Reads a photo as people have them: upright, greyscale or 16-bit allowed.

    Unlike the strict ``read_photo`` (training data), it applies the EXIF
    orientation, turns greyscale into three equal channels and 16 bits per
    channel into 8 (value / 257, rounded), and drops alpha. Missing, empty,
    truncated, corrupt and non-JPEG/PNG files are refused as by ``read_photo``.

    Args:
        path: a .jpg/.jpeg/.png file.

    Returns:
        ``(photo, notes)``: uint8 (H, W, 3) RGB, and what was changed or
        noticed, e.g. ``["EXIF orientation applied", "16-bit converted"]``
        (empty for an ordinary colour photo).

    Raises:
        DataError: an unusable file; the message names it.
    """
    path = Path(path)
    # ANYDEPTH | ANYCOLOR keeps 16 bits and grey as stored but, unlike
    # IMREAD_UNCHANGED, applies the EXIF orientation and drops alpha.
    image, data = _decode_file(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    notes = []
    if _exif_orientation(data) != 1:
        notes.append("EXIF orientation applied")
    if image.dtype == np.uint16:
        # (x + 128) // 257 is x / 257 rounded: 65535 -> 255, exact in integers.
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
        notes.append("16-bit converted")
    elif image.dtype != np.uint8:
        raise DataError(f"{image.dtype} image, expected 8 or 16 bits per channel: {path}")
    if image.ndim == 3 and image.shape[2] in (1, 2):  # grey, grey + alpha
        image = image[..., 0]
    if image.ndim == 2:
        notes.append("greyscale converted")
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB), notes
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if _is_grey(image):
        notes.append("greyscale (three equal channels)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), notes


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


def _is_grey(image: np.ndarray) -> bool:
    """True when every pixel has equal B, G and R (a grey image saved as colour)."""
    row = image[0]
    # Cheap rejection on the first row before the full comparison.
    if not (np.array_equal(row[:, 0], row[:, 1]) and np.array_equal(row[:, 1], row[:, 2])):
        return False
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


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


# --- label decoding -----------------------------------------------------------

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
    path = default_cache_dir() / f"palette-lut-v{CACHE_FORMAT}.npy"
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


def decode_labels(
    label_rgb: np.ndarray, return_distance: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
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
        raise DataError(
            f"label colours must be uint8 (..., H, W, 3), got {label_rgb.dtype} {label_rgb.shape}"
        )
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


def class_pixel_counts(
    train_ids: np.ndarray, num_classes: int = NUM_CLASSES, batch: int = 64
) -> np.ndarray:
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


def class_pixel_shares(
    train_ids: np.ndarray, num_classes: int = NUM_CLASSES, valid_only: bool = False
) -> np.ndarray:
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


# --- loading and caching ------------------------------------------------------------


def default_cache_dir() -> Path:
    """The cache root: ``$PSPNET_CACHE``, else ``~/.cache/pspnet``."""
    root = os.environ.get("PSPNET_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "pspnet"


@dataclass
class SplitSummary:
    """What a decoded split holds; kept in the cache beside the arrays.

    ``class_pixels`` is int64 (NUM_CLASSES + 1,): ids 0-18, then void.
    ``distance_histogram`` is int64 (256,): label pixels per rounded distance
    to the nearest palette colour.
    """

    folder: str
    num_images: int
    image_size: tuple[int, int]  # (height, width) of one half
    files: list[str]
    class_pixels: np.ndarray
    distance_histogram: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    far_images: list[tuple[str, float]] = field(default_factory=list)  # (file, far share)
    seconds: float = 0.0  # decoding time (0 when read from the cache)
    cached: bool = False  # read from the cache

    def class_shares(self) -> np.ndarray:
        """float64 (NUM_CLASSES + 1,): share of all label pixels per class, void last."""
        return self.class_pixels / max(int(self.class_pixels.sum()), 1)

    def far_share(self, threshold: int = FAR_DISTANCE) -> float:
        """Share of label pixels farther than ``threshold`` (0 or more) from every palette colour."""
        if threshold < 0:  # a negative index would count the last bins instead
            raise ConfigError(f"threshold={threshold} must be 0 or more", flags={"threshold=": "--far "})
        return float(self.distance_histogram[threshold + 1 :].sum() / max(int(self.distance_histogram.sum()), 1))

    def distance_percentile(self, q: float) -> int:
        """The q-th percentile (0-100) of the per-pixel decode distance."""
        cumulative = np.cumsum(self.distance_histogram)
        if cumulative[-1] == 0:
            return 0
        return int(np.searchsorted(cumulative, q / 100.0 * cumulative[-1], side="left"))

    def mean_distance(self) -> float:
        """The mean per-pixel decode distance."""
        total = max(int(self.distance_histogram.sum()), 1)
        return float((self.distance_histogram * np.arange(256)).sum() / total)

    def to_json(self) -> dict:
        return {
            "folder": self.folder,
            "num_images": self.num_images,
            "image_size": list(self.image_size),
            "files": self.files,
            "class_pixels": self.class_pixels.tolist(),
            "distance_histogram": self.distance_histogram.tolist(),
            "skipped": [list(item) for item in self.skipped],
            "far_images": [list(item) for item in self.far_images],
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: dict) -> "SplitSummary":
        return cls(
            folder=data["folder"],
            num_images=int(data["num_images"]),
            image_size=tuple(data["image_size"]),
            files=list(data["files"]),
            class_pixels=np.asarray(data["class_pixels"], dtype=np.int64),
            distance_histogram=np.asarray(data["distance_histogram"], dtype=np.int64),
            skipped=[tuple(item) for item in data["skipped"]],
            far_images=[(name, float(share)) for name, share in data["far_images"]],
            seconds=float(data.get("seconds", 0.0)),
        )


class _MemorySink:
    """Collects decoded chunks into preallocated arrays."""

    def __init__(self, count: int, photo_shape: tuple, target_shape: tuple, target_dtype):
        self.photos = np.empty((count, *photo_shape), dtype=np.uint8)
        self.targets = np.empty((count, *target_shape), dtype=target_dtype)
        self.filled = 0

    def write(self, photos: np.ndarray, targets: np.ndarray) -> None:
        stop = self.filled + len(photos)
        self.photos[self.filled : stop] = photos
        self.targets[self.filled : stop] = targets
        self.filled = stop

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.photos[: self.filled], self.targets[: self.filled]


_NPY_HEADER_BYTES = 128  # fixed, so the final count can be written in place


def _npy_header(dtype: np.dtype, shape: tuple) -> bytes:
    """A version 1.0 .npy header padded to a fixed length."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    body_length = _NPY_HEADER_BYTES - 10  # magic (6) + version (2) + length (2)
    text = text.ljust(body_length - 1) + "\n"
    if len(text) != body_length:
        raise ValueError(f"shape {shape} too long for the .npy header")
    return b"\x93NUMPY\x01\x00" + body_length.to_bytes(2, "little") + text.encode("latin1")


class _FileSink:
    """Streams decoded chunks into two .npy files.

    Plain sequential writes keep the process's resident memory at a few chunks
    (written pages sit in the OS page cache, not in the process), unlike
    writing through a memory map, whose touched pages count as resident.
    """

    def __init__(self, folder: Path, count: int, photo_shape: tuple, target_shape: tuple, target_dtype):
        self.shapes = {"photos": photo_shape, "targets": target_shape}
        self.dtypes = {"photos": np.dtype(np.uint8), "targets": np.dtype(target_dtype)}
        self.files = {}
        for name in ("photos", "targets"):
            handle = open(folder / f"{name}.npy", "wb")
            handle.write(_npy_header(self.dtypes[name], (count, *self.shapes[name])))
            self.files[name] = handle
        self.filled = 0

    def write(self, photos: np.ndarray, targets: np.ndarray) -> None:
        for name, array in (("photos", photos), ("targets", targets)):
            self.files[name].write(memoryview(np.ascontiguousarray(array, dtype=self.dtypes[name])).cast("B"))
        self.filled += len(photos)

    def close(self) -> None:
        for name, handle in self.files.items():
            if not handle.closed:
                handle.seek(0)
                handle.write(_npy_header(self.dtypes[name], (self.filled, *self.shapes[name])))
                handle.close()

    def abort(self) -> None:
        for handle in self.files.values():
            handle.close()


def _decode_chunk(paths: list[Path], size: tuple[int, int], target: str) -> dict:
    """Reads and decodes a run of files (runs on a worker thread).

    Returns:
        dict with ``photos`` uint8 (k, H, W, 3), ``targets`` (k, H, W) uint8
        or (k, H, W, 3) float32, ``kept`` file indices within ``paths``,
        ``errors`` [(index, DataError)], ``class_pixels`` and
        ``distance_histogram`` int64 (256,) over the kept files, and ``far``
        [(index, share)] for label halves mostly far from the palette.
    """
    height, width = size
    count = len(paths)
    photos = np.empty((count, height, width, 3), dtype=np.uint8)
    if target == "rgb":
        targets = np.empty((count, height, width, 3), dtype=np.float32)
    else:
        targets = np.empty((count, height, width), dtype=np.uint8)
    class_pixels = np.zeros(256, dtype=np.int64)
    distance_histogram = np.zeros(256, dtype=np.int64)
    kept, errors, far = [], [], []
    for index, path in enumerate(paths):
        try:
            image = _read_composite(path)
            if image.shape[:2] != (height, 2 * width):
                raise DataError(
                    f"{path.name} is {image.shape[1]}x{image.shape[0]} pixels but the first image of "
                    f"the folder is {2 * width}x{height}; every file of a split must have one size: {path}"
                )
        except DataError as error:
            errors.append((index, error))
            continue
        slot = len(kept)
        kept.append(index)
        cv2.cvtColor(image[:, :width], cv2.COLOR_BGR2RGB, dst=photos[slot])
        label_bgr = image[:, width:]
        # (H, W, 2) bytes per pixel: train id, distance to its palette colour.
        decoded = _decode_packed(label_bgr, bgr=True).view(np.uint8).reshape(height, width, 2)
        if target == "rgb":
            label_rgb = cv2.cvtColor(label_bgr, cv2.COLOR_BGR2RGB)
            np.multiply(label_rgb, np.float32(1.0 / 255.0), out=targets[slot], dtype=np.float32)
        else:
            targets[slot] = decoded[..., 0]
        # cv2.calcHist reads one channel of the interleaved pairs without a copy.
        class_pixels += cv2.calcHist([decoded], [0], None, [256], [0, 256]).reshape(-1).astype(np.int64)
        distances = cv2.calcHist([decoded], [1], None, [256], [0, 256]).reshape(-1).astype(np.int64)
        distance_histogram += distances
        share = distances[FAR_DISTANCE + 1 :].sum() / (height * width)
        if share > FAR_IMAGE_SHARE:
            far.append((index, float(share)))
    used = len(kept)
    return {
        "photos": photos[:used],
        "targets": targets[:used],
        "kept": kept,
        "errors": errors,
        "class_pixels": class_pixels,
        "distance_histogram": distance_histogram,
        "far": far,
    }


def _file_key(paths: list[Path], target: str) -> tuple[str, list]:
    """The cache key: a hash of the format version, the target and every file's name, size, mtime."""
    stats = []
    for path in paths:
        try:
            info = path.stat()
        except OSError:  # a dangling link, a file just removed: decoding names it (or skip_bad skips it)
            stats.append([path.name, None, None])
            continue
        stats.append([path.name, info.st_size, info.st_mtime_ns])
    text = json.dumps({"format": CACHE_FORMAT, "target": target, "files": stats}, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24], stats


def _entry_prefix(folder: Path, target: str) -> str:
    """Cache entries of one folder and target share this prefix (older ones are evicted)."""
    resolved = str(folder.resolve())
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.resolve().name)[:40] or "split"
    return f"{name}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}-{target}-"


def _warn_problems(summary: SplitSummary, folder: Path, skip_bad: bool) -> None:
    """The warnings of a decoded split (also replayed from the cache)."""
    if summary.skipped:
        if not skip_bad:
            raise DataError(summary.skipped[0][1])  # the reason, naming the file
        names = ", ".join(name for name, _ in summary.skipped[:3])
        more = ", ..." if len(summary.skipped) > 3 else ""
        warnings.warn(
            f"skipped {len(summary.skipped)} unusable file{'s' if len(summary.skipped) > 1 else ''} in "
            f"{folder} ({names}{more}); first: {summary.skipped[0][1]}",
            PspnetWarning,
            stacklevel=3,
        )
    if summary.far_images:
        name, share = max(summary.far_images, key=lambda item: item[1])
        warnings.warn(
            f"{len(summary.far_images)} of {summary.num_images} label halves in {folder} are mostly far "
            f"from the Cityscapes palette, e.g. {name}: {share:.0%} of its label pixels are farther than "
            f"{FAR_DISTANCE} from every palette colour (are these colour label images?)",
            PspnetWarning,
            stacklevel=3,
        )


def _read_entry(entry: Path, key: str) -> tuple[np.ndarray, np.ndarray, SplitSummary] | None:
    """A complete, matching cache entry memory-mapped, or None."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            return None
        summary = SplitSummary.from_json(meta["summary"])
        photos = np.load(entry / "photos.npy", mmap_mode="r")
        targets = np.load(entry / "targets.npy", mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    height, width = summary.image_size
    if photos.shape != (summary.num_images, height, width, 3) or len(targets) != summary.num_images:
        return None
    summary.cached = True
    summary.seconds = 0.0
    return photos, targets, summary


def _first_size(paths: list[Path], skip_bad: bool) -> tuple[int, int]:
    """(height, width) of one half, from the first readable file."""
    for path in paths:
        try:
            image = _read_composite(path)
        except DataError:
            if skip_bad:
                continue
            raise
        return image.shape[0], image.shape[1] // 2
    raise DataError(f"no readable image among the {len(paths)} files of {paths[0].parent}")


def _decode_split(
    folder: Path, paths: list[Path], target: str, skip_bad: bool, workers: int, progress: bool, sink_factory
) -> tuple[object, SplitSummary]:
    """Decodes every file on threads into the sink made by ``sink_factory(count, size)``."""
    started = time.perf_counter()
    size = _first_size(paths, skip_bad)
    sink = sink_factory(len(paths), size)
    from tqdm.auto import tqdm

    # disable=None: a bar only on a terminal (or notebook), never in logs.
    bar = tqdm(
        total=len(paths), desc=f"decode {folder.name}", unit="img", disable=None if progress else True, leave=False
    )
    class_pixels = np.zeros(256, dtype=np.int64)
    distance_histogram = np.zeros(256, dtype=np.int64)
    kept_names: list[str] = []
    skipped: list[tuple[str, str]] = []
    far: list[tuple[str, float]] = []
    chunks = [paths[start : start + _CHUNK] for start in range(0, len(paths), _CHUNK)]
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        pending = []
        next_chunk = 0
        # At most 2 chunks per worker in flight: memory stays bounded and results
        # are written in file order.
        while next_chunk < len(chunks) or pending:
            while next_chunk < len(chunks) and len(pending) < 2 * workers:
                pending.append((chunks[next_chunk], pool.submit(_decode_chunk, chunks[next_chunk], size, target)))
                next_chunk += 1
            chunk_paths, future = pending.pop(0)
            result = future.result()
            for index, error in result["errors"]:
                if not skip_bad:
                    raise error
                skipped.append((chunk_paths[index].name, str(error)))
            sink.write(result["photos"], result["targets"])
            kept_names.extend(chunk_paths[index].name for index in result["kept"])
            far.extend((chunk_paths[index].name, round(share, 4)) for index, share in result["far"])
            class_pixels += result["class_pixels"]
            distance_histogram += result["distance_histogram"]
            bar.update(len(chunk_paths))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if not kept_names:
        raise DataError(f"none of the {len(paths)} images in {folder} could be read ({skipped[0][1]})")
    summary = SplitSummary(
        folder=str(folder),
        num_images=len(kept_names),
        image_size=size,
        files=kept_names,
        class_pixels=np.append(class_pixels[:NUM_CLASSES], class_pixels[NUM_CLASSES:].sum()),
        distance_histogram=distance_histogram,
        skipped=skipped,
        far_images=far,
        seconds=round(time.perf_counter() - started, 3),
    )
    return sink, summary


def _target_spec(target: str, size: tuple[int, int]) -> tuple[tuple, np.dtype]:
    height, width = size
    if target == "rgb":
        return (height, width, 3), np.dtype(np.float32)
    return (height, width), np.dtype(np.uint8)


@contextlib.contextmanager
def _folder_lock(folder: Path, wait: bool = True):
    """Holds an ``flock`` on a folder itself (its descriptor: no lock file to clean up).

    Yields True once held, or False when ``wait`` is off and another process
    (or another descriptor of this one) holds it. The kernel drops it when its
    holder ends, however it ends. Where ``fcntl`` does not exist (Windows) it
    yields True and locks nothing.
    """
    try:
        import fcntl
    except ImportError:
        yield True
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(descriptor)


def _keyed_at(entry: Path) -> float:
    """When the files of a cache entry were looked at (0 for a damaged entry, which nobody writes into)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        return float(meta.get("keyed", meta["created"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0.0


def _clean_stale(root: Path, prefix: str, keep: str, keyed: float) -> None:
    """Removes the entries of the same folder and target keyed before ``keyed``, and abandoned temporary folders.

    Runs under the cache folder's lock. Another process's entry keyed later
    (it saw newer files) is kept, and so is the temporary folder of a writer
    still at work, however long it takes: the writer holds its lock.
    """
    now = time.time()
    for entry in root.iterdir():
        try:
            if entry.name.startswith(prefix) and entry.name != keep:
                if _keyed_at(entry) < keyed:
                    shutil.rmtree(entry, ignore_errors=True)
            elif TEMPORARY_MARK in entry.name and now - entry.stat().st_mtime > 3600:
                with _folder_lock(entry, wait=False) as abandoned:
                    if abandoned:
                        shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def _publish(root: Path, temporary: Path, entry: Path, key: str, prefix: str, keyed: float):
    """Moves a finished temporary entry into place, cleans up, and reads the entry back, under the cache's lock.

    An entry of the same key that another process finished first is kept and
    read instead (removing it could break that process's memory map).

    Returns:
        What ``_read_entry`` gives for the entry.
    """
    with _folder_lock(root):
        found = _read_entry(entry, key) if entry.is_dir() else None
        if found is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            if entry.exists():  # a damaged entry
                shutil.rmtree(entry, ignore_errors=True)
            try:
                os.rename(temporary, entry)
            except OSError:
                shutil.rmtree(temporary, ignore_errors=True)
            found = _read_entry(entry, key)  # mapped before anyone's clean-up can remove it
        _clean_stale(root, prefix, entry.name, keyed)
    return found


def _load(
    folder: str | os.PathLike,
    cache_dir,
    target: str,
    skip_bad: bool,
    workers: int | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, SplitSummary]:
    """load_split plus its summary."""
    if target not in TARGETS:
        raise ConfigError(f"target must be one of {TARGETS}, got {target!r}")
    folder = Path(folder)
    paths = list_images(folder)
    workers = max(1, int(workers or min(8, os.cpu_count() or 1)))
    sink_factory_memory = lambda count, size: _MemorySink(count, (*size, 3), *_target_spec(target, size))  # noqa: E731

    if cache_dir is False:
        sink, summary = _decode_split(folder, paths, target, skip_bad, workers, progress, sink_factory_memory)
        _warn_problems(summary, folder, skip_bad)
        return (*sink.result(), summary)

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "splits"
    keyed = time.time()  # an entry keyed later than this one saw newer files, and is never cleaned up by it
    key, _ = _file_key(paths, target)
    prefix = _entry_prefix(folder, target)
    entry = root / f"{prefix}{key}"
    found = _read_entry(entry, key) if entry.is_dir() else None
    if found is not None:
        _warn_problems(found[2], folder, skip_bad)
        return found

    try:
        root.mkdir(parents=True, exist_ok=True)
        temporary = temporary_name(entry)
        temporary.mkdir()
    except OSError as error:
        warnings.warn(
            f"cannot write the cache in {root} ({error.strerror or error}); decoding {folder} into memory",
            PspnetWarning,
            stacklevel=3,
        )
        sink, summary = _decode_split(folder, paths, target, skip_bad, workers, progress, sink_factory_memory)
        _warn_problems(summary, folder, skip_bad)
        return (*sink.result(), summary)

    sink = None
    # Held until the entry is in place: another process's clean-up leaves this folder alone.
    with _folder_lock(temporary):
        try:

            def file_sink(count, size):
                nonlocal sink
                sink = _FileSink(temporary, count, (*size, 3), *_target_spec(target, size))
                return sink

            _, summary = _decode_split(folder, paths, target, skip_bad, workers, progress, file_sink)
            sink.close()
            meta = {
                "format": CACHE_FORMAT, "key": key, "target": target, "keyed": keyed, "created": time.time(),
                "summary": summary.to_json(),
            }
            # meta.json is written last: an entry without it is never trusted.
            (temporary / "meta.json").write_text(json.dumps(meta))
        except BaseException:
            if sink is not None:
                sink.abort()
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        found = _publish(root, temporary, entry, key, prefix, keyed)
    if found is None:
        raise DataError(f"the cache entry just written cannot be read back: {entry}")
    found[2].cached = False
    found[2].seconds = summary.seconds
    _warn_problems(found[2], folder, skip_bad)
    return found


def load_split(
    folder: str | os.PathLike,
    cache_dir: str | os.PathLike | None | bool = None,
    target: str = "train_ids",
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Reads a split folder of composites into photos and targets, cached on disk.

    Files are read in natural order, split into halves, the label half decoded
    with ``decode_labels``. The arrays are cached in ``cache_dir`` under a key
    made of every file's name, size and modification time (and ``target``):
    the next call with unchanged files memory-maps them instead of decoding.
    A cache entry is written into a temporary folder and renamed into place
    only when complete, so an interrupted run never leaves one that is trusted.
    Processes loading at once share the cache: entries are placed and removed
    under a lock on the cache folder, and an entry of newer files (keyed later)
    or one still being written is never removed by another process.

    Args:
        folder: a folder of .jpg/.jpeg/.png composites (photo left, label right).
        cache_dir: where cache entries live; None: ``default_cache_dir()/splits``
            ($PSPNET_CACHE or ~/.cache/pspnet); False: no cache, decode into memory.
        target: "train_ids" for uint8 class maps, or "rgb" for the seed's
            colour-regression target (the label half as float32 RGB in [0, 1]).
        skip_bad: skip unusable files (unreadable, truncated, greyscale, wrong
            size) with one warning, instead of raising.
        workers: decoding threads (default: the CPU count, at most 8).
        progress: show a progress bar while decoding.

    Returns:
        ``(photos, targets)``: photos uint8 (N, H, W, 3) RGB; targets uint8
        (N, H, W) train ids (255 void) or, for target="rgb", float32
        (N, H, W, 3). Cached arrays are read-only ``np.memmap``.

    Raises:
        DataError: missing or empty folder, or an unusable file (without skip_bad).
        ConfigError: unknown ``target``.
    """
    photos, targets, _ = _load(folder, cache_dir, target, skip_bad, workers, progress)
    return photos, targets


def summarize_split(
    folder: str | os.PathLike,
    cache_dir: str | os.PathLike | None | bool = None,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> SplitSummary:
    """Decodes (or reads from the cache) a split and returns what it holds.

    Args: as ``load_split``.

    Returns:
        A ``SplitSummary``: file count, image size, pixels per class and the
        histogram of decode distances.
    """
    return _load(folder, cache_dir, "train_ids", skip_bad, workers, progress)[2]


def __getattr__(name: str):
    # The pipeline needs keras; import it only when asked for.
    if name == "SegmentationDataset":
        from pspnet.pipeline import SegmentationDataset

        return SegmentationDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
