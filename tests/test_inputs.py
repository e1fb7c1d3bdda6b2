"""pspnet.data.inputs: photos and photo|label composites read as pspnet-predict reads them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_pairs

from pspnet.data.inputs import LABEL_SHARE, label_share, read_input
from pspnet.errors import DataError


@pytest.fixture
def pairs(tmp_path) -> Path:
    """A folder of three 32x64 generated composites."""
    return make_pairs(tmp_path / "pairs", 3, size=32, seed=1, split="val")


def test_pairs_always_rejects_a_plain_photo(tmp_path):
    path = tmp_path / "plain.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="plain.png"):
        read_input(path, pairs="always")


def test_truncated_plain_photo_is_named(tmp_path):
    path = tmp_path / "street.jpg"
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    path.write_bytes(data.tobytes()[: len(data) // 2])  # cut off: no end-of-image marker
    with pytest.raises(DataError, match=r"truncated JPEG .*street\.jpg"):
        read_input(path)


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    from PIL import Image

    stored = np.full((32, 48, 3), (20, 20, 90), np.uint8)
    stored[:, :16] = (230, 40, 40)  # a red band on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    item = read_input(path)
    assert item.photo.shape == (48, 32, 3)
    # Rotated clockwise, the left band is now the top rows.
    assert item.photo[:12, :, 0].mean() > 200 and item.photo[20:, :, 0].mean() < 60
    assert item.notes == ["EXIF orientation applied"]


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    deep = np.random.default_rng(0).integers(0, 65536, (32, 48, 3), dtype=np.uint16)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), deep)
    item = read_input(path)
    expected = np.rint(deep[..., ::-1] / 257).astype(np.uint8)  # BGR file -> RGB photo
    np.testing.assert_array_equal(item.photo, expected)
    assert item.notes == ["16-bit converted"] and item.read_as == "photo"


def test_wide_photo_is_a_photo_and_a_composite_a_composite(pairs, tmp_path):
    rows, columns = np.mgrid[0:32, 0:64]
    gradient = np.stack([columns * 4, rows * 8, 255 - columns * 4], axis=-1).astype(np.uint8)
    texture = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    for name, image in (("gradient.png", gradient), ("texture.jpg", texture)):
        cv2.imwrite(str(tmp_path / name), image)
        item = read_input(tmp_path / name)  # 2:1, but no label colours on the right
        assert item.read_as == "photo" and item.label_rgb is None, name
        assert item.photo.shape == (32, 64, 3)
    for path in sorted(pairs.iterdir()):
        item = read_input(path)
        assert item.read_as == "composite" and item.photo.shape == (32, 32, 3)
        assert label_share(item.label_rgb) >= LABEL_SHARE  # the synthetic labels pass the test
    # pairs="always" still splits a photo, pairs="never" keeps a composite whole.
    assert read_input(tmp_path / "gradient.png", pairs="always").read_as == "composite"
    assert read_input(pairs / "1.jpg", pairs="never").photo.shape == (32, 64, 3)
