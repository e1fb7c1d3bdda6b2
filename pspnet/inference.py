"""The one inference path: photos in, train ids at the label's size out, and their scores.

Training's final scoring, ``pspnet.evaluate`` and ``pspnet.predict`` all run a
model through ``Segmenter``, so one model gets one number wherever it is
scored. Photos are resized to the model's input size (the size it was trained
at, unless told otherwise), the scores (logits, or the seed's colours) are
resized bilinearly back to the label's size, and only then reduced to train
ids: colour outputs are decoded with the palette, so both heads meet on one
metric.
"""

from __future__ import annotations

import os
from typing import Callable

import cv2
import numpy as np

from pspnet.config import HEADS, check_choice, parse_size
from pspnet.errors import ConfigError
from pspnet.metrics import ConfusionMatrix
from pspnet.modelfile import ModelInfo, load_model
from pspnet.palette import NUM_CLASSES
from pspnet.runtimes import RUNTIMES, exported_format, load_exported

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


def resize_batch(batch: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resizes (B, H, W, C) to (B, size[0], size[1], C); a no-op when the sizes match."""
    if batch.shape[1:3] == tuple(size):
        return batch
    height, width = size
    out = np.empty((len(batch), height, width, batch.shape[-1]), dtype=batch.dtype)
    for index, image in enumerate(batch):
        out[index] = cv2.resize(image, (width, height), interpolation=interpolation).reshape(height, width, -1)
    return out


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


class Segmenter:
    """A model and what it is: uint8 photos in, uint8 train ids out.

    Args:
        model: a keras.Model (dict outputs: ``"main"`` is used).
        info: its ModelInfo (the head decides how outputs become train ids).
        input_size: (H, W) to run it at; None: ``model_input_size``.
        batch_size: images per forward pass.
        pad_batch: pad shorter batches to ``batch_size``, so that a compiled
            (or, under ``keras.distribution``, sharded) Keras function always
            sees one shape; None: pad Keras models only, never an exported
            runtime (``pspnet.runtimes``), which takes any batch (LiteRT
            would run one call per padded image).
        tta_flip: average the class probabilities of each photo and its mirror image.
        source: the model file, named in error messages.

    Example:
        >>> segmenter = Segmenter.load("runs/demo-fast-classes/best.keras")
        >>> train_ids = segmenter.predict_ids(photos)  # (B, H, W) uint8
    """

    def __init__(self, model, info: ModelInfo, input_size=None, batch_size: int = 8, tta_flip: bool = False,
                 source: str | os.PathLike = "", pad_batch: bool | None = None):
        check_choice("head", info.head, HEADS)
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        self.model = model
        self.info = info
        self.head = info.head
        self.input_size = model_input_size(model, info) if input_size is None else parse_size(input_size)
        self.batch_size = int(batch_size)
        self.tta_flip = bool(tta_flip)
        self.source = str(source)
        self.pad_batch = not isinstance(model, RUNTIMES) if pad_batch is None else bool(pad_batch)

    @classmethod
    def load(cls, path: str | os.PathLike, image_size=None, head: str | None = None, batch_size: int = 8,
             tta_flip: bool = False) -> "Segmenter":
        """Loads a ``.keras`` file (``pspnet.modelfile.load_model``) or an exported
        ``.onnx``/``.tflite``/SavedModel (``pspnet.runtimes``) ready to predict.

        Args:
            path: the model file (or SavedModel folder).
            image_size: run at this size instead of the model's own.
            head: override the stored (or described) head.
            batch_size, tta_flip: as the constructor's.
        """
        model, info = load_exported(path) if exported_format(path) else load_model(path)
        if head is not None:
            check_choice("head", head, HEADS)
            info.head = head
        size = model_input_size(model, info, image_size)
        return cls(model, info, size, batch_size=batch_size, tta_flip=tta_flip, source=path)

    def _forward(self, photos: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) float32 0-255 at the input size -> (B, h, w, K) float32 scores."""
        count = len(photos)
        if self.pad_batch and count < self.batch_size:
            padding = np.zeros((self.batch_size - count, *photos.shape[1:]), photos.dtype)
            photos = np.concatenate([photos, padding])
        output = np.asarray(main_output(self.model.predict_on_batch(photos)), dtype=np.float32)[:count]
        if output.ndim == 2:  # the seed notebook's flattened colour output (B, h*w*3)
            output = output.reshape(count, *photos.shape[1:3], -1)
        if output.ndim != 4:
            raise ConfigError(f"the model's output has shape {output.shape}, not (B, H, W, C): {self.source}")
        channels = 3 if self.head == "rgb" else NUM_CLASSES
        if output.shape[-1] != channels:
            raise ConfigError(
                f"{'an' if self.head == 'rgb' else 'a'} {self.head} head must output {channels} channels, "
                f"this model outputs {output.shape[-1]}: {self.source}"
            )
        if self.head == "classes" and self.tta_flip:
            output = _softmax(output)  # average probabilities, not raw logits
        return output

    def scores(self, photos: np.ndarray, label_size: tuple[int, int] | None = None) -> np.ndarray:
        """Class logits (or probabilities with TTA, or colours in 0-1) at the label size.

        Args:
            photos: (B, H, W, 3) photos in 0-255 (any dtype), at most ``batch_size``.
            label_size: (H, W) of the output; None: the photos' size.

        Returns:
            float32 (B, *label_size, K).
        """
        label_size = tuple(photos.shape[1:3]) if label_size is None else tuple(label_size)
        inputs = resize_batch(np.asarray(photos, dtype=np.float32), self.input_size)
        scores = self._forward(inputs)
        if self.tta_flip:
            mirrored = self._forward(np.ascontiguousarray(inputs[:, :, ::-1]))
            scores = 0.5 * (scores + mirrored[:, :, ::-1])
        # Bilinear on scores, then the decision: smoother than nearest on ids.
        return resize_batch(np.ascontiguousarray(scores), label_size)

    def predict_ids(self, photos: np.ndarray, label_size: tuple[int, int] | None = None) -> np.ndarray:
        """Train ids of a batch of photos at the label size.

        Args:
            photos: (B, H, W, 3) photos in 0-255, any B (run ``batch_size`` at a time).
            label_size: (H, W) of the output; None: the photos' size.

        Returns:
            uint8 (B, *label_size) train ids (255 where a colour decodes to void).
        """
        results = []
        for start in range(0, len(photos), self.batch_size):
            scores = self.scores(photos[start : start + self.batch_size], label_size)
            if self.head == "rgb":
                from pspnet.data import decode_labels

                colours = np.clip(np.rint(scores * 255.0), 0, 255).astype(np.uint8)
                results.append(decode_labels(colours))
            else:
                results.append(scores.argmax(axis=-1).astype(np.uint8))
        if not results:
            size = tuple(photos.shape[1:3]) if label_size is None else tuple(label_size)
            return np.zeros((0, *size), np.uint8)
        return np.concatenate(results)

    def confusion(self, photos, truths, progress: Callable[[int], None] | None = None) -> ConfusionMatrix:
        """The confusion matrix of the model on labelled photos, batch by batch (bounded memory).

        Args:
            photos: (N, H, W, 3) uint8 photos (a memmap is fine).
            truths: (N, H, W) uint8 train ids, 255 ignored; predictions are made at this size.
            progress: called with the number of images after each batch.

        Returns:
            A ``pspnet.metrics.ConfusionMatrix`` over every image.
        """
        confusion = ConfusionMatrix(NUM_CLASSES)
        label_size = tuple(truths.shape[1:3])
        for start in range(0, len(photos), self.batch_size):
            stop = min(start + self.batch_size, len(photos))
            confusion.update(np.asarray(truths[start:stop]), self.predict_ids(np.asarray(photos[start:stop]), label_size))
            if progress is not None:
                progress(stop - start)
        return confusion
