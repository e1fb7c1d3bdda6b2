"""Synthetic sets in the official Cityscapes layout and in the image/mask folders layout.

The scenes are those of ``pspnet.data.synth_scene`` (drawn square, then resized to
the frame's height and width: photos by area, labels by nearest neighbour),
written as the layouts' own files:

    cityscapes: ROOT/leftImg8bit/{train,val,test}/CITY/CITY_000000_0000NN_leftImg8bit.png
                ROOT/gtFine/{train,val}/CITY/CITY_000000_0000NN_gtFine_labelIds.png (official label ids)
                (and ..._gtFine_labelTrainIds.png with ``train_ids_files``)
    folders:    ROOT/images/{train,val}/scene_NNN.jpg, ROOT/masks/{train,val}/scene_NNN.png,
                ROOT/dataset.json (the five classes of ``FOLDERS_CLASSES``)

Example::

    write_cityscapes("synth_cs", train=8, val=4, height=64, width=128)
    write_folders("synth_folders", train=8, val=4, height=48, width=80, rgb_masks=True)
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from pspnet.data.classes import DATASET_JSON, ClassTable
from pspnet.data.synth_jpeg import JPEG_QUALITY
from pspnet.data.synth_scene import render_scene
from pspnet.errors import ConfigError, DataError
from pspnet.palette import IGNORE_INDEX, train_id_to_label_id

__all__ = ["FOLDERS_CLASSES", "FOLDERS_GROUPS", "render_frame", "write_cityscapes", "write_folders", "write_layout"]

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_LAYOUT_CODES = {"cityscapes": 10, "folders": 20}  # the layouts draw other scenes than the pairs

# The folders set's own five classes, and the Cityscapes train ids of the scenes each one gathers.
FOLDERS_CLASSES = ClassTable(
    ("ground", "structure", "plant", "sky", "mover"),
    ((90, 90, 90), (200, 120, 40), (40, 170, 60), (110, 170, 240), (230, 40, 120)),
    IGNORE_INDEX,
)
FOLDERS_GROUPS = {
    "ground": (0, 1),  # road, sidewalk
    "structure": (2, 5, 6, 7),  # building, pole, traffic light, traffic sign
    "plant": (8, 9),  # vegetation, terrain
    "sky": (10,),
    "mover": (11, 13),  # person, car
}


def render_frame(seed, height: int, width: int, thickness: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scene at any frame size.

    Args:
        seed: an int or a sequence of ints.
        height, width: the frame's size in pixels (8 or more).
        thickness: as ``pspnet.data.synth.render_scene``.

    Returns:
        ``(photo, train_ids)``: uint8 (height, width, 3) RGB and uint8
        (height, width) Cityscapes train ids (255 void).
    """
    height, width = int(height), int(width)
    if height < 8 or width < 8:
        raise ConfigError(f"frame size must be at least 8x8 pixels, got {height}x{width}")
    side = -(-max(height, width) // 8) * 8  # the square scene, a multiple of 8, that covers the frame
    photo, _, train_ids = render_scene(seed, side, thickness)
    photo = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
    train_ids = cv2.resize(train_ids, (width, height), interpolation=cv2.INTER_NEAREST)
    return photo, train_ids


def _folders_lut(ignore_index: int, void_class: str | None) -> np.ndarray:
    """(256,) uint8: Cityscapes train id -> folders class index; void -> ignore_index (or void_class)."""
    table = np.full(256, ignore_index, np.uint8)
    if void_class is not None:
        table[:] = FOLDERS_CLASSES.names.index(void_class)
    for index, name in enumerate(FOLDERS_CLASSES.names):
        table[list(FOLDERS_GROUPS[name])] = index
    return table


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise DataError(f"cannot write {path}")


def _write_photo(path: Path, photo: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if path.suffix == ".jpg" else []
    if not cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), params):
        raise DataError(f"cannot write {path}")


def _check_counts(**counts) -> None:
    for name, count in counts.items():
        if int(count) < 0:
            raise ConfigError(f"{name}={count} must be 0 or more")


def _each(jobs: list, work, workers: int | None) -> None:
    """Runs ``work(job)`` for every job in threads (cv2 releases the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, int(workers or os.cpu_count() or 1))) as pool:
        for _ in pool.map(work, jobs):
            pass


def write_cityscapes(
    root: str | os.PathLike,
    train: int = 4,
    val: int = 2,
    test: int = 0,
    seed: int = 0,
    height: int = 64,
    width: int = 128,
    cities: tuple[str, ...] = ("aachen", "bochum"),
    train_ids_files: bool = False,
    thickness: float = 1.0,
    workers: int | None = None,
) -> Path:
    """Writes a synthetic set in the official Cityscapes layout (files straight into ``root``).

    Frames are dealt to the cities in turn; frame ``n`` of a split depends only
    on (seed, split, n) and the frame size.

    Args:
        root: the data set root (created).
        train, val, test: frames per split (test frames get no gtFine file).
        seed: random seed.
        height, width: frame size in pixels.
        cities: the city folders.
        train_ids_files: also write ``*_gtFine_labelTrainIds.png``.
        thickness: as ``render_frame``.
        workers: drawing threads (default: the CPU count).

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    _check_counts(train=train, val=val, test=test)
    to_label_id = train_id_to_label_id()

    def one(job: tuple[str, int]) -> None:
        split, number = job
        city = cities[(number - 1) % len(cities)]
        stem = f"{city}_000000_{number:06d}"
        photo, train_ids = render_frame(
            [int(seed), _LAYOUT_CODES["cityscapes"], _SPLIT_CODES[split], number], height, width, thickness
        )
        _write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", photo)
        if split == "test":
            return
        labels = root / "gtFine" / split / city
        _write_png(labels / f"{stem}_gtFine_labelIds.png", to_label_id[train_ids])
        if train_ids_files:
            _write_png(labels / f"{stem}_gtFine_labelTrainIds.png", train_ids)

    jobs = [
        (split, number)
        for split, count in (("train", train), ("val", val), ("test", test))
        for number in range(1, int(count) + 1)
    ]
    _each(jobs, one, workers)
    return root


def write_folders(
    root: str | os.PathLike,
    train: int = 4,
    val: int = 2,
    seed: int = 0,
    height: int = 48,
    width: int = 80,
    rgb_masks: bool = False,
    ignore_index: int = IGNORE_INDEX,
    suffix: str = ".jpg",
    thickness: float = 1.0,
    workers: int | None = None,
) -> Path:
    """Writes a synthetic set in the image/mask folders layout with five classes of its own.

    Args:
        root: the data set root (created).
        train, val: images per split.
        seed: random seed.
        height, width: image size in pixels.
        rgb_masks: write masks in the classes' colours; there is no ignore
            colour (a colour not in dataset.json is an error), so void pixels
            (the ego-vehicle bonnet) become "mover".
        ignore_index: the mask value of void pixels in index masks (from 5 to
            255), written as dataset.json's ``ignore_index``.
        suffix: ".jpg" or ".png" photos.
        thickness: as ``render_frame``.
        workers: drawing threads (default: the CPU count).

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    _check_counts(train=train, val=val)
    if suffix not in (".jpg", ".png"):
        raise ConfigError(f"suffix must be .jpg or .png, got {suffix!r}")
    table = ClassTable(FOLDERS_CLASSES.names, FOLDERS_CLASSES.colors, int(ignore_index))
    lut = _folders_lut(table.ignore_index, "mover" if rgb_masks else None)
    palette = table.palette()

    def one(job: tuple[str, int]) -> None:
        split, number = job
        photo, train_ids = render_frame(
            [int(seed), _LAYOUT_CODES["folders"], _SPLIT_CODES[split], number], height, width, thickness
        )
        _write_photo(root / "images" / split / f"scene_{number:03d}{suffix}", photo)
        mask = lut[train_ids]
        _write_png(root / "masks" / split / f"scene_{number:03d}.png", palette[mask] if rgb_masks else mask)

    root.mkdir(parents=True, exist_ok=True)
    (root / DATASET_JSON).write_text(json.dumps(table.to_json(), indent=2) + "\n")
    _each(
        [(split, n) for split, count in (("train", train), ("val", val)) for n in range(1, int(count) + 1)],
        one,
        workers,
    )
    return root


_LAYOUT_FOLDERS = {"cityscapes": ("leftImg8bit", "gtFine"), "folders": ("images", "masks", DATASET_JSON)}


def write_layout(
    out: str | os.PathLike,
    layout: str,
    train: int = 200,
    val: int = 40,
    seed: int = 0,
    size: int = 256,
    overwrite: bool = False,
    thickness: float = 1.0,
    workers: int | None = None,
) -> tuple[Path, tuple[int, int]]:
    """Writes a synthetic set in ``layout`` ("cityscapes" or "folders") for ``pspnet-data synth``.

    Frames are ``size`` high: cityscapes frames twice as wide (the official
    1:2), folders images 5/3 as wide. The set is written into a temporary
    sibling and moved into place when complete.

    Returns:
        ``(out, (height, width))``.

    Raises:
        DataError: ``out`` is a file, or already holds the layout's folders (without ``overwrite``).
    """
    if layout not in _LAYOUT_FOLDERS:
        raise ConfigError(f"layout={layout!r} must be one of cityscapes, folders (or pairs)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"not a folder: {out}")
    existing = [out / name for name in _LAYOUT_FOLDERS[layout] if (out / name).exists()]
    if existing and not overwrite:
        raise DataError(
            f"{existing[0]} already exists; pass overwrite=True or choose another folder",
            flags={"overwrite=True": "--overwrite"},
        )
    height, width = int(size), int(size) * 2 if layout == "cityscapes" else int(size) * 5 // 3
    from pspnet.fileio import temporary_name

    out.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(out / layout)
    try:
        if layout == "cityscapes":
            write_cityscapes(
                temporary, train, val, seed=seed, height=height, width=width, thickness=thickness, workers=workers
            )
        else:
            write_folders(
                temporary, train, val, seed=seed, height=height, width=width, thickness=thickness, workers=workers
            )
        for name in _LAYOUT_FOLDERS[layout]:
            if (out / name).exists():
                shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
            if (temporary / name).exists():
                os.rename(temporary / name, out / name)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return out, (height, width)
