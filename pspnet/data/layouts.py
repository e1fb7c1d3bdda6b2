"""Data set layouts on disk: which photo goes with which label file, and how a label reads as train ids.

Three layouts, told apart by the folders of a root (or forced):

    pairs:      ROOT/{train,val}/*.jpg, photo|label composites (the Kaggle pairs); the Cityscapes classes
    cityscapes: ROOT/leftImg8bit/{train,val,test}/CITY/*_leftImg8bit.png and
                ROOT/gtFine/{train,val,test}/CITY/*_gtFine_labelIds.png (official label ids, mapped to the 19
                train ids); *_gtFine_labelTrainIds.png is read instead where present; the Cityscapes classes
    folders:    ROOT/images/SPLIT/NAME.(jpg|jpeg|png) and ROOT/masks/SPLIT/NAME.png, classes in ROOT/dataset.json;
                masks hold class indices (values below the class count, or the ignore index) or the classes'
                colours, exactly (no ignore colour: a colour not in dataset.json is an error)

Every reader returns train ids as uint8 with 255 = ignore, whatever the data
set's own ignore index. Example::

    split = open_split("cityscapes", "val")   # detected: leftImg8bit/ and gtFine/
    photo, ids = split.read(0)                # (1024, 2048, 3) uint8 RGB, (1024, 2048) uint8
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pspnet.data.classes import CITYSCAPES, DATASET_JSON, ClassTable, read_dataset_json
from pspnet.data.files import IMAGE_SUFFIXES, natural_key, read_mask, read_photo, read_stored_photo
from pspnet.errors import ConfigError, DataError
from pspnet.palette import IGNORE_INDEX, NUM_CLASSES, label_id_to_train_id

__all__ = ["LAYOUTS", "Sample", "Split", "detect_layout", "label_lut", "open_split", "resolve_split"]

LAYOUTS = ("pairs", "cityscapes", "folders")
PHOTO_SUFFIX = "_leftImg8bit.png"  # cityscapes photo files end with it
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
_MAX_LABEL_ID = 33  # the official ids run 0-33 (license plate, -1, is stored as 255)
_LAYOUT_FLAGS = {"layout=": "--layout ", "split=": "--split "}


@dataclass(frozen=True)
class Sample:
    """One photo and its label file."""

    name: str  # output stem (cityscapes: the frame, CITY_SEQ_FRAME, without _leftImg8bit)
    image: Path  # the photo (pairs: the composite)
    label: Path | None  # the mask or gtFine file; None for pairs (inside the composite) and unlabelled splits


def label_lut(kind: str, classes: ClassTable) -> tuple[np.ndarray, np.ndarray]:
    """How one kind of label file reads as train ids.

    Args:
        kind: "labelIds", "labelTrainIds" (cityscapes) or "indices" (folders masks).
        classes: the data set's table (its ignore index for "indices").

    Returns:
        ``(table, valid)``: (256,) uint8 stored value -> train id, and (256,)
        bool, the values a file may hold.
    """
    valid = np.zeros(256, bool)
    if kind == "labelIds":
        valid[: _MAX_LABEL_ID + 1] = valid[255] = True
        return label_id_to_train_id(), valid
    table = np.full(256, IGNORE_INDEX, np.uint8)
    count = NUM_CLASSES if kind == "labelTrainIds" else classes.num_classes
    table[:count] = np.arange(count, dtype=np.uint8)
    valid[:count] = True
    valid[IGNORE_INDEX if kind == "labelTrainIds" else classes.ignore_index] = True
    return table, valid


def _value_problem(values: np.ndarray, valid: np.ndarray, kind: str, classes: ClassTable) -> str | None:
    """What is wrong with the values (bincount (256,) or unique values) of a label file, or None."""
    present = np.flatnonzero(values) if len(values) == 256 else values
    bad = [int(v) for v in present if not valid[v]]
    if not bad:
        return None
    shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
    if kind == "labelIds":
        return f"values {shown} are not Cityscapes label ids (0-{_MAX_LABEL_ID})"
    top = NUM_CLASSES - 1 if kind == "labelTrainIds" else classes.num_classes - 1
    ignore = IGNORE_INDEX if kind == "labelTrainIds" else classes.ignore_index
    return f"mask values {shown} are neither a class (0-{top}) nor the ignore index {ignore}"


def _colors_to_ids(mask: np.ndarray, classes: ClassTable, path: Path) -> np.ndarray:
    """An RGB mask -> class indices by the exact colours of the table; any other colour is an error."""
    codes = np.asarray(classes.colors, np.int64) @ np.array([1 << 16, 1 << 8, 1])  # (K,)
    order = np.argsort(codes)
    pixels = mask[..., 0].astype(np.int64) << 16 | mask[..., 1].astype(np.int64) << 8 | mask[..., 2]
    found = np.clip(np.searchsorted(codes[order], pixels), 0, len(codes) - 1)
    known = codes[order][found] == pixels
    if not known.all():
        y, x = np.argwhere(~known)[0]
        color = [int(v) for v in mask[y, x]]
        hint = " (an index mask saved as RGB?)" if color[0] == color[1] == color[2] else ""
        raise DataError(
            f"mask colour {color} (at x={x}, y={y}) is not a class colour of {DATASET_JSON}, "
            f"which has no ignore colour{hint}: {path}"
        )
    return order[found].astype(np.uint8)


def read_label_file(path: Path, kind: str, classes: ClassTable) -> np.ndarray:
    """One label file -> uint8 (H, W) train ids (255 ignore), its values checked.

    Raises:
        DataError: an unreadable file, a colour mask where indices are
            expected (cityscapes), a value neither a class nor the ignore
            index, or a colour not in the table; the message names the file.
    """
    mask = read_mask(path)
    if mask.ndim == 3:
        if kind != "indices":
            raise DataError(
                f"colour image where a single-channel {kind} file is expected "
                f"(the *_gtFine_color.png files are not read): {path}"
            )
        return _colors_to_ids(mask, classes, path)
    table, valid = label_lut(kind, classes)
    problem = _value_problem(np.bincount(mask.ravel(), minlength=256), valid, kind, classes)
    if problem:
        raise DataError(f"{problem}: {path}")
    return table[mask]


def label_kind(layout: str, label: Path) -> str:
    """The kind of a label file: "labelIds", "labelTrainIds" or "indices"."""
    if layout == "folders":
        return "indices"
    return "labelTrainIds" if label.name.endswith(TRAIN_IDS_SUFFIX) else "labelIds"


@dataclass
class Split:
    """The samples of one split of a data set, and how to read them."""

    root: Path
    name: str  # "train", "val", "test" (pairs: the folder's name)
    layout: str  # one of LAYOUTS
    classes: ClassTable
    samples: list[Sample]
    folder: Path  # where the photos are (pairs: ROOT/val; cityscapes: ROOT/leftImg8bit/val; folders: ROOT/images/val)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labelled(self) -> bool:
        return self.layout == "pairs" or all(sample.label is not None for sample in self.samples)

    def read_photo(self, index: int) -> np.ndarray:
        """uint8 (H, W, 3) RGB."""
        sample = self.samples[index]
        if self.layout == "pairs":
            from pspnet.data.composites import read_pair

            return read_pair(sample.image)[0]
        return read_photo(sample.image) if self.layout == "cityscapes" else read_stored_photo(sample.image)

    def read_label(self, index: int) -> np.ndarray:
        """uint8 (H, W) train ids, 255 ignore. Raises DataError for an unlabelled sample or a bad file."""
        sample = self.samples[index]
        if self.layout == "pairs":
            return self.read(index)[1]
        if sample.label is None:
            raise DataError(f"no label for {sample.image} (an unlabelled split)")
        return read_label_file(sample.label, label_kind(self.layout, sample.label), self.classes)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(photo, train_ids) of one sample, their sizes checked."""
        sample = self.samples[index]
        if self.layout == "pairs":
            from pspnet.data.composites import read_pair
            from pspnet.data.labels import decode_labels

            photo, label = read_pair(sample.image)
            return photo, decode_labels(label)
        photo, ids = self.read_photo(index), self.read_label(index)
        if photo.shape[:2] != ids.shape:
            raise DataError(
                f"mask is {ids.shape[1]}x{ids.shape[0]} but its image {sample.image.name} is "
                f"{photo.shape[1]}x{photo.shape[0]}: {sample.label}"
            )
        return photo, ids


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")


def _has_images(folder: Path) -> bool:
    return any(
        entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES for entry in os.scandir(folder)
    )


def detect_layout(root: str | os.PathLike) -> str:
    """The layout of a data set root, from its folders.

    Raises:
        DataError: the root is missing, or holds none of leftImg8bit/
            (cityscapes), images/ or dataset.json (folders), train/ or val/
            of composites (pairs); the message names what was looked for.
    """
    root = Path(root)
    _check_root(root)
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if (root / "images").is_dir() or (root / DATASET_JSON).is_file() or (root / "masks").is_dir():
        return "folders"
    if any((root / name).is_dir() and _has_images(root / name) for name in ("train", "val")):
        return "pairs"
    found = " (it has gtFine/ but no leftImg8bit/)" if (root / "gtFine").is_dir() else ""
    raise DataError(
        f"cannot tell the layout of {root}{found}: no leftImg8bit/ (cityscapes), no images/ or "
        f"{DATASET_JSON} (folders), no train/ or val/ of composites (pairs); pass "
        f"layout=pairs|cityscapes|folders",
        flags=_LAYOUT_FLAGS,
    )


def _split_folder(folder: Path, split: str) -> Path:
    if not folder.is_dir():
        raise DataError(f"no {split} split: {folder} " + ("is not a folder" if folder.exists() else "not found"))
    return folder


def _pairs_split(root: Path, split: str) -> Split:
    from pspnet.data.files import list_images

    folder = _split_folder(root / split, split)
    samples = [Sample(path.stem, path, None) for path in list_images(folder)]
    return Split(root, split, "pairs", CITYSCAPES, samples, folder)


def _cityscapes_split(root: Path, split: str) -> Split:
    folder = _split_folder(root / "leftImg8bit" / split, split)
    labels = root / "gtFine" / split
    if not labels.is_dir() and split != "test":
        missing = root / "gtFine" if not (root / "gtFine").is_dir() else labels
        raise DataError(
            f"cityscapes root without its labels: {missing} not found (labels go in "
            f"gtFine/{split}/CITY/*{LABEL_IDS_SUFFIX}, beside leftImg8bit/)"
        )
    photos = sorted(folder.rglob(f"*{PHOTO_SUFFIX}"), key=lambda path: natural_key(str(path.relative_to(folder))))
    if not photos:
        raise DataError(f"no *{PHOTO_SUFFIX} photos in {folder} (the layout is leftImg8bit/{split}/CITY/)")
    samples = []
    for photo in photos:
        stem = photo.name[: -len(PHOTO_SUFFIX)]
        label = None
        if labels.is_dir():
            base = labels / photo.parent.relative_to(folder) / stem
            label = Path(f"{base}{TRAIN_IDS_SUFFIX}")
            if not label.is_file():
                label = Path(f"{base}{LABEL_IDS_SUFFIX}")
            if not label.is_file():
                raise DataError(
                    f"image without its mask: no {label.name} (or {TRAIN_IDS_SUFFIX[1:]}) in {label.parent} for {photo}"
                )
        samples.append(Sample(stem, photo, label))
    if labels.is_dir():
        _orphan_labels(labels, folder, {sample.label for sample in samples})
    return Split(root, split, "cityscapes", CITYSCAPES, samples, folder)


def _orphan_labels(labels: Path, folder: Path, used: set) -> None:
    """A gtFine label file with no photo is an error (a frame deleted from leftImg8bit, or misnamed)."""
    for suffix in (LABEL_IDS_SUFFIX, TRAIN_IDS_SUFFIX):
        for label in sorted(labels.rglob(f"*{suffix}")):
            photo = folder / label.parent.relative_to(labels) / (label.name[: -len(suffix)] + PHOTO_SUFFIX)
            if label not in used and not photo.is_file():
                raise DataError(f"mask without its image: no {photo.name} in {photo.parent} for {label}")


def _stems(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """NAME -> file of a folder's images with the given suffixes; two files of one NAME are an error."""
    found: dict[str, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda entry: natural_key(entry.name)):
        stem, suffix = os.path.splitext(entry.name)
        if not entry.is_file() or suffix.lower() not in suffixes:
            continue
        if stem in found:
            raise DataError(f"two {what} named {stem!r} ({found[stem].name}, {entry.name}): {folder}")
        found[stem] = Path(entry.path)
    return found


def _folders_split(root: Path, split: str) -> Split:
    classes = read_dataset_json(root / DATASET_JSON)
    folder = _split_folder(root / "images" / split, split)
    photos = _stems(folder, IMAGE_SUFFIXES, "images")
    masks_folder = root / "masks" / split
    masks = _stems(masks_folder, (".png",), "masks") if masks_folder.is_dir() else {}
    for name, mask in masks.items():
        if name not in photos:
            raise DataError(f"mask without its image: no {name}.jpg/.jpeg/.png in {folder} for {mask}")
    if not photos:
        raise DataError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
    if not masks_folder.is_dir():
        if split == "test":
            return Split(root, split, "folders", classes, [Sample(n, p, None) for n, p in photos.items()], folder)
        raise DataError(
            f"no masks folder {masks_folder} for the images in {folder} (masks go in masks/{split}/NAME.png)"
        )
    for name, photo in photos.items():
        if name not in masks:
            raise DataError(f"image without its mask: no {name}.png in {masks_folder} for {photo}")
    samples = [Sample(name, photo, masks[name]) for name, photo in photos.items()]
    return Split(root, split, "folders", classes, samples, folder)


def _check_layout(layout: str | None) -> None:
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"layout={layout!r} must be one of {', '.join(LAYOUTS)}", flags=_LAYOUT_FLAGS)


def open_split(root: str | os.PathLike, split: str = "val", layout: str | None = None) -> Split:
    """Lists and pairs the files of one split of a data set root.

    Args:
        root: the data set root (pairs: the folder holding train/ and val/).
        split: "train", "val" or "test" (unlabelled test splits are allowed).
        layout: one of ``LAYOUTS``; None: ``detect_layout(root)``.

    Returns:
        A ``Split``; nothing is decoded (``pspnet.data.samples.scan_split`` checks every file).

    Raises:
        DataError: one line naming the file and the problem: a missing split,
            an image without its mask or a mask without its image, a missing
            gtFine/, a missing or bad dataset.json, a layout that cannot be told.
        ConfigError: an unknown layout.
    """
    _check_layout(layout)
    root = Path(root)
    _check_root(root)
    layout = layout or detect_layout(root)
    opener = {"pairs": _pairs_split, "cityscapes": _cityscapes_split, "folders": _folders_split}[layout]
    return opener(root, str(split))


def resolve_split(path: str | os.PathLike, split: str = "val", layout: str | None = None) -> Split:
    """The split a ``--data`` argument names.

    Args:
        path: a data set root of any layout; for pairs also a folder of
            composites (ROOT/val) as before; "demo": the demo set.
        split: the split of a root.
        layout: one of ``LAYOUTS``; None: detected.

    Returns:
        A ``Split``.
    """
    _check_layout(layout)
    if str(path) == "demo":
        from pspnet.data.synth import demo_data

        return open_split(demo_data(), split, "pairs")
    path = Path(path)
    _check_root(path)
    if layout in (None, "pairs") and _has_images(path):
        from pspnet.data.files import list_images

        samples = [Sample(image.stem, image, None) for image in list_images(path)]
        return Split(path.parent, path.name, "pairs", CITYSCAPES, samples, path)
    return open_split(path, split, layout)
