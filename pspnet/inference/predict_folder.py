"""The output folder of ``pspnet-predict``: the NAME of each input's pictures, the
model that owns the folder (``MANIFEST``), and how its files are written (whole,
or not at all: a redo cut short keeps the old picture).
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from pspnet.errors import ConfigError, DataError
from pspnet.fileio import atomic_write, temporary_name

MANIFEST = "predictions.json"  # in the output folder: {"model": the resolved model path}
PREDICTION_FILES = ("inputs.csv", "*_ids.png", "*_overlay.*", "labelIds")  # what a folder of predictions holds
CITYSCAPES_PHOTO = "_leftImg8bit"  # the end of a Cityscapes photo's stem, left out of NAME


def output_names(paths: list[Path]) -> dict[Path, str]:
    """The NAME of each input's pictures: its stem (a Cityscapes photo's without ``_leftImg8bit``),
    or, where two inputs share a stem (``1.jpg``, ``1.png``), its file name with the dot as ``_``
    (``1_jpg``), and where that is shared too (``a/1.jpg``, ``b/1.jpg``) its folder's name before it;
    one still shared (``a.jpg``, ``a.png`` and ``a_jpg.png`` of one folder) gets a number after the first."""
    stems = Counter(_stem(path) for path in paths)
    names = {path: _stem(path) if stems[_stem(path)] == 1 else path.name.replace(".", "_") for path in paths}
    shared = Counter(names.values())
    names = {path: name if shared[name] == 1 else f"{path.parent.name}_{name}" for path, name in names.items()}
    return _numbered(names)


def _numbered(names: dict[Path, str]) -> dict[Path, str]:
    """``names`` with each repeat of a name numbered (``NAME_2``, ...), never onto a name in use:
    two inputs of one name would write one set of pictures, the second over the first."""
    seen, taken, unique = set(), set(names.values()), {}
    for path, name in names.items():
        if name in seen:
            number = 2
            while f"{name}_{number}" in taken:
                number += 1
            name = f"{name}_{number}"
            taken.add(name)
        seen.add(name)
        unique[path] = name
    return unique


def _stem(path: Path) -> str:
    stem = path.stem
    return stem[: -len(CITYSCAPES_PHOTO)] if stem.endswith(CITYSCAPES_PHOTO) and stem != CITYSCAPES_PHOTO else stem


def write_png(path: Path, image: np.ndarray) -> None:
    """Writes a BGR or single-channel uint8 image as a PNG.

    Encoded, then written by Python: cv2.imwrite only answers False, where a
    failed write's OSError names its reason (read-only folder, full disk).
    Atomic: a redo cut short keeps the old picture, never a truncated one.
    """
    encoded, data = cv2.imencode(".png", image)
    if not encoded:
        raise DataError(f"cannot encode {path} as PNG")
    atomic_write(path, lambda temporary: temporary.write_bytes(data.tobytes()))


def write_rgb(path: Path, image: np.ndarray) -> None:
    write_png(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def write_figure(path: Path, figure) -> None:
    """Saves a matplotlib figure as a PNG, atomically (the temporary keeps .png: savefig's format)."""
    atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=100), suffix=".png")


def write_inputs_csv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """Writes ``inputs.csv``: file, read_as, notes (one row per input); atomically, as the pictures."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("file", "read_as", "notes"))
            writer.writerows(rows)

    atomic_write(path, write)


def check_owner(out_dir: Path, model: Path) -> None:
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
            raise ConfigError(
                f"{out_dir} holds the predictions of {owner}; choose another --out (nothing was replaced): {manifest}"
            )
        return
    if out_dir.is_dir() and any(next(out_dir.glob(pattern), None) for pattern in PREDICTION_FILES):
        raise ConfigError(
            f"{out_dir} holds predictions of an unknown model (no {MANIFEST}); choose another --out: {out_dir}"
        )


def claim(out_dir: Path, model: Path) -> None:
    """Makes the output folder and writes its ``MANIFEST`` (once): the model its pictures are of.

    Another pspnet-predict may have claimed the folder since ``_check_owner``
    (during the model load): the manifest is linked into place, never over
    another, and the owner checked again.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        temporary = temporary_name(manifest)
        temporary.write_text(json.dumps({"model": str(model.resolve())}, indent=2) + "\n")
        try:
            os.link(temporary, manifest)  # fails where one exists, unlike a rename
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: a rename, as before
            os.replace(temporary, manifest)
        finally:
            temporary.unlink(missing_ok=True)
    check_owner(out_dir, model)


def check_apart(out_dir: Path, source: Path, paths: list[Path]) -> None:
    """Refuses an output folder that an input folder is read from.

    Its pictures would replace input photos of the same names (``1_color.png``
    beside ``1.jpg``), and the next run would predict them; a folder read one
    level down (a Cityscapes split) reads a new sub-folder too. A single file's
    folder may take its pictures: only they are read.
    """
    if not source.is_dir():
        return
    read = {path.parent.resolve() for path in paths}
    out = out_dir.resolve()
    if out in read or (source.resolve() not in read and out.parent == source.resolve()):
        raise ConfigError(f"the output folder is read as input: {out_dir}; choose another --out")
