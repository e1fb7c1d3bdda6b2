"""Checks on the real Cityscapes pairs; skipped when ../shared/data/cityscapes_data is absent.

The "far" threshold (pspnet.data.FAR_DISTANCE = 30) was picked by measuring
these 50 val labels: in uniform regions (a 7x7 neighbourhood of one class)
JPEG noise moves 99.5% of pixels by at most 16 (99.9% by at most 34), while
29% of the border pixels (bilinear blends) lie beyond 30. About 10% of all
label pixels are farther than 30, against ~60% of the pixels of a photo half
(median image), so a share above 50% points at a file that is not a colour label.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import REAL_DATA

from pspnet.data import FAR_DISTANCE, class_pixel_counts, decode_labels, list_images, load_split, read_pair
from pspnet.palette import CLASS_NAMES

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(not (REAL_DATA / "val").is_dir(), reason=f"real data not found at {REAL_DATA}"),
]

MAIN_CLASSES = ("road", "building", "vegetation", "car", "sky")


@pytest.fixture(scope="module")
def decoded_val():
    """50 val pairs spread over the three cities: (photos, train ids, distances)."""
    paths = list_images(REAL_DATA / "val")[::10][:50]
    photos, train_ids, distances = [], [], []
    for path in paths:
        photo, label_rgb = read_pair(path)
        ids, distance = decode_labels(label_rgb, return_distance=True)
        photos.append(photo)
        train_ids.append(ids)
        distances.append(distance)
    return np.stack(photos), np.stack(train_ids), np.stack(distances)


def test_main_classes_cover_most_pixels(decoded_val):
    _, train_ids, _ = decoded_val
    assert train_ids.shape == (50, 256, 256)
    counts = class_pixel_counts(train_ids)
    share = sum(counts[CLASS_NAMES.index(name)] for name in MAIN_CLASSES) / train_ids.size
    assert share > 0.5
    assert counts[CLASS_NAMES.index("road")] / train_ids.size > 0.2  # the street itself


def test_few_label_pixels_far_from_palette(decoded_val):
    _, _, distances = decoded_val
    far_share = float((distances > FAR_DISTANCE).mean())
    assert far_share <= 0.15
    assert far_share > 0.01  # the blended borders are there: the labels were resized bilinearly


def test_far_threshold_is_above_jpeg_noise(decoded_val):
    _, train_ids, distances = decoded_val
    kernel = np.ones((7, 7), np.uint8)
    interior = [cv2.dilate(ids, kernel) == cv2.erode(ids, kernel) for ids in train_ids]
    noise = distances[np.stack(interior)]
    assert np.percentile(noise, 99.5) < FAR_DISTANCE


def test_photo_halves_are_mostly_far(decoded_val):
    photos, _, _ = decoded_val
    _, distances = decode_labels(photos, return_distance=True)
    shares = (distances > FAR_DISTANCE).mean(axis=(1, 2))
    assert np.median(shares) > 0.5


def test_load_real_val_split(tmp_path):
    photos, train_ids = load_split(REAL_DATA / "val", cache_dir=tmp_path, progress=False)
    assert photos.shape == (500, 256, 256, 3) and train_ids.shape == (500, 256, 256)
    first_photo, first_label = read_pair(REAL_DATA / "val" / "1.jpg")
    np.testing.assert_array_equal(photos[0], first_photo)
    np.testing.assert_array_equal(train_ids[0], decode_labels(first_label))
    tenth_photo, _ = read_pair(REAL_DATA / "val" / "10.jpg")
    np.testing.assert_array_equal(photos[9], tenth_photo)  # natural order: 1, 2, ..., 10
