"""Photo and label files on disk: listing in natural order, strict and lenient reading.

Strict reading (``_read_image``, ``read_photo``) refuses a file that is not a
whole JPEG or PNG; ``read_any_photo`` also turns photos upright by their EXIF
orientation and converts greyscale, 16-bit and alpha images.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

from pspnet.errors import DataError, PspnetWarning

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TAIL_BYTES = 64  # where the end marker (JPEG EOI, PNG IEND) lies in a file that ends with it


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


def _is_grey(image: np.ndarray) -> bool:
    """True when every pixel has equal B, G and R (a grey image saved as colour)."""
    row = image[0]
    # Cheap rejection on the first row before the full comparison.
    if not (np.array_equal(row[:, 0], row[:, 1]) and np.array_equal(row[:, 1], row[:, 2])):
        return False
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


# --- header sizes and masks (the cityscapes and folders layouts) --------------------

_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0-SOF15: not DHT, JPG, DAC
_HEADER_BYTES = 1 << 16


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """The (height, width) a JPEG or PNG file declares in its header, without decoding it.

    The size as stored: EXIF orientation is not applied (as ``read_photo``,
    ``read_mask`` and ``read_stored_photo`` read files).

    Raises:
        DataError: missing, unreadable, not JPEG/PNG, or no size in the header.
    """
    import struct

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(32)
            if head.startswith(_PNG_MAGIC) and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                return int(height), int(width)
            if head.startswith(_JPEG_MAGIC):
                handle.seek(2)
                while True:  # marker segments up to the frame header
                    marker = handle.read(4)
                    if len(marker) < 4 or marker[0] != 0xFF:
                        break
                    if marker[1] in _JPEG_FRAME_MARKERS:
                        frame = handle.read(5)
                        if len(frame) == 5:
                            height, width = struct.unpack(">HH", frame[1:5])
                            return int(height), int(width)
                        break
                    handle.seek(struct.unpack(">H", marker[2:4])[0] - 2, os.SEEK_CUR)
            elif not head.startswith(_PNG_MAGIC):
                raise DataError(f"not a JPEG or PNG image: {path}")
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    raise DataError(f"no image size in the file's header (damaged file): {path}")


def _png_palette(data: np.ndarray) -> np.ndarray | None:
    """(N, 3) uint8 RGB: the PLTE table of an indexed-colour PNG (colour type 3); None for other PNGs."""
    import struct

    view = data.tobytes()
    if len(view) < 26 or view[25] != 3:  # IHDR's colour type
        return None
    offset = len(_PNG_MAGIC)
    while offset + 8 <= len(view):  # chunks: length, type, data, CRC
        length = struct.unpack_from(">I", view, offset)[0]
        kind = view[offset + 4 : offset + 8]
        if kind == b"PLTE":
            return np.frombuffer(view[offset + 8 : offset + 8 + length], np.uint8).reshape(-1, 3)
        if kind in (b"IDAT", b"IEND"):
            break
        offset += 12 + length
    return None


def _png_grey_depth(data: np.ndarray) -> int | None:
    """The bit depth of a greyscale PNG (colour type 0, or 4: grey and alpha); None for other PNGs."""
    if len(data) < 26 or data[25] not in (0, 4):  # IHDR's colour type
        return None
    return int(data[24])


def _palette_indices(image_bgr: np.ndarray, palette: np.ndarray, path: Path) -> np.ndarray:
    """An indexed PNG decoded to colours (BGR) -> its palette indices (H, W) uint8."""
    codes = palette.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])  # RGB code of each index
    if len(np.unique(codes)) != len(codes):
        raise DataError(
            f"indexed-colour mask whose palette gives two indices one colour (cannot read the indices back): {path}"
        )
    order = np.argsort(codes)
    pixels = image_bgr[..., 2].astype(np.int64) << 16 | image_bgr[..., 1].astype(np.int64) << 8 | image_bgr[..., 0]
    found = np.clip(np.searchsorted(codes[order], pixels), 0, len(codes) - 1)
    return order[found].astype(np.uint8)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Reads one mask PNG strictly, as stored: class indices or class colours.

    Greyscale PNGs (1 to 8 bits, alpha dropped) and indexed-colour PNGs (a palette, as
    Pascal VOC's masks) give their indices; RGB (or RGBA, alpha dropped) PNGs
    give their colours. EXIF orientation is never applied.

    Returns:
        uint8 (H, W) indices, or uint8 (H, W, 3) RGB colours.

    Raises:
        DataError: missing, unreadable, truncated, corrupt, not a PNG (a JPEG's
            compression changes the values), or not 8 bits per channel.
    """
    path = Path(path)
    image, data = _decode_file(path, cv2.IMREAD_UNCHANGED)
    if not data[:8].tobytes().startswith(_PNG_MAGIC):
        raise DataError(f"mask is not a PNG (JPEG compression changes the class values; save masks as PNG): {path}")
    if image.dtype != np.uint8:
        raise DataError(f"{image.dtype} mask, expected 8 bits per channel: {path}")
    depth = _png_grey_depth(data)
    if image.ndim == 3 and (image.shape[2] in (1, 2) or depth is not None):  # grey + alpha (OpenCV: BGRA)
        image = image[..., 0]
    if image.ndim == 2:
        if depth is not None and depth < 8:  # OpenCV scales 1/2/4-bit samples to 0-255; a mask holds the samples
            image = image // (255 // ((1 << depth) - 1))
        return image
    palette = _png_palette(data)
    if palette is not None:
        return _palette_indices(image[..., :3], palette, path)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)


def read_stored_photo(path: str | os.PathLike) -> np.ndarray:
    """Reads a photo of an image/mask data set, as stored, to match its mask pixel for pixel.

    Unlike ``read_photo`` it takes greyscale (made three equal channels),
    16-bit (to 8) and alpha (dropped) photos; unlike ``read_any_photo`` it
    never applies an EXIF orientation (the mask was drawn on the stored pixels).

    Returns:
        uint8 (H, W, 3) RGB.

    Raises:
        DataError: an unusable file; the message names it.
    """
    path = Path(path)
    image, _ = _decode_file(path, cv2.IMREAD_UNCHANGED)
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{image.dtype} image, expected 8 or 16 bits per channel: {path}")
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[..., 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)
