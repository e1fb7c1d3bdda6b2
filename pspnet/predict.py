"""Runs a saved model on photos, composite pairs, folders of them, or a video.

    pspnet-predict --model runs/demo-fast-classes/best.keras --input photo.jpg --out predictions/
    pspnet-predict --model runs/demo-fast-classes/best.keras --input ../shared/data/cityscapes_data/val \
        --out predictions/ --with-truth
    pspnet-predict --model runs/demo-fast-classes/best.keras --input street.mp4 --out predictions/ --every 5

For each image NAME it writes ``NAME_color.png`` (the train-id map in the
Cityscapes colours), ``NAME_overlay.png`` (those colours over the photo),
``NAME_ids.png`` (the raw train ids, uint8, one channel) and, with
``with_truth``, ``NAME_panel.png`` (photo | truth | prediction), then
``inputs.csv``: each file, how it was read (composite, photo, video or
skipped) and notes ("EXIF orientation applied", "greyscale converted",
"16-bit converted"). The output folder is made on the first write, so a run
that fails on its first input leaves none behind, and with it ``MANIFEST``
(``predictions.json``: the model that made it). A folder holding another
model's predictions (or predictions without a manifest) is refused before
anything is written: two models' pictures never mix in one folder. The same
model may add to or redo its own.

Photos are read leniently (``pspnet.data.read_any_photo``): turned upright by
their EXIF orientation, greyscale and 16-bit files converted, alpha dropped.
Empty, truncated, corrupt and non-JPEG/PNG files stop the run after the
images before them are written, or, with ``skip_bad`` (``--skip-bad``), are
skipped with one warning each.

Composite pairs: with ``pairs="auto"`` an image exactly twice as wide as
high is taken for a photo|label composite (the Kaggle format, left half
predicted) only when its right half looks like a label image, i.e. most of
its pixels lie near a Cityscapes palette colour; a wide street photo does
not. ``pairs="never"`` reads every image as a photo, ``pairs="always"``
insists that every input is a composite.

Videos (``VIDEO_SUFFIXES``) go to ``pspnet.video.predict_video``, every
``every``-th frame, with ``colour_video`` also the colour-map video.

Sizes: by default each photo is resized to the size the model was trained
at, and the scores are resized bilinearly back to the photo before the
decision (``pspnet.inference``, as in ``pspnet.evaluate``); ``native=True``
runs the model at each photo's (or the video frame's) own size (models built
with ``None`` sizes only). Models with the seed's colour (``rgb``) head are
decoded to train ids with the palette, as in evaluation.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from pspnet.config import HEADS, check_choice
from pspnet.errors import ConfigError, DataError, PspnetWarning
from pspnet.fileio import atomic_write_text
from pspnet.inference import Segmenter, fixed_input_size, model_input_size

PAIRS = ("auto", "always", "never")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
# A 2:1 image is a composite when at least LABEL_SHARE of its right half lies
# within LABEL_DISTANCE (RGB) of a palette colour. Measured on 60 real val
# composites: label halves 0.74-0.90 (min 0.74), photo halves at most 0.385
# (mean 0.14); the synthetic pairs of pspnet.data.synth score 0.91-0.99.
LABEL_DISTANCE = 16
LABEL_SHARE = 0.6
MANIFEST = "predictions.json"  # in the output folder: {"model": the resolved model path}
PREDICTION_FILES = ("inputs.csv", "*_ids.png", "*_overlay.*")  # what a folder of predictions holds


@dataclass
class PredictConfig:
    """What to predict, from which model, and where the pictures go."""

    model: str | Path  # a .keras file saved by pspnet-train
    input: str | Path  # a photo, a composite pair, a folder of them, or a video
    out: str | Path = "predictions"  # output folder (created)
    with_truth: bool = False  # composites: also draw photo | truth | prediction (NAME_panel.png)
    native: bool = False  # run at each photo's own size instead of the model's input size
    batch_size: int = 4  # images per forward pass
    pairs: str = "auto"  # auto: 2:1 with a label-like right half is a composite; always; never
    image_size: int | tuple[int, int] | None = None  # None: the size the model was trained at
    head: str | None = None  # "classes" or "rgb"; None: what the model file says
    alpha: float = 0.5  # weight of the label colours in the overlay
    verbose: bool = True  # progress bar and a closing line
    skip_bad: bool = False  # skip unusable images with a warning instead of stopping
    every: int = 1  # videos: predict every Nth frame
    colour_video: bool = False  # videos: also write the colour-map video


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


class InputImage(NamedTuple):
    """One input as read by ``read_input``."""

    photo: np.ndarray  # uint8 (H, W, 3) RGB: what is predicted
    label_rgb: np.ndarray | None  # uint8 (H, W, 3) RGB label half of a composite, else None
    notes: list[str]  # what reading changed, e.g. "greyscale converted" (for inputs.csv)

    @property
    def read_as(self) -> str:
        """"composite" or "photo"."""
        return "photo" if self.label_rgb is None else "composite"


def label_share(image: np.ndarray) -> float:
    """The share of pixels within ``LABEL_DISTANCE`` of a Cityscapes palette colour.

    Args:
        image: uint8 (H, W, 3) RGB.

    Returns:
        A number in [0, 1]: high for colour label images, low for photos.
    """
    from pspnet.data import decode_labels

    _, distance = decode_labels(image, return_distance=True)
    return float(np.count_nonzero(distance <= LABEL_DISTANCE)) / max(distance.size, 1)


def read_input(path: Path, pairs: str = "auto") -> InputImage:
    """Reads one input image as a photo or a photo|label composite.

    Args:
        path: a .jpg/.jpeg/.png file.
        pairs: "auto", "always" or "never" (see the module docstring).

    Returns:
        An ``InputImage``: ``photo`` uint8 (H, W, 3) RGB, for composites the
        label half ``label_rgb`` (else None), and ``notes``.

    Raises:
        DataError: missing, empty, truncated, corrupt or non-JPEG/PNG file,
            or (pairs="always") not a 2:1 composite; the message names the file.
    """
    from pspnet.data import read_any_photo, split_composite

    image, notes = read_any_photo(path)
    height, width = image.shape[:2]
    if pairs == "never":
        return InputImage(image, None, notes)
    if pairs == "auto" and (width != 2 * height or label_share(image[:, height:]) < LABEL_SHARE):
        return InputImage(image, None, notes)
    photo, label_rgb = split_composite(image, path)
    return InputImage(photo, label_rgb, notes)


def output_names(paths: list[Path]) -> dict[Path, str]:
    """The NAME of each input's pictures: its stem, or, where two inputs share
    a stem (``1.jpg``, ``1.png``), its file name with the dot as ``_`` (``1_jpg``)."""
    stems = Counter(path.stem for path in paths)
    return {path: path.stem if stems[path.stem] == 1 else path.name.replace(".", "_") for path in paths}


def _write_png(path: Path, image: np.ndarray) -> None:
    """Writes a BGR or single-channel uint8 image as a PNG.

    Encoded, then written by Python: cv2.imwrite only answers False, where a
    failed write's OSError names its reason (read-only folder, full disk).
    """
    encoded, data = cv2.imencode(".png", image)
    if not encoded:
        raise DataError(f"cannot encode {path} as PNG")
    path.write_bytes(data.tobytes())


def _write_rgb(path: Path, image: np.ndarray) -> None:
    _write_png(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def _save_outputs(
    out_dir: Path, name: str, photo, train_ids, truth_rgb, config: PredictConfig
) -> list[Path]:
    """Writes the pictures of one image; returns their paths."""
    from pspnet.viz import colorize, overlay, three_panel

    # Made on the first write: a run that fails on its first input leaves no empty folder.
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    path = out_dir / f"{name}_color.png"
    _write_rgb(path, colorize(train_ids))
    written.append(path)
    path = out_dir / f"{name}_overlay.png"
    _write_rgb(path, overlay(photo, train_ids, alpha=config.alpha))
    written.append(path)
    path = out_dir / f"{name}_ids.png"
    _write_png(path, np.ascontiguousarray(train_ids, dtype=np.uint8))
    written.append(path)
    if config.with_truth:
        from pspnet.data import decode_labels

        truth = decode_labels(truth_rgb) if truth_rgb is not None else None
        figure = three_panel(photo, truth, train_ids)
        path = out_dir / f"{name}_panel.png"
        figure.savefig(path, dpi=100)
        written.append(path)
    return written


def _write_inputs_csv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """Writes ``inputs.csv``: file, read_as, notes (one row per input)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("file", "read_as", "notes"))
        writer.writerows(rows)


def is_video(path: str | Path) -> bool:
    """True for a path (not a folder) whose suffix is one of ``VIDEO_SUFFIXES``."""
    path = Path(path)
    return path.suffix.lower() in VIDEO_SUFFIXES and not path.is_dir()


def _check_owner(out_dir: Path, model: Path) -> None:
    """Refuses an output folder holding the predictions of another model, or of an unknown one.

    Raises:
        ConfigError: its ``MANIFEST`` names another model or is unreadable, or
            it holds predictions without one.
    """
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        try:
            owner = Path(json.loads(manifest.read_text())["model"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"unreadable {MANIFEST} ({error}); choose another --out: {manifest}") from None
        if owner != model.resolve():
            raise ConfigError(f"{out_dir} holds the predictions of {owner}; choose another --out "
                              f"(nothing was replaced): {manifest}")
        return
    if out_dir.is_dir() and any(next(out_dir.glob(pattern), None) for pattern in PREDICTION_FILES):
        raise ConfigError(f"{out_dir} holds predictions of an unknown model (no {MANIFEST}); "
                          f"choose another --out: {out_dir}")


def _claim(out_dir: Path, model: Path) -> None:
    """Makes the output folder and writes its ``MANIFEST`` (once): the model its pictures are of."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / MANIFEST).is_file():
        atomic_write_text(out_dir / MANIFEST, json.dumps({"model": str(model.resolve())}, indent=2) + "\n")


def _check_config(config: PredictConfig) -> None:
    """Raises ConfigError for a bad option, before anything is loaded."""
    if config.batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {config.batch_size}")
    if config.pairs not in PAIRS:
        raise ConfigError(f"pairs must be one of {PAIRS}, got {config.pairs!r}")
    if config.every < 1:
        raise ConfigError(f"every must be at least 1 (every frame), got {config.every}")
    if config.head is not None:
        check_choice("head", config.head, HEADS)
    out_dir = Path(config.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"the output folder is a file: {out_dir}")
    _check_owner(out_dir, Path(config.model))


def _load(config: PredictConfig) -> tuple[Segmenter, tuple[int, int] | None]:
    """The model as a Segmenter at its input size, and that size (None with native)."""
    model_path = Path(config.model)
    loaded = Segmenter.load(model_path, image_size=config.image_size, head=config.head, batch_size=config.batch_size)
    if not config.native:
        return loaded, model_input_size(loaded.model, loaded.info, config.image_size)
    fixed = fixed_input_size(loaded.model)
    if fixed is not None:
        raise ConfigError(
            f"--native needs a model that takes any size; this one takes "
            f"{fixed[0]}x{fixed[1]} images: {model_path}"
        )
    return loaded, None


def _video_frame_size(path: Path) -> tuple[int, int]:
    """(height, width) of a video's frames, from its header."""
    capture = cv2.VideoCapture(str(path))
    try:
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    finally:
        capture.release()
    if height < 1 or width < 1:
        raise DataError(f"cannot read the frame size of the video (unreadable or corrupt?): {path}")
    return height, width


def _predict_video(config: PredictConfig, path: Path) -> dict[str, Any]:
    """Hands a video to ``pspnet.video.predict_video``; adds read_as and inputs.csv."""
    if not path.is_file():
        raise DataError(f"input not found: {path}")
    from pspnet.video import predict_video  # here only: image inputs never need it
    segmenter, _ = _load(config)
    if config.native:
        segmenter = Segmenter(
            segmenter.model, segmenter.info, _video_frame_size(path), config.batch_size, source=config.model
        )
    out_dir = Path(config.out)
    try:
        result = predict_video(
            segmenter, path, out_dir, every=config.every, colour_video=config.colour_video,
            alpha=config.alpha, verbose=config.verbose,
        )
    finally:
        if out_dir.is_dir():  # predict_video wrote something, maybe before a truncated video's error
            _claim(out_dir, Path(config.model))
    result = {**result, "read_as": {str(path): "video"}}
    if out_dir.is_dir():
        notes = f"every {config.every} frames" if config.every > 1 else ""
        _write_inputs_csv(out_dir / "inputs.csv", [(str(path), "video", notes)])
        result["inputs_csv"] = str(out_dir / "inputs.csv")
    return result


def _counts(read_as: dict[str, str], skipped: int) -> str:
    """"2 composites, 1 photo, 1 skipped"."""
    counts = Counter(read_as.values())
    parts = [f"{counts[kind]} {kind}{'s' if counts[kind] != 1 else ''}" for kind in ("composite", "photo")
             if counts[kind]]
    if skipped:
        parts.append(f"{skipped} skipped")
    return ", ".join(parts)


def predict(config: PredictConfig) -> dict[str, Any]:
    """Predicts every input image (or a video) and writes its pictures to ``config.out``.

    Images are read and written batch by batch; an unusable file stops the
    run with a ``DataError`` after the images before it are written, or is
    skipped with a warning when ``config.skip_bad``.

    Args:
        config: a ``PredictConfig``.

    Returns:
        ``{"num_images", "out", "head", "image_size" (None with native),
        "files", "read_as", "skipped", "inputs_csv"}``: files lists every
        picture written, read_as maps each predicted input to "composite" or
        "photo", skipped lists the inputs skipped. For a video, the dict of
        ``pspnet.video.predict_video`` with read_as ``{path: "video"}``.

    Raises:
        ConfigError: bad model file, batch size, head, pairs or every option,
            an output path that is a file, or native on a fixed-size model.
        DataError: missing input, an unusable image (named, without
            skip_bad), or no usable image at all.
    """
    _check_config(config)
    if is_video(config.input):
        return _predict_video(config, Path(config.input))
    paths = list_inputs(config.input)  # check the input before the (slow) model load
    names = output_names(paths)
    if config.every != 1 or config.colour_video:
        warnings.warn("--every and --colour-video apply to videos only; ignored for images",
                      PspnetWarning, stacklevel=2)
    if config.with_truth and config.pairs == "never":
        warnings.warn("--with-truth with --pairs never: panels show no truth", PspnetWarning, stacklevel=2)
    loaded, input_size = _load(config)
    out_dir = Path(config.out)

    progress = None
    if config.verbose:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(paths), desc="predict", unit="img", disable=None)
    written: list[Path] = []
    read_as: dict[Path, tuple[str, list[str]]] = {}  # (read_as, notes) of each predicted input
    skipped: dict[Path, str] = {}
    segmenters: dict[tuple[int, int], Segmenter] = {}

    def run(batch: list[tuple[Path, InputImage]]) -> None:
        # One forward pass per photo size in the batch (a folder usually has one).
        for size in dict.fromkeys(item.photo.shape[:2] for _, item in batch):
            group = [(path, item) for path, item in batch if item.photo.shape[:2] == size]
            run_size = size if config.native else input_size
            if run_size not in segmenters:
                segmenters[run_size] = Segmenter(
                    loaded.model, loaded.info, run_size, config.batch_size, source=config.model
                )
            photos = np.stack([item.photo for _, item in group])
            train_ids = segmenters[run_size].predict_ids(photos, size)  # (B, H, W) uint8
            for (path, item), ids in zip(group, train_ids):
                if not written:
                    _claim(out_dir, Path(config.model))
                written.extend(_save_outputs(out_dir, names[path], item.photo, ids, item.label_rgb, config))
                read_as[path] = (item.read_as, item.notes)
        if progress is not None:
            progress.update(len(batch))

    try:
        batch, failure = [], None
        for path in paths:
            try:
                item = read_input(path, config.pairs)
            except DataError as error:
                if not config.skip_bad:
                    failure = error  # predict the good images read before it, then stop
                    break
                warnings.warn(f"skipped an unusable image: {error}", PspnetWarning, stacklevel=2)
                skipped[path] = str(error)
                if progress is not None:
                    progress.update(1)
                continue
            batch.append((path, item))
            if len(batch) == config.batch_size:
                run(batch)
                batch = []
        run(batch)
        if failure is not None:
            raise failure
    finally:
        if progress is not None:
            progress.close()
    if not read_as:
        raise DataError(f"none of the {len(paths)} images could be read; first: {next(iter(skipped.values()))}")

    rows = [
        (str(path), read_as[path][0], "; ".join(read_as[path][1])) if path in read_as
        else (str(path), "skipped", skipped[path])
        for path in paths
    ]
    _write_inputs_csv(out_dir / "inputs.csv", rows)
    kinds = {str(path): kind for path, (kind, _) in read_as.items()}
    if config.verbose:
        print(
            f"{len(paths)} image{'s' if len(paths) != 1 else ''} ({_counts(kinds, len(skipped))}): "
            f"wrote {len(written)} files and inputs.csv to {out_dir}"
        )
    return {
        "num_images": len(read_as),
        "out": str(out_dir),
        "head": loaded.head,
        "image_size": list(input_size) if input_size else None,
        "files": [str(path) for path in written],
        "read_as": kinds,
        "skipped": [str(path) for path in skipped],
        "inputs_csv": str(out_dir / "inputs.csv"),
    }
