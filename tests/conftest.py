"""Shared test helpers: tiny folders of synthetic pairs in the real on-disk format.

``make_pairs(folder, n, size=32, seed=0)`` writes n composites (size x 2*size
JPEGs) with ``pspnet.data.synth``; the ``tiny_pairs`` fixture gives a data folder
with train/ (4 pairs) and val/ (2 pairs). Every test session keeps its caches
(decoded splits, demo sets) in a temporary $PSPNET_CACHE, never in ~/.cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "cityscapes_data"


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports on 127.0.0.1 that were free a moment ago (for worker processes)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


class BatchRecorder:
    """A Keras-model stand-in that predicts zeros of 19 classes and records the batch of every forward pass."""

    input_shape = (None, None, None, 3)

    def __init__(self):
        self.batches = []

    def predict_on_batch(self, photos):
        import numpy as np

        self.batches.append(len(photos))
        return np.zeros((len(photos), *photos.shape[1:3], 19), np.float32)


def make_pairs(folder, n: int, size: int = 32, seed: int = 0, split: str = "train") -> Path:
    """Writes n synthetic composites 1.jpg..n.jpg of size x 2*size into folder.

    Args:
        folder: the folder to fill (created).
        n: number of pairs.
        size: side of each half in pixels (a multiple of 8).
        seed: random seed; the same (seed, split, n) gives the same files.
        split: "train" or "val" (part of each image's seed).

    Returns:
        The folder as a Path.
    """
    from pspnet.data.synth import write_pairs

    return write_pairs(folder, n, seed=seed, size=size, split=split)


def make_cityscapes(
    root,
    train: int = 2,
    val: int = 2,
    test: int = 0,
    height: int = 64,
    width: int = 128,
    seed: int = 0,
    train_ids_files: bool = False,
    cities=("aachen", "bochum"),
) -> Path:
    """Writes a tiny synthetic set in the official layout (leftImg8bit/ + gtFine/ labelIds) under root.

    Frames are height x width PNGs dealt to ``cities`` in turn
    (``aachen_000000_000001_leftImg8bit.png``, ...); ``train_ids_files`` adds
    ``*_gtFine_labelTrainIds.png``; test frames get no gtFine file.

    Returns:
        root as a Path.
    """
    from pspnet.data.synth_layouts import write_cityscapes

    return write_cityscapes(
        root,
        train,
        val,
        test,
        seed=seed,
        height=height,
        width=width,
        cities=tuple(cities),
        train_ids_files=train_ids_files,
        workers=1,
    )


def make_folders(
    root,
    train: int = 3,
    val: int = 2,
    height: int = 48,
    width: int = 80,
    seed: int = 0,
    rgb_masks: bool = False,
    ignore_index: int = 255,
    suffix: str = ".jpg",
) -> Path:
    """Writes a tiny synthetic set in the folders layout under root: 5 classes of its own (dataset.json).

    ``images/{train,val}/scene_NNN.jpg`` (or .png), ``masks/{train,val}/scene_NNN.png``
    (single-channel indices, void = ignore_index; or colour masks with
    ``rgb_masks``), and ``dataset.json`` (``pspnet.data.synth_layouts.FOLDERS_CLASSES``).

    Returns:
        root as a Path.
    """
    from pspnet.data.synth_layouts import write_folders

    return write_folders(
        root,
        train,
        val,
        seed=seed,
        height=height,
        width=width,
        rgb_masks=rgb_masks,
        ignore_index=ignore_index,
        suffix=suffix,
        workers=1,
    )


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Points $PSPNET_CACHE at a temporary folder for the whole session."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PSPNET_CACHE", str(tmp_path_factory.mktemp("pspnet-cache")))
        yield


@pytest.fixture
def tiny_pairs(tmp_path) -> Path:
    """A data folder with train/ (4 pairs) and val/ (2 pairs) of 32x64 composites."""
    root = tmp_path / "data"
    make_pairs(root / "train", 4, size=32, seed=0, split="train")
    make_pairs(root / "val", 2, size=32, seed=0, split="val")
    return root


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """An empty folder for load_split caches."""
    return tmp_path / "cache"
