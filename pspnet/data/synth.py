"""Synthetic data sets in exactly the real on-disk format, for the demo and the tests.

Each file is a (size, 2*size) JPEG composite like the Kaggle Cityscapes pairs:
a photo-like street scene on the left, its palette-coloured label on the right
(``synth_scene`` draws the scenes, ``synth_jpeg`` encodes and checks each
file). This module writes them as a pairs set (``write_synthetic_set``,
``write_pairs``) and keeps the demo set in the cache (``ensure_demo_set``,
``demo_data``).

Classes drawn: road (with lane marks), sidewalk, building (with windows),
vegetation (trees, hedges), terrain, sky (with clouds), pole, traffic sign,
traffic light, car, person, and void (an ego-vehicle bonnet, sometimes).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pspnet.data.synth_jpeg import JPEG_QUALITY, composite_jpeg
from pspnet.data.synth_parts import SYNTH_CLASSES
from pspnet.data.synth_scene import check_size, check_thickness, make_composite, render_scene
from pspnet.errors import ConfigError, DataError
from pspnet.fileio import TEMPORARY_MARK, temporary_name

__all__ = [
    "DEMO_SIZE",
    "DEMO_THICKNESS",
    "DEMO_TRAIN",
    "DEMO_VAL",
    "JPEG_QUALITY",
    "SYNTH_CLASSES",
    "SYNTH_VERSION",
    "demo_data",
    "ensure_demo_set",
    "make_composite",
    "render_scene",
    "write_pairs",
    "write_synthetic_set",
]

SYNTH_VERSION = 2  # bump when scenes change: demo folders are keyed by it

# The demo set (``pspnet-train --data demo``): small enough to train on a
# 2-core CPU in minutes. At 64 px a pole in street proportions is a pixel or
# two wide, below what the network's 1/4-resolution features resolve, so the
# demo draws poles, persons and grass strips twice as wide.
DEMO_TRAIN = 1440  # training pairs
DEMO_VAL = 100  # validation pairs
DEMO_SIZE = 64  # side in pixels (pairs are DEMO_SIZE x 2*DEMO_SIZE)
DEMO_THICKNESS = 2.0  # width factor of poles, persons and grass strips

_SPLIT_CODES = {"train": 0, "val": 1}


def write_pairs(
    folder: str | os.PathLike, count: int, seed: int = 0, size: int = 256, split: str = "train", thickness: float = 1.0
) -> Path:
    """Writes ``count`` composites 1.jpg..count.jpg straight into ``folder`` (created).

    The same files as ``write_synthetic_set`` writes for that split, seed and
    thickness, without its temporary folder; for tests and quick experiments.

    Args:
        folder: the split folder.
        count: number of composites.
        seed: random seed.
        size: side of each half in pixels.
        split: "train" or "val" (part of each image's seed).
        thickness: as ``write_synthetic_set``.

    Returns:
        ``folder`` as a Path.
    """
    folder = Path(folder)
    size, thickness = check_size(size), check_thickness(thickness)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(1, int(count) + 1):
        data = composite_jpeg([int(seed), _SPLIT_CODES[split], number], size, thickness)
        (folder / f"{number}.jpg").write_bytes(data)
    return folder


def _write_split(
    folder: Path, count: int, split: str, seed: int, size: int, workers: int, progress: bool, thickness: float = 1.0
) -> Path:
    """Writes count composites 1.jpg..count.jpg into a temporary sibling of folder; returns it.

    The caller renames it into place (``_put_in_place``), or removes it.
    """
    temporary = temporary_name(folder)
    temporary.mkdir(parents=True)
    try:

        def one(number: int) -> None:
            data = composite_jpeg([seed, _SPLIT_CODES[split], number], size, thickness)
            (temporary / f"{number}.jpg").write_bytes(data)

        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max_workers=workers) as pool:
            jobs = pool.map(one, range(1, count + 1))
            bar = tqdm(
                jobs, total=count, desc=f"synth {split}", unit="img", disable=None if progress else True, leave=False
            )
            for _ in bar:
                pass
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return temporary


def _put_in_place(temporary: Path, folder: Path) -> None:
    """Replaces folder (if any) by the finished temporary folder."""
    if folder.exists():
        shutil.rmtree(folder)
    os.rename(temporary, folder)


def write_synthetic_set(
    out_dir: str | os.PathLike,
    train: int = 200,
    val: int = 40,
    seed: int = 0,
    size: int = 256,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = False,
    thickness: float = 1.0,
) -> Path:
    """Writes a synthetic data set in the real format: out_dir/train/1.jpg.., out_dir/val/1.jpg..

    Both splits are written into temporary folders and renamed into place when
    both are complete, so a failure leaves an existing set whole. Image ``n``
    of a split depends only on (seed, split, n) and size.

    Args:
        out_dir: the data folder to create.
        train: number of training composites.
        val: number of validation composites.
        seed: random seed.
        size: side of each half in pixels (composites are size x 2*size).
        thickness: width factor of poles, persons and grass strips (``render_scene``); the
            demo draws them thicker so that they stay visible at 64 px.
        overwrite: replace existing train/ and val/ folders.
        workers: drawing threads (default: the CPU count).
        progress: show a progress bar.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ConfigError: a negative count or too small a size.
        DataError: train/ or val/ already holds files (without ``overwrite``),
            or out_dir is a file.
    """
    out_dir = Path(out_dir)
    thickness = _check_set_arguments(out_dir, train, val, seed, size, thickness, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, int(workers or os.cpu_count() or 1))
    counts = {"train": int(train), "val": int(val)}
    _write_splits(out_dir, counts, int(seed), int(size), workers, progress, thickness)
    info = {
        "synth_version": SYNTH_VERSION,
        "train": int(train),
        "val": int(val),
        "seed": int(seed),
        "size": int(size),
        "thickness": thickness,
        "jpeg_quality": JPEG_QUALITY,
        "classes": list(SYNTH_CLASSES),
    }
    (out_dir / "synth.json").write_text(json.dumps(info, indent=2) + "\n")
    return out_dir


def _check_set_arguments(out_dir: Path, train, val, seed, size, thickness, overwrite: bool) -> float:
    """Raises on arguments ``write_synthetic_set`` cannot write; returns the thickness as a float."""
    if int(train) < 0 or int(val) < 0:
        raise ConfigError(f"image counts must not be negative, got train={train}, val={val}")
    if int(seed) < 0:  # NumPy's seed sequences take no negative entries
        raise ConfigError(f"seed={seed} must be 0 or more", flags={f"seed={seed}": f"--seed {seed}"})
    check_size(size)
    thickness = check_thickness(thickness)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"not a folder: {out_dir}")
    for split in ("train", "val"):
        folder = out_dir / split
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise DataError(
                f"{folder} already holds files; pass overwrite=True or choose another folder",
                flags={"overwrite=True": "--overwrite"},
            )
    return thickness


def _write_splits(
    out_dir: Path, counts: dict[str, int], seed: int, size: int, workers: int, progress: bool, thickness: float
) -> None:
    """Writes every split of counts into out_dir, all drawn before any replaces its folder."""
    # Both splits are drawn before either replaces anything: a failure leaves the old set whole.
    written: list[tuple[Path, Path]] = []
    try:
        for split, count in counts.items():
            temporary = _write_split(out_dir / split, count, split, seed, size, workers, progress, thickness)
            written.append((temporary, out_dir / split))
        for temporary, folder in written:
            _put_in_place(temporary, folder)
    except BaseException:
        for temporary, _ in written:
            shutil.rmtree(temporary, ignore_errors=True)
        raise


def ensure_demo_set(
    root: str | os.PathLike | None = None,
    train: int = 200,
    val: int = 40,
    seed: int = 0,
    size: int = 256,
    thickness: float = 1.0,
) -> Path:
    """The demo data set, written once and then reused.

    Lives in ``root/demo-v<version>-s<size>-n<train>-<val>-seed<seed>`` (root:
    ``$PSPNET_CACHE`` or ``~/.cache/pspnet``). Written into a temporary folder
    and renamed when complete, so an interrupted run leaves nothing that a
    later call would trust.

    Args:
        root: the cache folder.
        train, val, seed, size, thickness: as ``write_synthetic_set``.

    Returns:
        The folder holding train/ and val/.
    """
    from pspnet.fileio import default_cache_dir

    root = Path(root) if root is not None else default_cache_dir()
    name = f"demo-v{SYNTH_VERSION}-s{int(size)}-n{int(train)}-{int(val)}-seed{int(seed)}"
    if check_thickness(thickness) != 1.0:
        name += f"-t{thickness:g}"
    folder = root / name
    if (folder / "synth.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(folder)
    try:
        write_synthetic_set(temporary, train=train, val=val, seed=seed, size=size, thickness=thickness)
        if folder.exists():  # incomplete leftovers (no synth.json) or a finished twin
            if (folder / "synth.json").is_file():
                shutil.rmtree(temporary, ignore_errors=True)
                return folder
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(temporary, folder)
        except OSError:
            if not (folder / "synth.json").is_file():
                raise
            shutil.rmtree(temporary, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    # Temporary folders of runs killed outright are removed after an hour.
    now = time.time()
    for stale in root.glob(f".demo-*{TEMPORARY_MARK}*"):
        try:
            if now - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    return folder


def demo_data() -> Path:
    """Writes the demo's synthetic set once (in the cache) and returns its folder.

    Returns:
        The folder holding train/ and val/ that ``--data demo`` trains on.
    """
    return Path(ensure_demo_set(train=DEMO_TRAIN, val=DEMO_VAL, seed=0, size=DEMO_SIZE, thickness=DEMO_THICKNESS))
