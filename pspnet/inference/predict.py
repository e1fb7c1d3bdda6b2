"""Runs a saved model on photos, composite pairs, folders of them, or a video.

    pspnet-predict --model runs/demo-fast-classes/best.keras --input photo.jpg --out predictions/
    pspnet-predict --model runs/demo-fast-classes/best.keras --input ../shared/data/cityscapes_data/val \
        --out predictions/ --with-truth
    pspnet-predict --model runs/demo-fast-classes/best.keras --input street.mp4 --out predictions/ --every 5
    pspnet-predict --model runs/cityscapes-lite-classes/best.keras --input CITYSCAPES/leftImg8bit/val \
        --out predictions/ --native --label-ids
    CITYSCAPES_DATASET=CITYSCAPES CITYSCAPES_RESULTS=predictions/labelIds csEvalPixelLevelSemanticLabeling

For each image NAME (its file's stem; a Cityscapes frame's without
``_leftImg8bit``) it writes ``NAME_color.png`` (the train-id map in the
colours of the model's classes), ``NAME_overlay.png`` (those colours over the
photo), ``NAME_ids.png`` (the raw train ids, uint8, one channel), with
``with_truth`` ``NAME_panel.png`` (photo | truth | prediction), and with
``label_ids`` (``--label-ids``; Cityscapes models only)
``labelIds/NAME_labelIds.png``: the official label ids at the photo's size,
alone in their folder, which is what cityscapesscripts'
``evalPixelLevelSemanticLabeling`` (``CITYSCAPES_RESULTS``) and the benchmark
server read as they are (in the output folder itself the script would find
NAME's other pictures too). Then
``inputs.csv``: each file, how it was read (composite, photo, video or
skipped) and notes ("EXIF orientation applied", "greyscale converted",
"16-bit converted"). The output folder is made on the first write, so a run
that fails on its first input leaves none behind, and with it ``MANIFEST``
(``predictions.json``: the model that made it). A folder holding another
model's predictions (or predictions without a manifest) is refused before
anything is written: two models' pictures never mix in one folder. The same
model may add to or redo its own.

Photos are read leniently (``pspnet.data.inputs.read_input``, ``pspnet.data.read_any_photo``): turned upright by
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

Videos (``pspnet.data.inputs.VIDEO_SUFFIXES``) go to ``pspnet.inference.video.predict_video``, every
``every``-th frame, with ``colour_video`` also the colour-map video.

Inputs: a photo, a composite, a video, or a folder of images; a folder that
holds no image but folders of them (a Cityscapes split,
``ROOT/leftImg8bit/val/CITY/*.png``) is read one level down, folder by folder.

Sizes: by default each photo is resized to the size the model was trained
at, and the scores are resized bilinearly back to the photo before the
decision (``pspnet.inference.segmenter``); ``native=True`` (``--native``, models that
take any size) runs at the pixel scale the model was trained at instead:
each photo (or video frame) rescaled keeping its aspect ratio to fit that
size (a 1024x2048 Cityscapes frame, for a model trained at 512x1024, runs at
512x1024, not at its file's size: twice the scale it learned), as
``pspnet-evaluate`` does; the size each photo ran at is printed and returned.
A model trained on the pairs layout saw 2:1 frames squashed square, so its
native scale is its square size: its photos are resized to it either way.
``slide``, ``scales`` and ``tta_flip`` (``--slide``, ``--scales``, ``--tta``)
predict as ``pspnet-evaluate`` scores (``pspnet.inference.segmenter.Segmenter``).
Outputs are always at the photo's size. Models with the seed's colour
(``rgb``) head are decoded to train ids with the palette, as in evaluation.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pspnet.data.inputs import PAIRS, InputImage, is_video, list_inputs, read_input
from pspnet.errors import ConfigError, DataError, PspnetWarning
from pspnet.inference.predict_folder import (
    check_apart,
    check_owner,
    claim,
    output_names,
    write_figure,
    write_inputs_csv,
    write_png,
    write_rgb,
)
from pspnet.inference.segmenter import Segmenter, check_run_options, parse_scales, parse_slide

LABEL_IDS_FOLDER = "labelIds"  # OUT/labelIds/NAME_labelIds.png: official label ids, alone for the official script


@dataclass
class PredictConfig:
    """What to predict, from which model, and where the pictures go."""

    model: str | Path  # a .keras file saved by pspnet-train
    input: str | Path  # a photo, a composite pair, a folder of them, or a video
    out: str | Path = "predictions"  # output folder (created)
    with_truth: bool = False  # composites: also draw photo | truth | prediction (NAME_panel.png)
    native: bool = False  # fit each photo into the trained size keeping its aspect ratio, not resize it to it
    batch_size: int = 4  # images per forward pass
    pairs: str = "auto"  # auto: 2:1 with a label-like right half is a composite; always; never
    image_size: int | tuple[int, int] | None = None  # None: the size the model was trained at
    head: str | None = None  # "classes" or "rgb"; None: what the model file says
    alpha: float = 0.5  # weight of the label colours in the overlay
    verbose: bool = True  # progress bar and a closing line
    skip_bad: bool = False  # skip unusable images with a warning instead of stopping
    every: int = 1  # videos: predict every Nth frame
    colour_video: bool = False  # videos: also write the colour-map video
    label_ids: bool = False  # also write labelIds/NAME_labelIds.png (official Cityscapes label ids)
    slide: tuple | None = None  # ((crop_h, crop_w), (stride_h, stride_w)): sliding windows, as pspnet-evaluate's
    scales: tuple[float, ...] | None = None  # multiples of the model's size, probabilities averaged; None: (1.0,)
    tta_flip: bool = False  # average with the mirror image's probabilities


def _save_outputs(out_dir: Path, name: str, photo, train_ids, truth_rgb, config: PredictConfig, classes) -> list[Path]:
    """Writes the pictures of one image in the colours of ``classes``; returns their paths."""
    from pspnet.inference.viz import colorize, overlay, three_panel

    # Made on the first write: a run that fails on its first input leaves no empty folder.
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = [
        (out_dir / f"{name}_color.png", lambda path: write_rgb(path, colorize(train_ids, classes=classes))),
        (
            out_dir / f"{name}_overlay.png",
            lambda path: write_rgb(path, overlay(photo, train_ids, alpha=config.alpha, classes=classes)),
        ),
        (out_dir / f"{name}_ids.png", lambda path: write_png(path, np.ascontiguousarray(train_ids, np.uint8))),
    ]
    if config.label_ids:
        from pspnet.palette import train_id_to_label_id

        (out_dir / LABEL_IDS_FOLDER).mkdir(exist_ok=True)
        pictures.append(
            (
                out_dir / LABEL_IDS_FOLDER / f"{name}_labelIds.png",
                lambda path: write_png(path, train_id_to_label_id()[train_ids]),
            )
        )
    if config.with_truth:
        from pspnet.data import decode_labels

        truth = decode_labels(truth_rgb) if truth_rgb is not None else None
        pictures.append(
            (
                out_dir / f"{name}_panel.png",
                lambda path: write_figure(path, three_panel(photo, truth, train_ids, classes=classes)),
            )
        )
    for path, write in pictures:
        write(path)
    return [path for path, _ in pictures]


def _check_config(config: PredictConfig) -> None:
    """Raises ConfigError for a bad option, before anything is loaded."""
    check_run_options(config.batch_size, config.head)
    if config.pairs not in PAIRS:
        raise ConfigError(f"pairs must be one of {PAIRS}, got {config.pairs!r}")
    if config.every < 1:
        raise ConfigError(f"every must be at least 1 (every frame), got {config.every}")
    parse_slide(config.slide)
    parse_scales(config.scales)
    out_dir = Path(config.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"the output folder is a file: {out_dir}")
    check_owner(out_dir, Path(config.model))


def _load(config: PredictConfig):
    """The model as a Segmenter and its class table.

    Without ``native`` photos are resized to the model's input size; with it
    they are fitted into it keeping their aspect ratio (the scale it was trained at), except for a model
    trained on the pairs, whose frames were squashed square.

    Raises:
        ConfigError: native on a fixed-size model; label ids for a model of other than the
            Cityscapes classes; a model of other than 19 classes that does not name them.
    """
    from pspnet.data.classes import CITYSCAPES

    model_path = Path(config.model)
    loaded = Segmenter.load(
        model_path,
        image_size=config.image_size,
        head=config.head,
        batch_size=config.batch_size,
        tta_flip=config.tta_flip,
        slide=config.slide,
        scales=config.scales,
        keep_aspect=None if config.native else False,
    )  # native: as the model trained
    if config.native and loaded.fixed_size is not None and loaded.slide is None:
        height, width = loaded.fixed_size
        raise ConfigError(
            f"--native needs a model that takes any size; this one takes {height}x{width} images: {model_path}"
        )
    try:
        classes = loaded.info.class_table()
    except ConfigError as error:
        raise ConfigError(f"{error}: {model_path}") from None
    difference = classes.difference(CITYSCAPES)
    if config.label_ids and difference is not None:
        raise ConfigError(
            f"--label-ids writes official Cityscapes label ids, but the model predicts other classes "
            f"({difference}, the model's first): {model_path}"
        )
    return loaded, classes


def _predict_video(config: PredictConfig, path: Path) -> dict[str, Any]:
    """Hands a video to ``pspnet.inference.video.predict_video``; adds read_as and inputs.csv."""
    if not path.is_file():
        raise DataError(f"input not found: {path}")
    from pspnet.inference.video import predict_video  # here only: image inputs never need it

    if config.label_ids or config.with_truth:
        warnings.warn(
            "--label-ids and --with-truth apply to images only; ignored for a video", PspnetWarning, stacklevel=3
        )
    segmenter, classes = _load(config)
    out_dir = Path(config.out)
    try:
        result = predict_video(
            segmenter,
            path,
            out_dir,
            every=config.every,
            colour_video=config.colour_video,
            alpha=config.alpha,
            verbose=config.verbose,
            classes=classes,
        )
    finally:
        if out_dir.is_dir():  # predict_video wrote something, maybe before a truncated video's error
            claim(out_dir, Path(config.model))
    result = {**result, "read_as": {str(path): "video"}}
    if out_dir.is_dir():
        notes = f"every {config.every} frames" if config.every > 1 else ""
        write_inputs_csv(out_dir / "inputs.csv", [(str(path), "video", notes)])
        result["inputs_csv"] = str(out_dir / "inputs.csv")
    return result


def _counts(read_as: dict[str, str], skipped: int) -> str:
    """ "2 composites, 1 photo, 1 skipped"."""
    counts = Counter(read_as.values())
    parts = [
        f"{counts[kind]} {kind}{'s' if counts[kind] != 1 else ''}" for kind in ("composite", "photo") if counts[kind]
    ]
    if skipped:
        parts.append(f"{skipped} skipped")
    return ", ".join(parts)


class _Predictions:
    """What ``predict`` wrote and read so far: pictures, how each input was read, skips, run sizes."""

    def __init__(self, config: PredictConfig, segmenter: Segmenter, classes, names: dict[Path, str], progress):
        self.config, self.segmenter, self.classes = config, segmenter, classes
        self.names, self.progress = names, progress
        self.out_dir = Path(config.out)
        self.written: list[Path] = []
        self.read_as: dict[Path, tuple[str, list[str]]] = {}  # (read_as, notes) of each predicted input
        self.skipped: dict[Path, str] = {}
        self.run_sizes: dict[Path, tuple[int, int]] = {}  # the size each photo was run at

    def run(self, batch: list[tuple[Path, InputImage]]) -> None:
        """Predicts and writes a batch: one forward pass per photo size in it (a folder usually has one)."""
        for size in dict.fromkeys(item.photo.shape[:2] for _, item in batch):
            group = [(path, item) for path, item in batch if item.photo.shape[:2] == size]
            train_ids = self.segmenter.predict_ids(np.stack([item.photo for _, item in group]), size)  # (B, H, W)
            for (path, item), ids in zip(group, train_ids):
                if not self.written:
                    claim(self.out_dir, Path(self.config.model))
                self.written.extend(
                    _save_outputs(
                        self.out_dir, self.names[path], item.photo, ids, item.label_rgb, self.config, self.classes
                    )
                )
                self.read_as[path] = (item.read_as, item.notes)
                self.run_sizes[path] = self.segmenter.run_size(size)
        if self.progress is not None:
            self.progress.update(len(batch))

    def skip(self, path: Path, error: DataError) -> None:
        warnings.warn(f"skipped an unusable image: {error}", PspnetWarning, stacklevel=3)
        self.skipped[path] = str(error)
        if self.progress is not None:
            self.progress.update(1)

    def sizes_line(self) -> str:
        """ "ran at 128x256 (each photo fitted into 256x256 ...)": what the model saw."""
        counts = Counter(self.run_sizes.values())
        sizes = ", ".join(
            f"{height}x{width}" + (f" ({count} images)" if len(counts) > 1 else "")
            for (height, width), count in counts.items()
        )
        base = "x".join(map(str, self.segmenter.input_size))
        how = (
            f"each photo fitted into {base} keeping its aspect ratio: the scale the model was trained at"
            if self.segmenter.keep_aspect
            else f"each photo resized to {base}"
        )
        if self.segmenter.slide is not None:
            (crop_height, crop_width), (stride_height, stride_width) = self.segmenter.slide
            how += f"; {crop_height}x{crop_width} windows every {stride_height}x{stride_width}"
        if self.segmenter.scales != (1.0,):
            how += "; at scales " + ", ".join(f"{scale:g}" for scale in self.segmenter.scales) + " of it"
        return f"ran the model at {sizes} ({how})"


def _predict_all(paths: list[Path], predictions: _Predictions, config: PredictConfig) -> None:
    """Reads the inputs and predicts them batch by batch; a bad file stops after the batch before it."""
    batch, failure = [], None
    for path in paths:
        try:
            item = read_input(path, config.pairs)
        except DataError as error:
            if not config.skip_bad:
                failure = error  # predict the good images read before it, then stop
                break
            predictions.skip(path, error)
            continue
        batch.append((path, item))
        if len(batch) == config.batch_size:
            predictions.run(batch)
            batch = []
    predictions.run(batch)
    if failure is not None:
        raise failure


def predict(config: PredictConfig) -> dict[str, Any]:
    """Predicts every input image (or a video) and writes its pictures to ``config.out``.

    Images are read and written batch by batch; an unusable file stops the
    run with a ``DataError`` after the images before it are written, or is
    skipped with a warning when ``config.skip_bad``.

    Args:
        config: a ``PredictConfig``.

    Returns:
        ``{"num_images", "out", "head", "image_size" (the model's input or
        trained size), "native", "run_sizes" (each predicted input's size at
        the model), "files", "read_as", "skipped", "inputs_csv", "label_ids"
        (the labelIds folder, or None)}``: files lists every picture
        written, read_as maps each predicted input to "composite" or
        "photo", skipped lists the inputs skipped. For a video, the dict of
        ``pspnet.inference.video.predict_video`` with read_as ``{path: "video"}``.

    Raises:
        ConfigError: bad model file, batch size, head, pairs or every option,
            an output path that is a file, native on a fixed-size model, or
            label ids for a model of other than the Cityscapes classes.
        DataError: missing input, an unusable image (named, without
            skip_bad), or no usable image at all.
    """
    _check_config(config)
    if is_video(config.input):
        return _predict_video(config, Path(config.input))
    paths = list_inputs(config.input)  # check the input before the (slow) model load
    check_apart(Path(config.out), Path(config.input), paths)
    if config.every != 1 or config.colour_video:
        warnings.warn(
            "--every and --colour-video apply to videos only; ignored for images", PspnetWarning, stacklevel=2
        )
    if config.with_truth and config.pairs == "never":
        warnings.warn("--with-truth with --pairs never: panels show no truth", PspnetWarning, stacklevel=2)
    segmenter, classes = _load(config)
    progress = None
    if config.verbose:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(paths), desc="predict", unit="img", disable=None)
    predictions = _Predictions(config, segmenter, classes, output_names(paths), progress)
    try:
        _predict_all(paths, predictions, config)
    finally:
        if progress is not None:
            progress.close()
    if not predictions.read_as:
        raise DataError(
            f"none of the {len(paths)} images could be read; first: {next(iter(predictions.skipped.values()))}"
        )
    return _finish(config, paths, predictions)


def _finish(config: PredictConfig, paths: list[Path], predictions: _Predictions) -> dict[str, Any]:
    """Writes inputs.csv, prints the closing lines and returns ``predict``'s result."""
    read_as, skipped, out_dir = predictions.read_as, predictions.skipped, predictions.out_dir
    rows = [
        (str(path), read_as[path][0], "; ".join(read_as[path][1]))
        if path in read_as
        else (str(path), "skipped", skipped[path])
        for path in paths
    ]
    write_inputs_csv(out_dir / "inputs.csv", rows)
    kinds = {str(path): kind for path, (kind, _) in read_as.items()}
    if config.verbose:
        print(predictions.sizes_line())
        print(
            f"{len(paths)} image{'s' if len(paths) != 1 else ''} ({_counts(kinds, len(skipped))}): "
            f"wrote {len(predictions.written)} files and inputs.csv to {out_dir}"
        )
    return {
        "num_images": len(read_as),
        "out": str(out_dir),
        "head": predictions.segmenter.head,
        "image_size": list(predictions.segmenter.input_size),
        "native": bool(config.native),
        "run_sizes": {str(path): list(size) for path, size in predictions.run_sizes.items()},
        "files": [str(path) for path in predictions.written],
        "read_as": kinds,
        "skipped": [str(path) for path in skipped],
        "inputs_csv": str(out_dir / "inputs.csv"),
        "label_ids": str(out_dir / LABEL_IDS_FOLDER) if config.label_ids else None,
    }
