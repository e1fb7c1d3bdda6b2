"""One synthetic scene as a checked JPEG composite, like the Kaggle Cityscapes pairs files.

The composite is (size, 2*size): the photo on the left, its palette-coloured
label on the right, saved as JPEG at quality 95 (the real files' quantisation
tables) with full-resolution chroma (see ``encode_jpeg``). Each file is decoded
once more to check that no label pixel lands on a class that is not in the
scene; where one does, its colour is corrected and the file encoded again.
"""

from __future__ import annotations

import cv2
import numpy as np

from pspnet.data.labels import decode_labels
from pspnet.data.synth_scene import as_generator, render
from pspnet.errors import DataError
from pspnet.palette import LABEL_COLORS, LABEL_TRAIN_IDS

__all__ = ["JPEG_QUALITY", "composite_jpeg", "encode_jpeg"]

JPEG_QUALITY = 95  # the real files' quantisation tables match quality ~95


def encode_jpeg(composite_rgb: np.ndarray) -> bytes:
    """JPEG bytes at quality 95 without chroma subsampling (4:4:4).

    The real files use 4:2:0, which mixes the chroma of neighbouring pixels
    across label borders; on small synthetic images that turned some border
    pixels into classes that are not in the scene (wall between building and
    sky), which no model can predict. 4:4:4 keeps them out.
    """
    ok, data = cv2.imencode(
        ".jpg",
        cv2.cvtColor(composite_rgb, cv2.COLOR_RGB2BGR),
        [
            cv2.IMWRITE_JPEG_QUALITY,
            JPEG_QUALITY,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        ],
    )
    if not ok:  # pragma: no cover - cv2 fails only on invalid arrays
        raise DataError("JPEG encoding failed")
    return data.tobytes()


def _stray_pixels(label_jpeg_rgb: np.ndarray, index: np.ndarray) -> np.ndarray:
    """bool (size, size): decoded classes not drawn within one pixel (void is fine)."""
    size = label_jpeg_rgb.shape[0]
    decoded = decode_labels(label_jpeg_rgb)
    drawn = LABEL_TRAIN_IDS[index]  # (2*size, 2*size)
    blocks = drawn.reshape(size, 2, size, 2).transpose(0, 2, 1, 3).reshape(size, size, 4)
    # Most pixels decode to a class of their own 2x2 block; look around only the others.
    stray = (decoded != 255) & ~(blocks == decoded[..., None]).any(-1)
    for y, x in zip(*np.nonzero(stray)):
        window = drawn[max(2 * y - 2, 0) : 2 * y + 4, max(2 * x - 2, 0) : 2 * x + 4]
        if (window == decoded[y, x]).any():
            stray[y, x] = False
    return stray


def composite_jpeg(seed, size: int, thickness: float = 1.0) -> bytes:
    """One scene as JPEG bytes, checked: no label pixel decodes to a class that is not there.

    Where JPEG noise still pushes a label pixel into an absent class (ringing
    at sharp corners reaches 20-25 levels even at quality 95), that pixel is
    unblended and its colour moved against the error, and the composite is
    encoded again (at most 4 times).
    """
    photo, label_rgb, index = render(as_generator(seed), size, thickness)
    unblended = LABEL_COLORS[index[::2, ::2]].astype(np.int16)
    target = label_rgb.astype(np.int16)  # the colours meant to come out of the JPEG
    written = label_rgb  # the colours put into it
    for _ in range(5):
        data = encode_jpeg(np.concatenate([photo, written], axis=1))
        decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        decoded_label = decoded[:, size:].astype(np.int16)
        stray = _stray_pixels(decoded[:, size:], index)
        if not stray.any():
            break
        # Stray pixels: aim at the unblended colour, and write past it by the error.
        target[stray] = unblended[stray]
        corrected = written.astype(np.int16) + (target - decoded_label)
        written = np.where(stray[..., None], np.clip(corrected, 0, 255), written).astype(np.uint8)
    return data
