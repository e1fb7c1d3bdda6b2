"""The one inference path: photos of any size in, train ids at the label's size out, and their scores.

Training's final scoring, ``pspnet.inference.evaluate`` and ``pspnet.inference.predict`` all run a
model through ``Segmenter``, so one model gets one number wherever it is
scored. Each photo is run at a scale, the scores (logits, or the seed's
colours) are resized bilinearly back to the label's size, and only then
reduced to train ids: colour outputs are decoded with the palette, so both
heads meet on one metric. The modes (mmsegmentation's ``whole`` and ``slide``
test modes, and its multi-scale and flip test-time augmentation):

- whole image: the photo rescaled keeping its aspect ratio to fit the size
  the model was trained at (``fit_size``), at the top left of a frame of that
  size padded with ``PAD_RGB`` (a letterbox: what training's validation
  batches and a fixed-size export see, so a model and its export score one
  number); with ``keep_aspect=False`` resized to that size (a photo of the
  size's shape: both are the same resize, as for the square pairs);
- sliding windows, ``slide=((crop_h, crop_w), (stride_h, stride_w))``: crops
  of the rescaled photo (padded with ``PAD_RGB`` where it is smaller), their
  scores averaged where windows overlap;
- ``scales=(0.75, 1.0, 1.25)``: the above at each multiple of the base size,
  class probabilities averaged at the label's size; ``tta_flip``: the mirror
  image too.

    segmenter = Segmenter.load("runs/x/best.keras", slide=((512, 1024), (341, 683)), scales=(0.75, 1.0))
    train_ids = segmenter.predict_ids(photos)            # (B, H, W) uint8
    matrix = segmenter.confusion(SplitPhotos(split), SplitLabels(split))  # one image at a time
"""

from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import numpy as np

from pspnet.checks import check_choice, parse_size
from pspnet.data.geometry import fit_size, pad_rows, padded_photos, scaled_size
from pspnet.errors import ConfigError
from pspnet.inference.runtimes import RUNTIMES, exported_format, load_exported
from pspnet.metrics import ConfusionMatrix
from pspnet.models.modelfile import ModelInfo, load_model
from pspnet.models.presets import HEADS
from pspnet.palette import NUM_CLASSES

DEFAULT_IMAGE_SIZE = 256  # for models that take any size and do not say what they were trained at


def fixed_input_size(model) -> tuple[int, int] | None:
    """The (height, width) a model's input is built for, or None when it takes any size."""
    shape = model.input_shape
    shape = tuple(shape[0] if isinstance(shape, list) else shape)
    if len(shape) == 4 and shape[1] is not None and shape[2] is not None:
        return int(shape[1]), int(shape[2])
    return None


def model_input_size(model, info: ModelInfo | None = None, image_size=None) -> tuple[int, int]:
    """The (height, width) to run a model at.

    Args:
        model: a keras.Model.
        info: what it is (its training size is the default for models that take any size).
        image_size: an explicit size (N, (H, W) or "HxW"), checked against a fixed input.

    Returns:
        ``image_size``, else the model's fixed input size, else its training
        size, else 256x256.

    Raises:
        ConfigError: ``image_size`` is invalid or differs from a fixed input size.
    """
    fixed = fixed_input_size(model)
    if image_size is not None:
        size = parse_size(image_size, "image size")
        if fixed is not None and fixed != size:
            raise ConfigError(f"the model takes {fixed[0]}x{fixed[1]} images, not {size[0]}x{size[1]}")
        return size
    if fixed is not None:
        return fixed
    if info is not None and info.image_size is not None:
        return tuple(info.image_size)
    return DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE


def resize_image(image: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resizes (H, W, C) to (size[0], size[1], C) (any C); a no-op when the sizes match."""
    if image.shape[:2] == tuple(size):
        return image
    height, width = size
    return cv2.resize(image, (width, height), interpolation=interpolation).reshape(height, width, -1)


def resize_batch(batch: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resizes (B, H, W, C) to (B, size[0], size[1], C); a no-op when the sizes match."""
    if batch.shape[1:3] == tuple(size):
        return batch
    height, width = size
    out = np.empty((len(batch), height, width, batch.shape[-1]), dtype=batch.dtype)
    for index, image in enumerate(batch):
        out[index] = resize_image(image, size, interpolation)
    return out


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Where the sliding windows along one axis start: every ``stride``, the last
    flush with the end (mmsegmentation's ``slide_inference``); [0] when ``length <= crop``."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [max(min(index * stride + crop, length) - crop, 0) for index in range(count)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def main_output(output):
    """The scored output of a model: ``outputs["main"]`` of dict outputs, else the first."""
    if isinstance(output, dict):
        return output["main"] if "main" in output else next(iter(output.values()))
    if isinstance(output, (list, tuple)):
        return output[0]
    return output


def check_run_options(batch_size: int, head: str | None) -> None:
    """Raises ConfigError for a batch size below 1 or an unknown head (None: the model's own, not checked).

    The one check of ``Segmenter``, ``pspnet.inference.evaluate`` and ``pspnet.inference.predict``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if head is not None:
        check_choice("head", head, HEADS)


def parse_slide(slide) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``(crop, stride)`` (each N, (H, W) or "HxW") as two (H, W) pairs, or None.

    Raises:
        ConfigError: a size that is not positive, or a stride larger than the crop (it would leave gaps).
    """
    if slide is None:
        return None
    try:
        crop, stride = slide
    except (TypeError, ValueError):
        raise ConfigError(f"slide must be (crop, stride), got {slide!r}") from None
    crop, stride = parse_size(crop, "slide crop"), parse_size(stride, "slide stride")
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise ConfigError(
            f"the slide stride {stride[0]}x{stride[1]} exceeds the crop {crop[0]}x{crop[1]}: "
            "windows would leave pixels unscored"
        )
    return crop, stride


def parse_scales(scales) -> tuple[float, ...]:
    """Test scales (multiples of the base size) as a tuple of positive floats; None: (1.0,)."""
    if scales is None:
        return (1.0,)
    try:
        values = tuple(float(scale) for scale in scales)
    except (TypeError, ValueError):
        raise ConfigError(f"scales must be numbers, got {scales!r}") from None
    if not values or not all(0 < value < 16 for value in values):  # also refuses NaN
        raise ConfigError(f"scales must be one or more numbers above 0 (and below 16), got {list(scales)}")
    return values


def inference_mode(slide, scales, tta_flip: bool, keep_aspect: bool) -> dict:
    """How a model was run, as recorded beside its scores (``metrics.json``)."""
    return {
        "mode": "slide" if slide is not None else "whole",
        "crop": None if slide is None else list(slide[0]),
        "stride": None if slide is None else list(slide[1]),
        "scales": list(scales),
        "flip": bool(tta_flip),
        "keep_aspect": bool(keep_aspect),
    }


class Segmenter:
    """A model and what it is: uint8 photos of any size in, uint8 train ids out.

    Args:
        model: a keras.Model (dict outputs: ``"main"`` is used).
        info: its ModelInfo (the head decides how outputs become train ids;
            ``num_classes`` how many channels the logits have).
        input_size: the base size (H, W): what photos are fitted into (or, with
            ``keep_aspect=False``, resized to) at scale 1; None: ``model_input_size``.
        batch_size: images (or sliding windows) per forward pass.
        tta_flip: average the class probabilities of each photo and its mirror image.
        source: the model file, named in error messages.
        pad_batch: pad shorter batches to ``batch_size``, so that a compiled
            (or, under ``keras.distribution``, sharded) Keras function always
            sees one shape; None: pad Keras models only, never an exported
            runtime (``pspnet.inference.runtimes``), which takes any batch (LiteRT
            would run one call per padded image).
        slide: ``(crop, stride)``: score sliding windows of ``crop`` every
            ``stride`` pixels of the rescaled photo; None: the whole photo.
        scales: multiples of the base size to run at, probabilities averaged; None: (1.0,).
        keep_aspect: fit photos into the base size keeping their aspect ratio
            (letterboxed to it in whole-image mode); False: resize them to it.
            None: True.

    Example:
        >>> segmenter = Segmenter.load("runs/demo-fast-classes/best.keras")
        >>> train_ids = segmenter.predict_ids(photos)  # (B, H, W) uint8
    """

    def __init__(
        self,
        model,
        info: ModelInfo,
        input_size=None,
        batch_size: int = 8,
        tta_flip: bool = False,
        source: str | os.PathLike = "",
        pad_batch: bool | None = None,
        slide=None,
        scales=None,
        keep_aspect: bool | None = None,
    ):
        check_run_options(batch_size, info.head)
        self.model = model
        self.info = info
        self.head = info.head
        self.input_size = model_input_size(model, info) if input_size is None else parse_size(input_size)
        self.batch_size = int(batch_size)
        self.tta_flip = bool(tta_flip)
        self.source = str(source)
        self.pad_batch = not isinstance(model, RUNTIMES) if pad_batch is None else bool(pad_batch)
        self.slide = parse_slide(slide)
        self.scales = parse_scales(scales)
        self.fixed_size = fixed_input_size(model)
        # The pairs are 2:1 frames squashed square: a model trained on them sees any photo best stretched
        # to its size; a model trained on a layout of true aspect ratios, fitted into it.
        self.keep_aspect = info.layout != "pairs" if keep_aspect is None else bool(keep_aspect)
        self.channels = 3 if self.head == "rgb" else int(info.num_classes)
        # The colour head is decoded to the 19 Cityscapes train ids.
        self.num_classes = NUM_CLASSES if self.head == "rgb" else self.channels
        # Flips and scales average probabilities, not raw logits.
        self.probabilities = self.head == "classes" and (self.tta_flip or len(self.scales) > 1)
        self._check_fixed_size()

    def _check_fixed_size(self) -> None:
        """A fixed-size model takes windows of its size, or the whole photo in its size at one scale."""
        if self.fixed_size is None:
            return
        height, width = self.fixed_size
        if self.slide is not None and self.slide[0] != self.fixed_size:
            crop = self.slide[0]
            raise ConfigError(
                f"the model takes {height}x{width} images: sliding windows must be {height}x{width}, "
                f"not {crop[0]}x{crop[1]}: {self.source}"
            )
        if self.slide is None and self.scales != (1.0,):
            raise ConfigError(
                f"multi-scale inference needs a model that takes any size, or sliding windows "
                f"of its {height}x{width}: {self.source}"
            )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        image_size=None,
        head: str | None = None,
        batch_size: int = 8,
        tta_flip: bool = False,
        slide=None,
        scales=None,
        keep_aspect: bool | None = None,
    ) -> Segmenter:
        """Loads a ``.keras`` file (``pspnet.models.modelfile.load_model``) or an exported
        ``.onnx``/``.tflite``/SavedModel (``pspnet.inference.runtimes``) ready to predict.

        Args:
            path: the model file (or SavedModel folder).
            image_size: the base size instead of the model's own (with ``slide``
                also for a fixed-size model, whose windows are its size).
            head: override the stored (or described) head.
            batch_size, tta_flip, slide, scales, keep_aspect: as the constructor's.
        """
        check_run_options(batch_size, head)  # before the (slow) load
        model, info = load_exported(path) if exported_format(path) else load_model(path)
        if head is not None:
            info.head = head
        if slide is not None and image_size is not None:
            size = parse_size(image_size, "image size")
        else:
            size = model_input_size(model, info, image_size)
        return cls(
            model,
            info,
            size,
            batch_size=batch_size,
            tta_flip=tta_flip,
            source=path,
            slide=slide,
            scales=scales,
            keep_aspect=keep_aspect,
        )

    def mode(self) -> dict:
        """How this segmenter runs its model (``inference_mode``), with the base size."""
        return {
            **inference_mode(self.slide, self.scales, self.tta_flip, self.keep_aspect),
            "base_size": list(self.input_size),
        }

    def run_size(self, shape: tuple[int, ...], scale: float = 1.0) -> tuple[int, int]:
        """The (H, W) a photo of ``shape`` is rescaled to before the model (or its windows) sees it."""
        if self.keep_aspect:
            return fit_size(shape, self.input_size, scale)
        return scaled_size(self.input_size, scale)

    def _forward(self, photos: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) float32 0-255 at the input size -> (B, h, w, K) float32 scores."""
        count = len(photos)
        if self.pad_batch:
            photos = pad_rows(photos, self.batch_size)  # zeros: the rows past ``count`` are dropped
        output = np.asarray(main_output(self.model.predict_on_batch(photos)), dtype=np.float32)[:count]
        if output.ndim == 2:  # the seed notebook's flattened colour output (B, h*w*3)
            output = output.reshape(count, *photos.shape[1:3], -1)
        if output.ndim != 4:
            raise ConfigError(f"the model's output has shape {output.shape}, not (B, H, W, C): {self.source}")
        if output.shape[-1] != self.channels:
            raise ConfigError(
                f"{'an' if self.head == 'rgb' else 'a'} {self.head} head must output {self.channels} channels, "
                f"this model outputs {output.shape[-1]}: {self.source}"
            )
        if self.probabilities:
            output = _softmax(output)
        return output

    def _forward_flip(self, inputs: np.ndarray) -> np.ndarray:
        """``_forward``, averaged with the mirror image's scores under ``tta_flip``."""
        scores = self._forward(inputs)
        if self.tta_flip:
            mirrored = self._forward(np.ascontiguousarray(inputs[:, :, ::-1]))
            scores = 0.5 * (scores + mirrored[:, :, ::-1])
        return np.ascontiguousarray(scores)

    def _slide(self, image: np.ndarray) -> np.ndarray:
        """(h, w, 3) float32 -> (h, w, K) scores averaged over the windows that cover each pixel."""
        (crop_height, crop_width), (stride_height, stride_width) = self.slide
        height, width = image.shape[:2]
        boxes = [
            (top, left)
            for top in window_starts(height, crop_height, stride_height)
            for left in window_starts(width, crop_width, stride_width)
        ]
        total = np.zeros((height, width, self.channels), np.float32)
        count = np.zeros((height, width, 1), np.float32)
        for first in range(0, len(boxes), self.batch_size):
            group = boxes[first : first + self.batch_size]
            # Windows of an image smaller than the crop are padded to the crop: one input shape.
            windows = padded_photos(len(group), (crop_height, crop_width))  # what training pads photos with
            for index, (top, left) in enumerate(group):
                part = image[top : top + crop_height, left : left + crop_width]
                windows[index, : part.shape[0], : part.shape[1]] = part
            scores = self._forward_flip(windows)
            for index, (top, left) in enumerate(group):
                rows, columns = min(crop_height, height - top), min(crop_width, width - left)
                total[top : top + rows, left : left + columns] += scores[index, :rows, :columns]
                count[top : top + rows, left : left + columns] += 1.0
        return total / count

    def _run_scores(self, photos: np.ndarray) -> list[np.ndarray]:
        """(B, H, W, 3) photos -> one (B, h, w, K) array of scores per scale, at that scale's run size."""
        inputs = np.asarray(photos, dtype=np.float32)
        per_scale = []
        for scale in self.scales:
            resized = resize_batch(inputs, self.run_size(inputs.shape[1:3], scale))
            if self.slide is None:
                per_scale.append(self._letterboxed(resized, scaled_size(self.input_size, scale)))
            else:
                per_scale.append(np.stack([self._slide(image) for image in resized]))
        return per_scale

    def _letterboxed(self, resized: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
        """Scores of (B, h, w, 3) fitted photos run at the top left of a ``frame`` padded with ``PAD_RGB``.

        As training's validation batches (``pspnet.data.pipeline``) and a fixed-size export see them, so a
        model and its export score one number; a photo of the frame's shape is run as it is.
        """
        height, width = resized.shape[1:3]
        if (height, width) == tuple(frame):
            return self._forward_flip(resized)
        padded = padded_photos(len(resized), frame)
        padded[:, :height, :width] = resized
        return np.ascontiguousarray(self._forward_flip(padded)[:, :height, :width])

    def _at_label(self, per_scale: list[np.ndarray], index: int, label_size: tuple[int, int]) -> np.ndarray:
        """Image ``index``'s scores resized to the label size, averaged over the scales."""
        # Bilinear on scores, then the decision: smoother than nearest on ids.
        total = resize_image(per_scale[0][index], label_size)
        for scores in per_scale[1:]:
            total = total + resize_image(scores[index], label_size)
        return total / len(per_scale) if len(per_scale) > 1 else total

    def scores(self, photos: np.ndarray, label_size: tuple[int, int] | None = None) -> np.ndarray:
        """Class logits (probabilities with flips or scales, or colours in 0-1) at the label size.

        Args:
            photos: (B, H, W, 3) photos in 0-255 (any dtype), at most ``batch_size``.
            label_size: (H, W) of the output; None: the photos' size.

        Returns:
            float32 (B, *label_size, K).
        """
        label_size = tuple(photos.shape[1:3]) if label_size is None else tuple(label_size)
        if len(photos) == 0:
            return np.zeros((0, *label_size, self.channels), np.float32)
        per_scale = self._run_scores(photos)
        return np.stack([self._at_label(per_scale, index, label_size) for index in range(len(photos))])

    def _decide(self, scores: np.ndarray) -> np.ndarray:
        """(H, W, K) scores -> (H, W) uint8 train ids (colours decoded with the palette)."""
        if self.head == "rgb":
            from pspnet.data import decode_labels

            return decode_labels(np.clip(np.rint(scores * 255.0), 0, 255).astype(np.uint8))
        return scores.argmax(axis=-1).astype(np.uint8)

    def predict_ids(self, photos: np.ndarray, label_size: tuple[int, int] | None = None) -> np.ndarray:
        """Train ids of a batch of photos at the label size.

        Args:
            photos: (B, H, W, 3) photos in 0-255, any B (run ``batch_size`` at a
                time; with sliding windows one photo, its windows batched).
            label_size: (H, W) of the output; None: the photos' size.

        Returns:
            uint8 (B, *label_size) train ids (255 where a colour decodes to void).
        """
        size = tuple(photos.shape[1:3]) if label_size is None else tuple(label_size)
        results = np.empty((len(photos), *size), np.uint8)
        step = self.batch_size if self.slide is None else 1
        for start in range(0, len(photos), step):
            per_scale = self._run_scores(photos[start : start + step])
            for offset in range(len(per_scale[0])):
                # One image at the label size at a time: (B, 1024, 2048, 19) float32 would be 160 MB each.
                results[start + offset] = self._decide(self._at_label(per_scale, offset, size))
        return results

    def _batches(self, photos, truths):
        """(photos, truths) batches: slices of arrays, or runs of up to ``batch_size``
        same-sized items of lazy sequences (decoded one at a time)."""
        if len(photos) != len(truths):
            raise ConfigError(f"{len(photos)} photos but {len(truths)} labels")
        if isinstance(photos, np.ndarray) and isinstance(truths, np.ndarray):
            for start in range(0, len(photos), self.batch_size):
                stop = start + self.batch_size
                yield np.asarray(photos[start:stop]), np.asarray(truths[start:stop])
            return
        group, shapes = [], None
        for index in range(len(photos)):
            photo, truth = np.asarray(photos[index]), np.asarray(truths[index])
            if group and (len(group) == self.batch_size or (photo.shape, truth.shape) != shapes):
                yield np.stack([item[0] for item in group]), np.stack([item[1] for item in group])
                group = []
            group.append((photo, truth))
            shapes = (photo.shape, truth.shape)
        if group:
            yield np.stack([item[0] for item in group]), np.stack([item[1] for item in group])

    def confusion(self, photos, truths, progress: Callable[[int], None] | None = None) -> ConfusionMatrix:
        """The confusion matrix of the model on labelled photos, batch by batch (bounded memory).

        Args:
            photos: (N, H, W, 3) uint8 photos (a memmap is fine), or a sequence
                (``__len__``, ``__getitem__``) of (H, W, 3) photos of any sizes.
            truths: (N, H, W) uint8 train ids, or a sequence of (H, W) ones, 255
                ignored; each prediction is made at its label's (full) size.
            progress: called with the number of images after each batch.

        Returns:
            A ``pspnet.metrics.ConfusionMatrix`` of ``num_classes`` over every image.
        """
        confusion = ConfusionMatrix(self.num_classes)
        for photo_batch, truth_batch in self._batches(photos, truths):
            confusion.update(truth_batch, self.predict_ids(photo_batch, truth_batch.shape[1:3]))
            if progress is not None:
                progress(len(photo_batch))
        return confusion
