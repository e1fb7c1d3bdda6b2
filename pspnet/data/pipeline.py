"""Training batches from decoded arrays or lazy sequences: shuffling and PSPNet's augmentations.

``SegmentationDataset`` is a ``keras.utils.PyDataset``, so the same object
feeds ``model.fit`` on the TensorFlow, JAX and PyTorch backends. Each batch
draws its randomness from ``np.random.default_rng([seed, epoch, index])``:
batches are the same for the same seed whatever the number of workers.

Per image: optional photometric jitter, then the random scale (relative to
the image fit into the base size, keeping its aspect ratio) and the crop (or
padding, where the scaled image is smaller than the crop) as one
``cv2.resize`` of a source window, bilinear for the photo and nearest for the
labels, and the horizontal flip as a mirrored copy into the batch. Images may
differ in size (a lazy sequence decodes each when its batch is made, in the
PyDataset's worker threads). Without augmentation each image is fit into the
base size and padded to it (a letterbox at the top left).
"""

from __future__ import annotations

import math

import cv2
import keras
import numpy as np

from pspnet.checks import parse_size
from pspnet.data.geometry import PAD_RGB, fit_size, pad_rows, padded_photos
from pspnet.errors import ConfigError, DataError
from pspnet.palette import IGNORE_INDEX

__all__ = ["DictTargets", "PAD_RGB", "PaddedBatches", "SegmentationDataset"]  # PAD_RGB: pspnet.data.geometry's


class SegmentationDataset(keras.utils.PyDataset):
    """Batches of (photos, train ids) with PSPNet's augmentations.

    Args:
        photos: uint8 (N, H, W, 3) RGB, e.g. from ``load_split`` (memory maps
            are fine), or a sequence of N uint8 (H, W, 3) images of any sizes
            (``len`` and ``photos[i]``, e.g. ``pspnet.data.samples.SplitPhotos``,
            decoded when a batch needs them).
        targets: uint8/int (N, H, W) train ids (255 = ignore), or float
            (N, H, W, 3) colour targets in [0, 1] (the seed's colour mode), or
            a sequence of N integer (H, W) train ids, each the size of its photo.
        batch_size: images per batch.
        image_size: output (height, width) of the augmented batches (the
            crop), or one int for a square.
        base_size: the (height, width) each image is rescaled to fit, keeping
            its aspect ratio, at scale 1 (and the size of the batches without
            ``augment``); None: ``image_size``.
        augment: random scale, crop, flip (and jitter); False: each image fit
            into ``base_size`` keeping its aspect ratio (bilinear photos,
            nearest labels) and padded at the bottom and right to it.
        scale_range: (low, high) of the uniform random scale, relative to the
            image fit into ``base_size``. Where the scaled image is smaller
            than the crop, the photo is padded with ``PAD_RGB`` and the labels
            with 255; where larger, a random crop is taken.
        flip: random horizontal flip (with ``augment``).
        jitter: random brightness, contrast and saturation (with ``augment``).
        shuffle: reshuffle the order every epoch (from ``seed`` and the epoch).
        seed: seed of the order and of every augmentation.
        drop_remainder: leave out the last, smaller batch.
        steps_per_epoch: batches per epoch (``len(dataset)``); None: one pass
            over the images. Other values read the passes as one endless
            stream, so an epoch may end or start within a pass.
        part: rows ``(start, stop)`` of each batch to yield: one process's part
            of a global batch that several processes feed (pspnet.training.distribute).
            Every part draws the randomness of the whole batch, so the parts of
            all processes make up exactly the batch one process would make.
            None: whole batches.
        **pydataset_kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size``.

    Yields (``dataset[i]``):
        ``(photos, targets)``: photos float32 (B, h, w, 3) in 0-255; targets
        int32 (B, h, w) train ids, or float32 (B, h, w, 3) for colour targets;
        (h, w) is ``image_size`` with ``augment``, else ``base_size``.

    The epoch (``dataset.epoch``) advances in ``on_epoch_end``, which ``fit``
    calls; call ``set_epoch(e)`` when resuming at epoch e. Pass
    ``shuffle=False`` to ``fit``: Keras would otherwise also permute the
    batch order with Python's ``random``.

    Example::

        photos, train_ids = load_split("cityscapes_data/train")
        dataset = SegmentationDataset(photos, train_ids, batch_size=8, workers=2)
        model.fit(dataset, epochs=10, shuffle=False)  # the dataset shuffles itself
    """

    def __init__(
        self,
        photos,
        targets,
        batch_size: int,
        image_size: int | tuple[int, int] = (256, 256),
        augment: bool = True,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        jitter: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        drop_remainder: bool = False,
        steps_per_epoch: int | None = None,
        part: tuple[int, int] | None = None,
        base_size: int | tuple[int, int] | None = None,
        **pydataset_kwargs,
    ):
        super().__init__(**pydataset_kwargs)
        self.colour_targets = _check_inputs(photos, targets)
        if int(batch_size) < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        low, high = (float(v) for v in scale_range)
        if not 0 < low <= high:
            raise ConfigError(f"scale_range must be 0 < low <= high, got {scale_range!r}")
        self.photos = photos
        self.targets = targets
        self.batch_size = int(batch_size)
        self.image_size = parse_size(image_size, "image_size")
        self.base_size = self.image_size if base_size is None else parse_size(base_size, "base_size")
        self.augment = bool(augment)
        self.scale_range = (low, high)
        self.flip = bool(flip)
        self.jitter = bool(jitter)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_remainder = bool(drop_remainder)
        if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or int(steps_per_epoch) < 1):
            raise ConfigError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        start, stop = (0, self.batch_size) if part is None else (int(part[0]), int(part[1]))
        if not 0 <= start < stop <= self.batch_size:
            raise ConfigError(f"part must be rows (start, stop) of a batch of {self.batch_size}, got {part!r}")
        self.part = (start, stop)
        self.epoch = 0
        self._order_cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return self.batches_per_pass

    @property
    def batches_per_pass(self) -> int:
        """Batches in one pass over the images."""
        count = len(self.photos)
        if self.drop_remainder:
            return count // self.batch_size
        return math.ceil(count / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch whose order and augmentations the next batches use (for resuming)."""
        self.epoch = int(epoch)

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The image indices of a pass over the images, in batch order.

        Args:
            epoch: the pass (default: the current epoch's; it is the epoch
                unless ``steps_per_epoch`` is set).

        Returns:
            int64 (N,): a permutation from (seed, pass), or 0..N-1 without shuffle.
        """
        epoch = self.epoch if epoch is None else int(epoch)
        cached = self._order_cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.photos))
        else:
            order = np.arange(len(self.photos))
        self._order_cache = (epoch, order)
        return order

    def __getitem__(self, index: int):
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"batch {index} out of range for {count} batches")
        epoch = self.epoch
        if self.steps_per_epoch is not None:  # epochs cut the stream of passes
            per_pass = self.batches_per_pass
            if per_pass == 0:
                raise IndexError("no full batch in one pass over the images")
            epoch, index = divmod(self.epoch * self.steps_per_epoch + index, per_pass)
        indices = self.order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, epoch, index])
        size = len(indices)
        first, stop = min(self.part[0], size), min(self.part[1], size)  # a short last batch may leave no rows
        photos_out, targets_out = self._empty_batch(stop - first)
        # Every random number is drawn up front, in a fixed order, so that the
        # batch depends only on (seed, epoch, index).
        if self.augment:
            scales = rng.uniform(*self.scale_range, size=size)
            flips = rng.random(size) < 0.5 if self.flip else np.zeros(size, dtype=bool)
            offsets = rng.random((size, 2))
            jitters = rng.uniform(-1.0, 1.0, size=(size, 3)) if self.jitter else None
        for slot, image_index in enumerate(indices[first:stop], start=first):
            photo, target = self._read(int(image_index))
            outputs = (photos_out[slot - first], targets_out[slot - first])
            if not self.augment:
                self._letterbox(photo, target, *outputs)
                continue
            if jitters is not None:
                photo = _jitter(photo, jitters[slot])
            self._scale_and_crop(photo, target, *outputs, scales[slot], offsets[slot], bool(flips[slot]))
        photos_float = photos_out.astype(np.float32)
        if self.colour_targets:
            return photos_float, targets_out
        return photos_float, targets_out.astype(np.int32)

    def _empty_batch(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Output arrays filled with the padding: PAD_RGB photos, 0 colours or 255 (ignore) train ids."""
        height, width = self.image_size if self.augment else self.base_size
        photos_out = padded_photos(rows, (height, width), np.uint8)
        if self.colour_targets:
            return photos_out, np.zeros((rows, height, width, 3), dtype=np.float32)
        return photos_out, np.full((rows, height, width), IGNORE_INDEX, dtype=np.uint8)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index``'s photo and target (decoded now, for a lazy sequence), checked against each other."""
        photo = np.asarray(self.photos[index])
        target = np.asarray(self.targets[index])
        if photo.ndim != 3 or photo.shape[-1] != 3 or photo.dtype != np.uint8:
            raise DataError(f"photo {index} must be uint8 (H, W, 3), got {photo.dtype} {photo.shape}")
        if not self.colour_targets:
            if target.ndim != 2 or not np.issubdtype(target.dtype, np.integer):
                raise DataError(f"target {index} must be integer (H, W) train ids, got {target.dtype} {target.shape}")
            target = _as_uint8_ids(target)
        if target.shape[:2] != photo.shape[:2]:
            raise DataError(
                f"photo {index} is {photo.shape[0]}x{photo.shape[1]} but its target {target.shape[0]}x{target.shape[1]}"
            )
        return photo, target

    def _letterbox(self, photo, target, photo_out, target_out) -> None:
        """The image fit into the base size keeping its aspect ratio, at the top left of the output."""
        height, width = fit_size(photo.shape[:2], self.base_size)
        photo_out[:height, :width] = _resize(photo, (height, width), cv2.INTER_LINEAR)
        target_out[:height, :width] = _resize(target, (height, width), self._target_interpolation)

    def _scale_and_crop(self, photo, target, photo_out, target_out, scale: float, offset, flip: bool) -> None:
        """Random scale then random crop (where larger than the output) or padding (where smaller).

        Per axis: a window of the source, resized, placed in the output.
        """
        height, width = self.image_size
        fit_height, fit_width = fit_size(photo.shape[:2], self.base_size)  # the image's size at scale 1
        (top, window_h, place_y, out_h) = _axis(photo.shape[0], fit_height, height, scale, offset[0])
        (left, window_w, place_x, out_w) = _axis(photo.shape[1], fit_width, width, scale, offset[1])
        if flip:
            place_x = width - place_x - out_w
        for source, destination, interpolation in (
            (photo, photo_out, cv2.INTER_LINEAR),
            (target, target_out, self._target_interpolation),
        ):
            window = source[top : top + window_h, left : left + window_w]
            resized = _resize(window, (out_h, out_w), interpolation)
            if flip:
                resized = resized[:, ::-1]
            destination[place_y : place_y + out_h, place_x : place_x + out_w] = resized

    @property
    def _target_interpolation(self) -> int:
        # Colour targets blend like photos; class ids never do. NEAREST_EXACT
        # samples pixel centres, as INTER_LINEAR does, so labels stay aligned.
        return cv2.INTER_LINEAR if self.colour_targets else cv2.INTER_NEAREST_EXACT


def _check_inputs(photos, targets) -> bool:
    """Checks arrays (or sequences) of photos and targets; whether the targets are colours.

    Arrays are checked whole here; a sequence's images when they are read.
    """
    if len(targets) != len(photos):
        raise DataError(f"{len(photos)} photos but {len(targets)} targets")
    if not isinstance(photos, np.ndarray) or not isinstance(targets, np.ndarray):
        return False  # a sequence of images of any sizes: train ids (colour targets come as arrays)
    if photos.ndim != 4 or photos.shape[-1] != 3 or photos.dtype != np.uint8:
        raise DataError(f"photos must be uint8 (N, H, W, 3), got {photos.dtype} {photos.shape}")
    colour_targets = targets.ndim == 4
    if colour_targets:
        if targets.shape[-1] != 3 or not np.issubdtype(targets.dtype, np.floating):
            raise DataError(f"colour targets must be float (N, H, W, 3), got {targets.dtype} {targets.shape}")
    elif targets.ndim != 3 or not np.issubdtype(targets.dtype, np.integer):
        raise DataError(f"targets must be integer (N, H, W) train ids, got {targets.dtype} {targets.shape}")
    if tuple(targets.shape[1:3]) != tuple(photos.shape[1:3]):
        raise DataError(f"photos are {photos.shape[1:3]} but targets {targets.shape[1:3]}")
    return colour_targets


# --- wrappers for training -------------------------------------------------


class DictTargets(keras.utils.PyDataset):
    """Feeds one target to both outputs of a model with outputs {"main", "aux"}."""

    def __init__(self, dataset):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        photos, targets = self.dataset[index]
        return photos, {"main": targets, "aux": targets}

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


class PaddedBatches(keras.utils.PyDataset):
    """Pads a short last batch to the full batch with ``PAD_RGB`` photos whose labels
    are all 255 (ignored by the loss and the metrics): a batch sharded over
    several devices must divide evenly."""

    def __init__(self, dataset, batch_size: int):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset
        self.batch_size = batch_size

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        photos, train_ids = self.dataset[index]
        return pad_rows(photos, self.batch_size, PAD_RGB), pad_rows(train_ids, self.batch_size, IGNORE_INDEX)


def _axis(source: int, fit: int, output: int, scale: float, offset: float) -> tuple[int, int, int, int]:
    """One axis of scale-and-crop: (window start, window length, output start, output length).

    The scale is relative to ``fit``, the source's length at scale 1. Where
    the scaled source covers the output, a random window of about
    output/factor source pixels fills the output; else the whole source,
    scaled to about scale*fit pixels, sits at a random place in the output,
    the rest is padding.
    """
    factor = scale * fit / source  # source pixel -> output pixels
    if scale * fit >= output:
        window = min(max(int(round(output / factor)), 1), source)
        start = min(int(offset * (source - window + 1)), source - window)
        return start, window, 0, output
    length = min(max(int(round(source * factor)), 1), output)
    place = min(int(offset * (output - length + 1)), output - length)
    return 0, source, place, length


def _resize(image: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """cv2.resize to (height, width); a copy-free no-op when the size already matches."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interpolation)


def _as_uint8_ids(target: np.ndarray) -> np.ndarray:
    """Integer train ids as contiguous uint8 (ids outside 0-255 become 255)."""
    if target.dtype == np.uint8:
        return np.ascontiguousarray(target)
    return np.where((target >= 0) & (target <= 255), target, IGNORE_INDEX).astype(np.uint8)


# Jitter strengths: brightness in 0-255 units, contrast and saturation as factors.
_BRIGHTNESS = 32.0
_CONTRAST = 0.25
_SATURATION = 0.25


def _jitter(photo: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """Random brightness, contrast (about the mean grey) and saturation; uint8 in and out.

    Args:
        photo: uint8 (H, W, 3) RGB.
        amounts: three numbers in [-1, 1] (brightness, contrast, saturation).
    """
    brightness = _BRIGHTNESS * amounts[0]
    contrast = 1.0 + _CONTRAST * amounts[1]
    saturation = 1.0 + _SATURATION * amounts[2]
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    grey3 = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    # Saturation: blend with the grey image (cv2 saturates to 0-255).
    out = cv2.addWeighted(photo, saturation, grey3, 1.0 - saturation, 0.0)
    # Contrast about the mean grey level, then brightness.
    mean = float(grey.mean())
    return cv2.addWeighted(out, contrast, out, 0.0, brightness + (1.0 - contrast) * mean)
