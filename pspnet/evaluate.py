"""Scores a saved model on a labelled split: mIoU, accuracies, confusion matrix.

    pspnet-evaluate --model runs/demo/best.keras --data ../shared/data/cityscapes_data/val
    pspnet-evaluate --model runs/demo/best.keras --data demo --tta

Predictions are made batch by batch at the model's input size, their
logits (or colours) resized bilinearly to the label size, reduced to train
ids and added to one confusion matrix, so memory does not grow with the
split. Models with the seed's colour (``rgb``) head are scored by decoding
their colour output to train ids with the palette, so both heads meet on
one metric. Writes ``metrics.json`` and ``confusion_matrix.png`` (and
``per_class_iou.png``) to the output folder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pspnet.errors import ConfigError, DataError
from pspnet.metrics import ConfusionMatrix, to_jsonable
from pspnet.palette import CLASS_NAMES, NUM_CLASSES

DEFAULT_IMAGE_SIZE = 256  # for models that take any input size
HEADS = ("classes", "rgb")


@dataclass
class EvalConfig:
    """What to evaluate, on what, and where the results go."""

    model: str | Path  # a .keras file saved by pspnet-train (or any Keras model)
    data: str | Path  # a split folder of pairs, a data folder with val/, or "demo"
    out: str | Path | None = None  # output folder; None: the model file's folder
    batch_size: int = 8  # images per forward pass
    image_size: int | tuple[int, int] | None = None  # None: the model's input size (256 if any)
    tta_flip: bool = False  # average the predictions of each image and its mirror image
    cache_dir: str | Path | None = None  # decoded-split cache of pspnet.data.load_split
    head: str | None = None  # "classes" or "rgb"; None: detect from the model
    verbose: bool = True  # progress bar and printed table


# --- model ------------------------------------------------------------------


def load_model(path: str | Path):
    """Loads a ``.keras`` model with every pspnet layer registered (safe mode).

    Args:
        path: the model file.

    Returns:
        The ``keras.Model``, not compiled (evaluation needs no loss).

    Raises:
        ConfigError: the file is missing or is not a loadable Keras model.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    if path.suffix != ".keras":
        raise ConfigError(f"not a .keras model file: {path}")

    import keras

    import pspnet  # noqa: F401  (registers the custom layers for deserialisation)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # zip, JSON, h5 and deserialisation errors alike
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"cannot load model {path}: {reason}") from error


def _main_output(model):
    """The symbolic output scored: ``outputs["main"]`` for dict outputs, else the first."""
    try:
        output = model.output
    except (AttributeError, ValueError):  # a subclassed model has no symbolic output
        return None
    if isinstance(output, dict):
        return output["main"] if "main" in output else next(iter(output.values()))
    if isinstance(output, (list, tuple)):
        return output[0]
    return output


def detect_head(model) -> str:
    """Tells the seed's colour head ("rgb") from class logits ("classes").

    A model is taken for an rgb head when its scored output has 3 channels
    (or the seed's flattened H*W*3) and comes from a sigmoid activation or a
    layer whose name says "rgb"; class-logit heads end without an activation.

    Args:
        model: a loaded keras.Model.

    Returns:
        "rgb" or "classes".
    """
    output = _main_output(model)
    if output is None:
        return "classes"
    shape = tuple(output.shape)
    flat = len(shape) == 2 and shape[-1] is not None and shape[-1] % 3 == 0
    three_channels = shape[-1] == 3 or flat
    if not three_channels:
        return "classes"
    history = getattr(output, "_keras_history", None)
    layer = history[0] if history else None
    activation = getattr(layer, "activation", None)
    names = [getattr(layer, "name", "")]
    if type(layer).__name__ in ("Flatten", "Reshape"):
        # The seed flattens after its sigmoid: look one layer further back.
        try:
            parent = layer._inbound_nodes[0].input_tensors[0]._keras_history[0]
            activation = getattr(parent, "activation", None)
            names.append(parent.name)
        except (AttributeError, IndexError):
            pass
    is_sigmoid = getattr(activation, "__name__", "") == "sigmoid"
    return "rgb" if is_sigmoid or any("rgb" in name for name in names) else "classes"


def model_input_size(model, image_size) -> tuple[int, int]:
    """(height, width) to run the model at, checked against its input shape."""
    shape = model.input_shape
    shape = tuple(shape[0] if isinstance(shape, list) else shape)
    fixed = shape[1:3] if len(shape) == 4 else (None, None)
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if any(s <= 0 for s in size):
            raise ConfigError(f"image size must be positive, got {image_size}")
        if None not in fixed and tuple(fixed) != size:
            raise ConfigError(
                f"the model takes {fixed[0]}x{fixed[1]} images, not {size[0]}x{size[1]}"
            )
        return int(size[0]), int(size[1])
    if None in fixed:
        return DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE
    return int(fixed[0]), int(fixed[1])


# --- data -------------------------------------------------------------------


def resolve_split(data: str | Path) -> Path:
    """The split folder to score: DIR itself, DIR/val, or the demo set's val/.

    Args:
        data: a folder of pairs, a folder holding ``val/``, or "demo".

    Returns:
        The folder of composite pairs.

    Raises:
        DataError: the folder does not exist.
    """
    if str(data) == "demo":
        # The very set ``pspnet-train --data demo`` trains on (written once, cached).
        from pspnet.synth import demo_data

        return demo_data() / "val"
    folder = Path(data)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}")
    if (folder / "val").is_dir():
        return folder / "val"
    return folder


def _resize(batch: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """Resizes (B, H, W, C) to (B, size[0], size[1], C); a no-op when sizes match."""
    if batch.shape[1:3] == tuple(size):
        return batch
    height, width = size
    out = np.empty((len(batch), height, width, batch.shape[-1]), dtype=batch.dtype)
    for index, image in enumerate(batch):
        resized = cv2.resize(image, (width, height), interpolation=interpolation)
        out[index] = resized.reshape(height, width, -1)
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


# --- prediction -------------------------------------------------------------


class Predictor:
    """Runs the model on uint8 photos and returns train ids at the label size."""

    def __init__(self, model, head: str, input_size, batch_size: int, tta_flip: bool, source=""):
        self.model = model
        self.source = source  # the model file, named in error messages
        self.head = head
        self.input_size = input_size
        self.batch_size = batch_size
        self.tta_flip = tta_flip

    def _forward(self, photos: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) float32 0-255 -> (B, h, w, K) float32 scores."""
        count = len(photos)
        if count < self.batch_size:
            # Pad the last batch to the full size so the compiled function is reused.
            padding = np.zeros((self.batch_size - count, *photos.shape[1:]), photos.dtype)
            photos = np.concatenate([photos, padding])
        output = self.model.predict_on_batch(photos)
        if isinstance(output, dict):
            output = output["main"] if "main" in output else next(iter(output.values()))
        elif isinstance(output, (list, tuple)):
            output = output[0]
        output = np.asarray(output, dtype=np.float32)[:count]
        if output.ndim == 2:  # the seed's flattened colour output (B, h*w*3)
            output = output.reshape(count, *self.input_size, -1)
        if output.ndim != 4:
            raise ConfigError(
                f"the model's output has shape {output.shape}, not (B, H, W, C): {self.source}"
            )
        channels = 3 if self.head == "rgb" else NUM_CLASSES
        if output.shape[-1] != channels:
            raise ConfigError(
                f"a {self.head} head must output {channels} channels, this model outputs "
                f"{output.shape[-1]}: {self.source}"
            )
        if self.head == "classes" and self.tta_flip:
            output = _softmax(output)  # average probabilities, not raw logits
        return output

    def __call__(self, photos: np.ndarray, label_size: tuple[int, int]) -> np.ndarray:
        """(B, H, W, 3) uint8 photos -> (B, *label_size) uint8 train ids (255: void colour)."""
        inputs = _resize(photos.astype(np.float32), self.input_size, cv2.INTER_LINEAR)
        scores = self._forward(inputs)
        if self.tta_flip:
            mirrored = self._forward(np.ascontiguousarray(inputs[:, :, ::-1]))
            scores = 0.5 * (scores + mirrored[:, :, ::-1])
        # Bilinear on scores, then the decision: smoother than nearest on ids.
        scores = _resize(np.ascontiguousarray(scores), label_size, cv2.INTER_LINEAR)
        if self.head == "rgb":
            from pspnet.data import decode_labels

            colors = np.clip(np.rint(scores * 255.0), 0, 255).astype(np.uint8)
            return decode_labels(colors)
        return scores.argmax(axis=-1).astype(np.uint8)


# --- evaluation -------------------------------------------------------------


def format_table(results: dict[str, Any]) -> str:
    """The per-class IoU/accuracy table and the summary lines, as text.

    Args:
        results: the dict returned by ``evaluate`` (or ``metrics.scores``).

    Returns:
        A printable multi-line string; absent classes show "n/a".
    """

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "   n/a"
        return f"{value:6.3f}"

    width = max(len(name) for name in results["per_class_iou"]) if results["per_class_iou"] else 5
    lines = [f"{'class':<{width}}     IoU  accuracy", "-" * (width + 18)]
    for name, iou in results["per_class_iou"].items():
        accuracy = results.get("per_class_accuracy", {}).get(name)
        lines.append(f"{name:<{width}}  {cell(iou)}    {cell(accuracy)}")
    lines.append("-" * (width + 18))
    for key in ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou"):
        lines.append(f"{key:<24}{cell(results[key])}")
    return "\n".join(lines)


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Scores ``config.model`` on a split and writes metrics.json and figures.

    Args:
        config: an ``EvalConfig``.

    Returns:
        The metrics: ``mean_iou``, ``pixel_accuracy``, ``mean_class_accuracy``,
        ``frequency_weighted_iou``, ``per_class_iou``, ``per_class_accuracy``
        (NaN for classes absent from truth and prediction) and
        ``num_images``, ``model``, ``data``, ``head``, ``tta``,
        ``image_size``, ``confusion_matrix``, ``seconds``, ``out``.

    Raises:
        ConfigError: bad model file, image size or batch size.
        DataError: missing or malformed data.
    """
    if config.batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {config.batch_size}")
    if config.head is not None and config.head not in HEADS:
        raise ConfigError(f"head must be one of {HEADS}, got {config.head!r}")
    model_path = Path(config.model)
    split = resolve_split(config.data)  # check the data before the (slow) model load
    model = load_model(model_path)
    head = config.head or detect_head(model)
    input_size = model_input_size(model, config.image_size)
    out_dir = Path(config.out) if config.out is not None else model_path.parent

    from pspnet.data import load_split
    from pspnet.viz import plot_confusion, plot_per_class_iou

    photos, truths = load_split(split, cache_dir=config.cache_dir, progress=config.verbose)
    if len(photos) == 0:
        raise DataError(f"no images in {split}")
    label_size = tuple(truths.shape[1:3])

    predictor = Predictor(
        model, head, input_size, config.batch_size, config.tta_flip, source=model_path
    )
    confusion = ConfusionMatrix(NUM_CLASSES)
    started = time.perf_counter()
    progress = None
    if config.verbose:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(photos), desc="evaluate", unit="img")
    try:
        for start in range(0, len(photos), config.batch_size):
            stop = min(start + config.batch_size, len(photos))
            predicted = predictor(np.asarray(photos[start:stop]), label_size)
            confusion.update(np.asarray(truths[start:stop]), predicted)
            if progress is not None:
                progress.update(stop - start)
    finally:
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - started

    results = confusion.result(CLASS_NAMES)
    results.update(
        num_images=int(len(photos)),
        model=str(model_path),
        data=str(split),
        head=head,
        tta=bool(config.tta_flip),
        image_size=list(input_size),
        seconds=round(seconds, 3),
        confusion_matrix=confusion.matrix.tolist(),
        missed_pixels=int(confusion.missed.sum()),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "metrics.json").open("w") as handle:
        json.dump(to_jsonable(results), handle, indent=2, allow_nan=False)
    figure = plot_confusion(confusion.matrix, CLASS_NAMES, normalize=True)
    figure.savefig(out_dir / "confusion_matrix.png", dpi=110)
    figure = plot_per_class_iou(results["per_class_iou"], results["mean_iou"])
    figure.savefig(out_dir / "per_class_iou.png", dpi=110)
    results["out"] = str(out_dir)

    if config.verbose:
        print(format_table(results))
        print(f"{len(photos)} images in {seconds:.1f} s; wrote {out_dir / 'metrics.json'}")
    return results
