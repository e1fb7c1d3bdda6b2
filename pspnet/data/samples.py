"""A split's samples as arrays or lazy sequences, and one checking pass over its files (cached).

Photos of the cityscapes and folders layouts come in any size, and a full
split may not fit in memory or on disk decoded (2,975 official frames of
2048x1024 are 18 GB as uint8), so ``load_arrays`` gives them one of two ways:

- cached decoded: when every image of the split has one size and the decoded
  photos and labels (4 bytes a pixel) fit under ``CACHE_LIMIT`` (4 GiB: the
  500 official val frames, any small data set), they are decoded once into an
  entry of the split cache (``pspnet.data.cache``: written into a temporary
  folder, published under a lock, keyed by every photo and label file's name,
  size and modification time, the layout and the class table) and
  memory-mapped after, as the pairs are: reading a decoded frame costs a copy,
  decoding a 2048x1024 PNG tens of milliseconds, every epoch;
- decoded on the fly: otherwise (mixed sizes, too large, ``cache_dir=False``),
  ``SplitPhotos`` and ``SplitLabels`` are sequences that read one image per
  ``__getitem__`` (thread-safe: OpenCV releases the GIL, and the pipeline's
  workers are threads).

The pairs keep their decoded, memory-mapped arrays, whatever their size.

``scan_split`` reads every label once, and each photo's size from its file
header, to check them and count the pixels of each class (class weights,
``pspnet-data inspect``); what it found is cached as JSON, per file, keyed by
the files' sizes and modification times. ``load_arrays`` scans first: a bad
file raises before anything is cached.

Example::

    split = open_split("cityscapes", "train")
    photos, labels, summary = load_arrays(split)   # SplitPhotos, SplitLabels, LayoutSummary (18 GB: lazy)
    photo, ids = photos[0], labels[0]              # (1024, 2048, 3), (1024, 2048) uint8
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pspnet.data import cache
from pspnet.data.cache import SplitSummary
from pspnet.data.classes import ClassTable
from pspnet.data.files import image_size
from pspnet.data.layouts import Sample, Split, label_kind, read_label_file
from pspnet.errors import ConfigError, DataError, PspnetWarning

__all__ = ["LayoutSummary", "SplitLabels", "SplitPhotos", "load_arrays", "scan_split"]

SCAN_FORMAT = 1  # bump when what a scan entry holds changes
# Bump when a label file reads as other train ids (2: 1/2/4-bit and grey+alpha
# PNG masks as stored); in the keys of the scans and of the decoded entries.
LABELS_FORMAT = 2
CACHE_LIMIT = 4 << 30  # bytes: a split of one image size whose decoded photos and labels fit is cached decoded
_BYTES_PER_PIXEL = 4  # uint8 RGB photo + uint8 train id


class SplitPhotos:
    """The photos of a split as a sequence: ``photos[i]`` is uint8 (H, W, 3) RGB, decoded when asked."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.split.read_photo(_index(index, len(self.split)))


class SplitLabels:
    """The labels of a split as a sequence: ``labels[i]`` is uint8 (H, W) train ids (255 ignore)."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.split.read_label(_index(index, len(self.split)))


def _index(index, length: int) -> int:
    index = int(index)  # NumPy integers too; slices are refused by int()
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for {length} samples")
    return index % length


@dataclass
class LayoutSummary(SplitSummary):
    """A ``SplitSummary`` of a cityscapes or folders split.

    ``class_pixels`` is int64 (num_classes + 1,): the classes, then ignore;
    ``image_size`` is the most common (height, width); ``distance_histogram``
    is all zeros (the labels are not colours decoded to the nearest class).
    """

    layout: str = ""
    classes: ClassTable | None = None
    sizes: dict = field(default_factory=dict)  # (height, width) -> number of images
    labelled: bool = True


def _stat(path: Path | None) -> list | None:
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return None  # read_label_file / image_size name the problem
    return [info.st_size, info.st_mtime_ns]


def _check_sample(sample: Sample, kind: str, classes: ClassTable) -> dict:
    """Reads one sample's photo size (header) and label: a cache entry with counts or a problem."""
    entry = {"image": _stat(sample.image), "label": _stat(sample.label), "problem": None}
    try:
        height, width = image_size(sample.image)
        entry["size"] = [height, width]
        if sample.label is None:
            entry["counts"] = [0] * (classes.num_classes + 1)
            return entry
        ids = read_label_file(sample.label, kind, classes)
        if ids.shape != (height, width):
            raise DataError(
                f"mask is {ids.shape[1]}x{ids.shape[0]} but its image {sample.image.name} is "
                f"{width}x{height}: {sample.label}"
            )
        counts = np.bincount(ids.ravel(), minlength=256)
        entry["counts"] = [*counts[: classes.num_classes].tolist(), int(counts[255])]
    except DataError as error:
        entry["problem"] = str(error)
    return entry


def _cache_file(split: Split, cache_dir) -> Path | None:
    if cache_dir is False:
        return None
    from pspnet.fileio import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "scans"
    what = json.dumps([str(split.folder.resolve()), split.layout, split.classes.to_json(), SCAN_FORMAT, LABELS_FORMAT])
    return root / f"scan-{split.layout}-{split.name}-{hashlib.sha1(what.encode()).hexdigest()[:16]}.json"


def _read_cache(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return data["entries"] if data.get("format") == SCAN_FORMAT else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # a damaged cache is scanned again


def _write_cache(path: Path | None, entries: dict) -> None:
    if path is None:
        return
    from pspnet.fileio import atomic_write_text

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"format": SCAN_FORMAT, "entries": entries}))
    except OSError as error:  # the scan is still good; it is only not kept
        warnings.warn(f"cannot write the scan cache {path} ({error.strerror or error})", PspnetWarning, stacklevel=3)


def _scan_entries(split: Split, known: dict, workers: int | None, progress: bool) -> tuple[list[dict], int]:
    """One entry per sample, reused from ``known`` where both files are unchanged; and how many were read."""
    from tqdm.auto import tqdm

    def one(sample: Sample) -> dict:
        old = known.get(str(sample.image))
        if (
            old
            and old.get("image") == _stat(sample.image)
            and old.get("label") == _stat(sample.label)
            and old.get("label_path") == (str(sample.label) if sample.label else None)
        ):
            return old
        entry = _check_sample(sample, label_kind(split.layout, sample.label) if sample.label else "", split.classes)
        entry["label_path"] = str(sample.label) if sample.label else None
        entry["fresh"] = True
        return entry

    workers = max(1, int(workers or min(8, os.cpu_count() or 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(one, split.samples)
        entries = list(
            tqdm(
                jobs,
                total=len(split),
                desc=f"scan {split.name}",
                unit="img",
                leave=False,
                disable=None if progress else True,
            )
        )
    fresh = sum(1 for entry in entries if entry.pop("fresh", False))
    return entries, fresh


def _summary(split: Split, kept: list[int], entries: list[dict], skipped: list, seconds: float) -> LayoutSummary:
    sizes = Counter(tuple(entries[i]["size"]) for i in kept)
    pixels = np.zeros(split.classes.num_classes + 1, np.int64)
    for i in kept:
        pixels += np.asarray(entries[i]["counts"], np.int64)
    return LayoutSummary(
        folder=str(split.folder),
        num_images=len(kept),
        image_size=sizes.most_common(1)[0][0] if sizes else (0, 0),
        files=[str(split.samples[i].image.relative_to(split.folder)) for i in kept],
        class_pixels=pixels,
        distance_histogram=np.zeros(256, np.int64),
        skipped=skipped,
        seconds=seconds,
        cached=False,
        layout=split.layout,
        classes=split.classes,
        sizes=dict(sizes),
        labelled=split.labelled,
    )


def _scan_pairs(split: Split, cache_dir, skip_bad: bool, workers, progress: bool) -> tuple[Split, SplitSummary]:
    from pspnet.data.cache import summarize_split

    summary = summarize_split(split.folder, cache_dir=cache_dir, skip_bad=skip_bad, workers=workers, progress=progress)
    bad = {Path(name).name for name, _ in summary.skipped}
    return replace(split, samples=[s for s in split.samples if s.image.name not in bad]), summary


def scan_split(
    split: Split, cache_dir=None, skip_bad: bool = False, workers: int | None = None, progress: bool = True
) -> tuple[Split, SplitSummary]:
    """Checks every sample of a split once and counts its pixels per class.

    Args:
        split: from ``open_split`` / ``resolve_split``.
        cache_dir: where the scan is kept; None: ``default_cache_dir()/scans``
            (pairs: the decoded split, ``default_cache_dir()/splits``); False: no cache.
        skip_bad: leave the bad samples out of the returned split with one
            warning, instead of raising.
        workers: reading threads (default: the CPU count, at most 8).
        progress: show a progress bar.

    Returns:
        ``(split, summary)``: the split (without the bad samples under
        ``skip_bad``) and a ``SplitSummary`` (a ``LayoutSummary`` for the
        cityscapes and folders layouts).

    Raises:
        DataError: a bad sample (without ``skip_bad``): an unreadable file, a
            mask whose size differs from its image's, a mask value that is
            neither a class nor the ignore index, a colour not in dataset.json.
    """
    if split.layout == "pairs":
        return _scan_pairs(split, cache_dir, skip_bad, workers, progress)
    started = time.perf_counter()
    cache = _cache_file(split, cache_dir)
    entries, fresh = _scan_entries(split, _read_cache(cache), workers, progress)
    if fresh:
        _write_cache(cache, {str(s.image): entry for s, entry in zip(split.samples, entries)})
    bad = [i for i, entry in enumerate(entries) if entry["problem"]]
    if bad and not skip_bad:
        raise DataError(entries[bad[0]]["problem"])
    skipped = [(str(split.samples[i].image), entries[i]["problem"]) for i in bad]
    if skipped:
        warnings.warn(
            f"skipped {len(bad)} of {len(split)} samples of {split.folder}; first: {skipped[0][1]}",
            PspnetWarning,
            stacklevel=2,
        )
    kept = [i for i in range(len(split)) if not entries[i]["problem"]]
    if not kept:
        raise DataError(f"no usable sample in {split.folder}; first problem: {skipped[0][1]}")
    summary = _summary(split, kept, entries, skipped, time.perf_counter() - started)
    summary.cached = not fresh
    return replace(split, samples=[split.samples[i] for i in kept]), summary


def _read_sample(split: Split, index: int, photo_out: np.ndarray, target_out: np.ndarray, target: str) -> np.ndarray:
    """Decodes sample ``index`` into its slots of a cache entry; returns its train ids (for the class counts)."""
    photo, ids = split.read(index)
    if photo.shape[:2] != photo_out.shape[:2]:  # changed since the scan
        sample, (height, width) = split.samples[index], photo_out.shape[:2]
        raise DataError(
            f"{sample.image.name} is {photo.shape[1]}x{photo.shape[0]} pixels but the other images "
            f"of the split are {width}x{height} (changed since it was scanned?): {sample.image}"
        )
    photo_out[...] = photo
    target_out[...] = ids
    return ids


def _entry_files(split: Split) -> tuple[list[Path], list[str]]:
    """Every photo and label file of a split, and their names relative to its root (for the cache key)."""
    paths = [path for sample in split.samples for path in (sample.image, sample.label)]
    return paths, [path.relative_to(split.root).as_posix() for path in paths]


def _cached_arrays(
    split: Split, summary: SplitSummary, cache_dir, workers: int | None, progress: bool, limit: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The checked split decoded into the split cache and memory-mapped, or None where it stays lazy.

    It stays lazy without a cache (``cache_dir=False``), for images of more
    than one size, when the decoded arrays would take more than ``limit``
    bytes, or when the cache folder cannot be written (with a warning).
    """
    if cache_dir is False or len(summary.sizes) != 1:
        return None
    ((height, width),) = summary.sizes
    if len(split) * height * width * _BYTES_PER_PIXEL > limit:
        return None
    names = [str(sample.image.relative_to(split.folder)) for sample in split.samples]
    source = cache._Source(
        split.folder,
        list(range(len(split))),
        names,
        functools.partial(_read_sample, split),
        size=(height, width),
        num_classes=split.classes.num_classes,
    )
    keyed = time.time()  # before the files are looked at again (see pspnet.data.cache)
    paths, relative = _entry_files(split)
    key, _ = cache._file_key(
        paths,
        "train_ids",
        relative,
        extra={"layout": split.layout, "classes": split.classes.to_json(), "labels": LABELS_FORMAT},
    )
    # The layout in the prefix: a folders split read as pairs (its images folder) is another entry.
    prefix = cache._entry_prefix(split.folder, f"{split.layout}-train_ids")
    found = cache._cached_entry(
        source,
        cache._cache_root(cache_dir),
        key,
        prefix,
        keyed,
        "train_ids",
        False,
        cache._workers(workers),
        progress,
        fallback=f"reading {split.folder} on the fly",
    )
    return None if found is None else found[:2]


def load_arrays(
    split: Split,
    cache_dir=None,
    target: str = "train_ids",
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
    cache_limit: int | None = None,
):
    """The photos and training targets of a split, with its summary.

    Args:
        split: from ``open_split`` / ``resolve_split``.
        cache_dir: where the scan and the decoded split are kept; None: under
            ``default_cache_dir()`` (``scans``, ``splits``); False: no cache
            (the pairs decode into memory, other layouts stay lazy).
        skip_bad, workers, progress: as ``scan_split``.
        target: "train_ids"; "rgb" (the seed's colour target) for pairs only.
        cache_limit: bytes; a cityscapes or folders split of one image size
            whose decoded photos and labels (4 bytes a pixel) fit is cached
            decoded; None: ``CACHE_LIMIT`` (4 GiB). Not used for the pairs.

    Returns:
        ``(photos, targets, summary)``: for pairs the cached arrays of
        ``pspnet.data.load_split`` (N, H, W, 3) and (N, H, W), unchanged; for
        the other layouts, over the checked samples (``scan_split``), read-only
        memory-mapped arrays of the same shapes when cached (see the module
        docstring), else ``SplitPhotos`` and ``SplitLabels``.

    Raises:
        DataError: as ``scan_split`` (before anything is cached); or a split without labels.
        ConfigError: target "rgb" for a layout other than pairs, or an unknown target.
    """
    if split.layout == "pairs":
        return cache._load(split.folder, cache_dir, target, skip_bad, workers, progress)
    if target != "train_ids":
        raise ConfigError(
            f"target={target!r}: only the pairs have the seed's colour target; the {split.layout} "
            f"layout trains on train ids",
            flags={"target=": "--head "},
        )
    if not split.labelled:
        raise DataError(f"the {split.name} split has no labels (no gtFine/masks files): {split.folder}")
    split, summary = scan_split(split, cache_dir, skip_bad, workers, progress)
    limit = CACHE_LIMIT if cache_limit is None else int(cache_limit)
    arrays = _cached_arrays(split, summary, cache_dir, workers, progress, limit)
    if arrays is not None:
        return (*arrays, summary)
    return SplitPhotos(split), SplitLabels(split), summary


# Decoded images of a lazy split (photo and labels: 4 bytes a pixel) are kept
# in memory once read while the splits take at most this much: a small folders
# set decodes each file once, not every epoch; the 2,975 Cityscapes train
# frames (25 GB decoded) are decoded on the fly every time.
MEMORY_BYTES = 2**30


def kept_in_memory(photos, labels, summary, budget: list[int]):
    """Lazy photos and labels that keep what they decode, when the split fits in ``budget[0]`` bytes
    (taken from it); arrays (the split cache's memory maps) and splits too large come back as they are."""
    if isinstance(photos, np.ndarray):
        return photos, labels
    size = sum(height * width * 4 * count for (height, width), count in summary.sizes.items())
    if size > budget[0]:
        return photos, labels
    budget[0] -= size
    return KeptSequence(photos), KeptSequence(labels)


class KeptSequence:
    """A lazy sequence that keeps each item once decoded (same items: decoding is deterministic)."""

    def __init__(self, items):
        self.items, self.kept = items, {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        index = int(index)
        item = self.kept.get(index)
        if item is None:  # two threads may both decode it: the same array, kept once
            item = self.kept[index] = self.items[index]
        return item


class Prefix:
    """The first ``count`` items of a sequence (a lazy one has no slices)."""

    def __init__(self, items, count: int):
        self.items, self.count = items, min(count, len(items))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        if not 0 <= int(index) < self.count:
            raise IndexError(f"index {index} out of range for {self.count} items")
        return self.items[int(index)]


def prefix(items, count: int):
    """``items[:count]`` for an array (a view, as before), or a prefix of a lazy sequence."""
    return items[:count] if isinstance(items, np.ndarray) else Prefix(items, count)
