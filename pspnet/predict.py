"""Runs a saved model on photos, composite pairs or folders of them.

    pspnet-predict --model runs/demo/best.keras --input photo.jpg --out predictions/
    pspnet-predict --model runs/demo/best.keras --input ../shared/data/cityscapes_data/val \
        --out predictions/ --with-truth

For each image NAME it writes ``NAME_color.png`` (the train-id map in the
Cityscapes colours), ``NAME_overlay.png`` (those colours over the photo),
``NAME_ids.png`` (the raw train ids, uint8, one channel) and, with
``with_truth``, ``NAME_panel.png`` (photo | truth | prediction).

Composite pairs: with ``pairs="auto"`` an image whose width is exactly twice
its height is taken for a photo|label composite (the Kaggle format) and only
its left half is predicted; a wide photo of that exact shape is then
misread, so pass ``pairs="never"`` (``--pairs never``) for plain photos, or
``pairs="always"`` to insist that every input is a composite.

Sizes: by default each photo is resized to the size the model was trained
at, and the scores are resized bilinearly back to the photo before the
decision (``pspnet.inference``, as in ``pspnet.evaluate``); ``native=True``
runs the model at each photo's own size (models built with ``None`` sizes
only). Models with the seed's colour (``rgb``) head are decoded to train ids
with the palette, as in evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pspnet.config import HEADS, check_choice
from pspnet.errors import ConfigError, DataError
from pspnet.inference import Segmenter, fixed_input_size, model_input_size

PAIRS = ("auto", "always", "never")


@dataclass
class PredictConfig:
    """What to predict, from which model, and where the pictures go."""

    model: str | Path  # a .keras file saved by pspnet-train
    input: str | Path  # a photo, a composite pair, or a folder of them
    out: str | Path = "predictions"  # output folder (created)
    with_truth: bool = False  # composites: also draw photo | truth | prediction (NAME_panel.png)
    native: bool = False  # run at each photo's own size instead of the model's input size
    batch_size: int = 4  # images per forward pass
    pairs: str = "auto"  # auto: width == 2*height means a composite; always; never
    image_size: int | tuple[int, int] | None = None  # None: the size the model was trained at
    head: str | None = None  # "classes" or "rgb"; None: what the model file says
    alpha: float = 0.5  # weight of the label colours in the overlay
    verbose: bool = True  # progress bar and a closing line


def list_inputs(path: str | Path) -> list[Path]:
    """The images to predict: the file itself, or a folder's images in natural order.

    Args:
        path: an image file or a folder (non-images in it are skipped with one warning).

    Returns:
        A list of paths.

    Raises:
        DataError: the path does not exist or the folder holds no image.
    """
    from pspnet.data import list_images

    path = Path(path)
    if path.is_dir():
        return list_images(path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    return [path]


def read_input(path: Path, pairs: str = "auto") -> tuple[np.ndarray, np.ndarray | None]:
    """Reads one input image as (photo, label_rgb or None).

    Args:
        path: a .jpg/.jpeg/.png file.
        pairs: "auto", "always" or "never" (see the module docstring).

    Returns:
        ``photo`` uint8 (H, W, 3) RGB and, for composites, the label half
        uint8 (H, W, 3) RGB (else None).

    Raises:
        DataError: unreadable, corrupt or greyscale file, or (pairs="always")
            not a composite; the message names the file.
    """
    from pspnet.data import read_photo, split_composite

    image = read_photo(path)  # strict: truncated, corrupt and greyscale files end here
    height, width = image.shape[:2]
    composite = pairs == "always" or (pairs == "auto" and width == 2 * height)
    if not composite:
        return image, None
    return split_composite(image, path)


def output_names(paths: list[Path]) -> dict[Path, str]:
    """The NAME of each input's pictures: its stem, or, where two inputs share
    a stem (``1.jpg``, ``1.png``), its file name with the dot as ``_`` (``1_jpg``)."""
    from collections import Counter

    stems = Counter(path.stem for path in paths)
    return {path: path.stem if stems[path.stem] == 1 else path.name.replace(".", "_") for path in paths}


def _write_rgb(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise DataError(f"cannot write {path}")


def _save_outputs(
    out_dir: Path, name: str, photo, train_ids, truth_rgb, config: PredictConfig
) -> list[Path]:
    """Writes the pictures of one image; returns their paths."""
    from pspnet.viz import colorize, overlay, three_panel

    written = []
    path = out_dir / f"{name}_color.png"
    _write_rgb(path, colorize(train_ids))
    written.append(path)
    path = out_dir / f"{name}_overlay.png"
    _write_rgb(path, overlay(photo, train_ids, alpha=config.alpha))
    written.append(path)
    path = out_dir / f"{name}_ids.png"
    if not cv2.imwrite(str(path), np.ascontiguousarray(train_ids, dtype=np.uint8)):
        raise DataError(f"cannot write {path}")
    written.append(path)
    if config.with_truth:
        from pspnet.data import decode_labels

        truth = decode_labels(truth_rgb) if truth_rgb is not None else None
        figure = three_panel(photo, truth, train_ids)
        path = out_dir / f"{name}_panel.png"
        figure.savefig(path, dpi=100)
        written.append(path)
    return written


def predict(config: PredictConfig) -> dict[str, Any]:
    """Predicts every input image and writes its pictures to ``config.out``.

    Images are read and written batch by batch; a corrupt file stops the
    run with a ``DataError`` after the images before it are written.

    Args:
        config: a ``PredictConfig``.

    Returns:
        ``{"num_images", "out", "head", "image_size" (None with native),
        "files"}`` where files lists every path written.

    Raises:
        ConfigError: bad model file, batch size, head or pairs option, or
            native on a fixed-size model.
        DataError: missing input, or an unreadable/corrupt image (named).
    """
    if config.batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {config.batch_size}")
    if config.pairs not in PAIRS:
        raise ConfigError(f"pairs must be one of {PAIRS}, got {config.pairs!r}")
    if config.head is not None:
        check_choice("head", config.head, HEADS)
    paths = list_inputs(config.input)  # check the input before the (slow) model load
    names = output_names(paths)
    model_path = Path(config.model)
    loaded = Segmenter.load(model_path, image_size=config.image_size, head=config.head, batch_size=config.batch_size)
    model, info, head = loaded.model, loaded.info, loaded.head
    input_size = None
    if config.native:
        fixed = fixed_input_size(model)
        if fixed is not None:
            raise ConfigError(
                f"--native needs a model that takes any size; this one takes "
                f"{fixed[0]}x{fixed[1]} images: {model_path}"
            )
    else:
        input_size = model_input_size(model, info, config.image_size)
    out_dir = Path(config.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    if config.with_truth and config.pairs == "never":
        import warnings

        from pspnet.errors import PspnetWarning

        warnings.warn("--with-truth with --pairs never: panels show no truth", PspnetWarning, stacklevel=2)

    progress = None
    if config.verbose:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(paths), desc="predict", unit="img", disable=None)
    written: list[Path] = []
    segmenters: dict[tuple[int, int], Segmenter] = {}
    try:
        for start in range(0, len(paths), config.batch_size):
            batch, failure = [], None
            for path in paths[start : start + config.batch_size]:
                try:
                    batch.append((path, *read_input(path, config.pairs)))
                except DataError as error:
                    # Predict the good images read before it, then stop.
                    failure = error
                    break
            # One forward pass per photo size in the batch (a folder usually has one).
            for size in dict.fromkeys(photo.shape[:2] for _, photo, _ in batch):
                group = [item for item in batch if item[1].shape[:2] == size]
                run_size = size if config.native else input_size
                if run_size not in segmenters:
                    segmenters[run_size] = Segmenter(model, info, run_size, config.batch_size, source=model_path)
                photos = np.stack([photo for _, photo, _ in group])
                train_ids = segmenters[run_size].predict_ids(photos, size)  # (B, H, W) uint8
                for (path, photo, truth_rgb), ids in zip(group, train_ids):
                    written += _save_outputs(out_dir, names[path], photo, ids, truth_rgb, config)
            if progress is not None:
                progress.update(len(batch))
            if failure is not None:
                raise failure
    finally:
        if progress is not None:
            progress.close()
    if config.verbose:
        print(f"{len(paths)} image{'s' if len(paths) != 1 else ''}: wrote {len(written)} files to {out_dir}")
    return {
        "num_images": len(paths),
        "out": str(out_dir),
        "head": head,
        "image_size": list(input_size) if input_size else None,
        "files": [str(path) for path in written],
    }
