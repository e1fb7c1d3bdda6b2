"""pspnet.data.pipeline: base sizes, crops and images of any size; what a padded batch is padded with."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pspnet.data.pipeline import PAD_RGB, PaddedBatches, SegmentationDataset, _jitter
from pspnet.errors import DataError
from pspnet.palette import IGNORE_INDEX


class ThreeImages:
    """A stand-in dataset of one batch of 3 grey images (uint8 ids 1)."""

    workers, use_multiprocessing, max_queue_size = 1, False, 10

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return np.full((3, 8, 8, 3), 50, np.float32), np.ones((3, 8, 8), np.int32)


def test_padded_batches_pad_with_the_mean_photo_and_ignored_labels():
    photos, train_ids = PaddedBatches(ThreeImages(), 4)[0]
    assert photos.shape == (4, 8, 8, 3) and train_ids.shape == (4, 8, 8)
    # A black photo would shift batch-norm statistics more than an average one.
    assert (photos[3] == np.array(PAD_RGB, np.float32)).all() and (photos[:3] == 50).all()
    assert (train_ids[3] == IGNORE_INDEX).all() and (train_ids[:3] == 1).all()


# --- SegmentationDataset: base size, crops, images of any size --------------------------------


def _old_axis(source, output, scale, offset):
    """The scale-and-crop axis before base sizes existed (a copy, kept as the reference)."""
    factor = scale * output / source
    if scale >= 1.0:
        window = min(max(int(round(output / factor)), 1), source)
        start = min(int(offset * (source - window + 1)), source - window)
        return start, window, 0, output
    length = min(max(int(round(source * factor)), 1), output)
    place = min(int(offset * (output - length + 1)), output - length)
    return 0, source, place, length


def _old_resize(image, size, interpolation):
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(np.ascontiguousarray(image), (size[1], size[0]), interpolation=interpolation)


def _old_batch(photos, targets, dataset, epoch, index):
    """One batch as the pipeline made it before base sizes (stretch to image_size, scale relative to it)."""
    indices = dataset.order(epoch)[index * dataset.batch_size : (index + 1) * dataset.batch_size]
    rng = np.random.default_rng([dataset.seed, epoch, index])
    height, width = dataset.image_size
    size = len(indices)
    colour = targets.ndim == 4
    photos_out = np.empty((size, height, width, 3), np.uint8)
    photos_out[...] = PAD_RGB
    targets_out = (
        np.zeros((size, height, width, 3), np.float32)
        if colour
        else np.full((size, height, width), IGNORE_INDEX, np.uint8)
    )
    label_interpolation = cv2.INTER_LINEAR if colour else cv2.INTER_NEAREST_EXACT
    if dataset.augment:
        scales = rng.uniform(*dataset.scale_range, size=size)
        flips = rng.random(size) < 0.5 if dataset.flip else np.zeros(size, bool)
        offsets = rng.random((size, 2))
        jitters = rng.uniform(-1.0, 1.0, size=(size, 3)) if dataset.jitter else None
    for row, image_index in enumerate(indices):
        photo, target = photos[image_index], targets[image_index]
        if not dataset.augment:
            photos_out[row] = _old_resize(photo, (height, width), cv2.INTER_LINEAR)
            targets_out[row] = _old_resize(target, (height, width), label_interpolation)
            continue
        if jitters is not None:
            photo = _jitter(photo, jitters[row])
        top, window_h, place_y, out_h = _old_axis(photo.shape[0], height, scales[row], offsets[row, 0])
        left, window_w, place_x, out_w = _old_axis(photo.shape[1], width, scales[row], offsets[row, 1])
        if flips[row]:
            place_x = width - place_x - out_w
        for source, destination, interpolation in (
            (photo, photos_out, cv2.INTER_LINEAR),
            (target, targets_out, label_interpolation),
        ):
            resized = _old_resize(source[top : top + window_h, left : left + window_w], (out_h, out_w), interpolation)
            if flips[row]:
                resized = resized[:, ::-1]
            destination[row, place_y : place_y + out_h, place_x : place_x + out_w] = resized
    return photos_out.astype(np.float32), targets_out if colour else targets_out.astype(np.int32)


def _scenes(count, height, width, seed=0):
    """Photos and train ids with structure at several scales (blocks of classes, a noisy photo)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 19, size=(count, 4, 6), dtype=np.uint8)
    ids = np.stack([cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST) for image in ids])
    photos = (
        ids[..., None] * np.array([13, 7, 11], np.uint8) + rng.integers(0, 40, ids.shape + (3,), dtype=np.uint8)
    ).astype(np.uint8)
    return photos, ids


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((32, 32), dict(image_size=32)),
        ((64, 64), dict(image_size=64, scale_range=(1.0, 1.0))),  # the demo: no rescaling, its own size
        ((32, 32), dict(image_size=24, scale_range=(0.5, 2.0), jitter=True)),  # pairs at a smaller size
        ((24, 24), dict(image_size=40, scale_range=(0.5, 2.0))),  # upscaled
        ((32, 32), dict(image_size=32, scale_range=(0.5, 2.0), flip=False)),
        ((32, 32), dict(image_size=20, augment=False)),  # validation
        ((16, 32), dict(image_size=(8, 16), scale_range=(0.7, 1.6))),  # another shape, the same aspect ratio
    ],
)
def test_default_base_size_makes_the_batches_of_today_byte_for_byte(shape, kwargs):
    # base_size defaults to image_size: the pairs' and the demo's runs must see the very same batches.
    photos, ids = _scenes(6, *shape)
    dataset = SegmentationDataset(photos, ids, batch_size=4, seed=3, **kwargs)
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            for got, expected in zip(dataset[index], _old_batch(photos, ids, dataset, epoch, index)):
                assert got.dtype == expected.dtype
                np.testing.assert_array_equal(got, expected)


def test_default_base_size_keeps_colour_target_batches():
    photos, ids = _scenes(4, 32, 32, seed=1)
    colours = photos.astype(np.float32) / 255.0
    dataset = SegmentationDataset(photos, colours, batch_size=4, image_size=24, seed=2)
    for got, expected in zip(dataset[0], _old_batch(photos, colours, dataset, 0, 0)):
        np.testing.assert_array_equal(got, expected)


class LazyImages:
    """A sequence of images of different sizes that counts its reads (as SplitPhotos decodes on the fly)."""

    def __init__(self, images):
        self.images, self.reads = images, 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.reads += 1
        return self.images[index]


def _rectangles(shapes, seed=0):
    scenes = [_scenes(1, height, width, seed=seed + number) for number, (height, width) in enumerate(shapes)]
    return LazyImages([scene[0][0] for scene in scenes]), LazyImages([scene[1][0] for scene in scenes])


def test_lazy_sequences_of_any_size_give_crops_of_the_crop_size():
    photos, ids = _rectangles([(48, 96), (30, 20), (64, 64), (40, 100)])
    dataset = SegmentationDataset(photos, ids, batch_size=2, image_size=(24, 32), base_size=(48, 96), seed=1)
    assert photos.reads == 0  # nothing is decoded before a batch asks for it
    x, y = dataset[0]
    assert x.shape == (2, 24, 32, 3) and y.shape == (2, 24, 32) and photos.reads == 2
    for epoch in range(4):  # photo and labels stay aligned: the label's colour code is the photo's base
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            x, y = dataset[index]
            valid = y != IGNORE_INDEX
            assert valid.any()
            assert ((x[valid] == np.array(PAD_RGB)).all(-1)).mean() < 0.5


def test_scale_one_fits_the_image_into_the_base_keeping_its_aspect_ratio():
    # A 40x100 image in a 48x96 base is 38x96 at scale 1 (width is the limit); a crop
    # of 48x96 then holds it whole, with 10 rows of padding.
    photos, ids = _rectangles([(40, 100)])
    dataset = SegmentationDataset(
        photos, ids, batch_size=1, image_size=(48, 96), base_size=(48, 96), scale_range=(1.0, 1.0), flip=False, seed=0
    )
    _, y = dataset[0]
    rows = (y[0] != IGNORE_INDEX).any(axis=1)
    assert rows.sum() == 38 and (y[0][rows] != IGNORE_INDEX).all()
    expected = cv2.resize(ids.images[0], (96, 38), interpolation=cv2.INTER_NEAREST_EXACT)
    top = int(np.argmax(rows))
    np.testing.assert_array_equal(y[0, top : top + 38], expected)


def test_an_image_smaller_than_the_crop_is_padded_not_refused():
    photos, ids = _rectangles([(20, 30), (16, 16)])
    dataset = SegmentationDataset(
        photos, ids, batch_size=2, image_size=64, base_size=(20, 30), scale_range=(1.0, 1.0), shuffle=False
    )
    x, y = dataset[0]
    assert x.shape == (2, 64, 64, 3)
    assert (y[0] != IGNORE_INDEX).sum() == 20 * 30 and (y[1] != IGNORE_INDEX).sum() == 20 * 20
    assert (x[y == IGNORE_INDEX] == np.array(PAD_RGB, np.float32)).all()


def test_validation_letterboxes_each_image_into_the_base_size():
    photos, ids = _rectangles([(40, 100), (64, 32), (48, 48)])
    dataset = SegmentationDataset(photos, ids, batch_size=3, base_size=(32, 48), augment=False, shuffle=False)
    x, y = dataset[0]
    assert x.shape == (3, 32, 48, 3)
    for row, (height, width) in enumerate([(19, 48), (32, 16), (32, 32)]):
        expected = cv2.resize(ids.images[row], (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
        np.testing.assert_array_equal(y[row, :height, :width], expected)
        padding = np.ones((32, 48), bool)
        padding[:height, :width] = False
        assert (y[row][padding] == IGNORE_INDEX).all()
        assert (x[row][padding] == np.array(PAD_RGB, np.float32)).all()


def test_a_lazy_image_whose_label_differs_in_size_is_one_error():
    photos = LazyImages([np.zeros((8, 8, 3), np.uint8)])
    labels = LazyImages([np.zeros((8, 6), np.uint8)])
    with pytest.raises(DataError, match="photo 0 is 8x8 but its target 8x6"):
        SegmentationDataset(photos, labels, batch_size=1, image_size=8)[0]
