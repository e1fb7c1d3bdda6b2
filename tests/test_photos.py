"""Photos as people have them: JPEGs with data after their end (phone motion photos, maker data).

Tests of the JPEG check in pspnet.data (read_photo, read_any_photo, the
composite loader) and of pspnet-predict on such a photo.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pspnet.data import read_any_photo, read_pair, read_photo
from pspnet.errors import DataError

# What a Pixel or Samsung motion photo appends after the still: an MP4 (here
# its first box and 1 KB of payload, with no end-of-image marker in it).
TRAILER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(0xD0)) * 5
ENCODINGS = {
    "baseline": [],
    "progressive": [cv2.IMWRITE_JPEG_PROGRESSIVE, 1],  # several scans, tables between them
    "restart markers": [cv2.IMWRITE_JPEG_RST_INTERVAL, 2],  # FF D0-D7 inside the scan
}


def _jpeg(encoding: str, width: int = 48, height: int = 40) -> bytes:
    photo = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    photo[:, : width // 2, 0] = 255  # not grey
    ok, data = cv2.imencode(".jpg", photo, ENCODINGS[encoding])
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_jpeg_with_a_trailer_is_read_as_without_it(tmp_path, encoding):
    assert len(TRAILER) > 1024 and b"\xff\xd9" not in TRAILER
    plain, motion = tmp_path / "plain.jpg", tmp_path / "motion.jpg"
    plain.write_bytes(_jpeg(encoding))
    motion.write_bytes(_jpeg(encoding) + TRAILER)
    np.testing.assert_array_equal(read_photo(motion), read_photo(plain))
    photo, notes = read_any_photo(motion)
    np.testing.assert_array_equal(photo, read_any_photo(plain)[0])
    assert notes == []


def test_a_composite_with_a_trailer_is_read_by_the_training_loader(tmp_path):
    path = tmp_path / "pair.jpg"
    path.write_bytes(_jpeg("baseline", width=64, height=32) + TRAILER)
    photo, label = read_pair(path)
    assert photo.shape == label.shape == (32, 32, 3)


def _cut_in_scan(data: bytes) -> bytes:
    """The file cut off halfway through its (last) scan's entropy-coded data."""
    scan = data.rindex(b"\xff\xda")
    return data[: scan + (len(data) - scan) // 2]


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_jpeg_cut_in_its_scan_is_still_refused(tmp_path, encoding):
    path = tmp_path / "cut.jpg"
    path.write_bytes(_cut_in_scan(_jpeg(encoding)))
    for read in (read_photo, read_any_photo):
        with pytest.raises(DataError, match=rf"^truncated JPEG \(no end-of-image marker\): {path}$"):
            read(path)


def test_a_jpeg_cut_in_its_header_is_refused(tmp_path):
    path = tmp_path / "cut.jpg"
    data = _jpeg("baseline")
    path.write_bytes(data[: data.index(b"\xff\xda") - 10])  # inside the tables, before any scan
    with pytest.raises(DataError, match=rf"^truncated JPEG \(no end-of-image marker\): {path}$"):
        read_any_photo(path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained fast PSPNet taking any input size, saved as .keras."""
    import pspnet

    path = tmp_path_factory.mktemp("model") / "any.keras"
    pspnet.build_pspnet("fast", input_shape=(None, None, 3)).save(path)
    return path


def test_pspnet_predict_predicts_a_motion_photo(tiny_model, tmp_path):
    from pspnet.inference.predict import PredictConfig, predict

    path = tmp_path / "PXL_motion.jpg"
    path.write_bytes(_jpeg("baseline") + TRAILER)
    out = tmp_path / "out"
    predict(PredictConfig(tiny_model, path, out, verbose=False))
    ids = cv2.imread(str(out / "PXL_motion_ids.png"), cv2.IMREAD_UNCHANGED)
    assert ids is not None and ids.shape == (40, 48)
