"""A split folder of composites -> cached uint8 arrays, decoded once and memory-mapped after.

The decoding (``_decode_split``, threads over chunks of ``_Source`` items
read by a per-sample reader) and the entries (``_cached_entry``: looked up by
key, else written into a temporary folder and published under a lock; files
and locks in ``pspnet.data.cache_entries``) also serve the cityscapes and
folders splits that fit (``pspnet.data.samples.load_arrays``).

Example::

    photos, train_ids = load_split("cityscapes_data/val")  # (500,256,256,3), (500,256,256)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pspnet.data.cache_entries import FileSink, MemorySink, folder_lock, publish
from pspnet.data.composites import _read_composite
from pspnet.data.files import list_images
from pspnet.data.labels import _decode_packed
from pspnet.data.summaries import FAR_DISTANCE, SplitSummary
from pspnet.errors import ConfigError, DataError, PspnetWarning
from pspnet.fileio import default_cache_dir, temporary_name
from pspnet.palette import NUM_CLASSES

FAR_IMAGE_SHARE = 0.5  # a label half with more far pixels than this triggers a warning
CACHE_FORMAT = 1  # bump when the cache layout or the decoding changes
TARGETS = ("train_ids", "rgb")
_CHUNK = 32  # images per decoding task


@dataclass(frozen=True)
class _Source:
    """What one cache entry is decoded from: one item per image, and how to read one into its slots."""

    folder: Path  # named in messages; the summary's folder
    items: list  # pairs: the composite paths; other layouts: sample indices
    names: list[str]  # one per item: the summary's file names
    read: Callable  # read(item, photo_out, target_out, target) -> train ids (H, W) or (H, W, 2) ids and distances
    size: tuple[int, int] | None = None  # (height, width) of every image; None: from the first readable composite
    num_classes: int = NUM_CLASSES  # class_pixels keeps these ids, then one count for the rest (ignore)


def _read_composite_into(path: Path, photo_out: np.ndarray, target_out: np.ndarray, target: str) -> np.ndarray:
    """Reads one composite into its slots (photo RGB, target); returns (H, W, 2) uint8: train id, distance."""
    height, width = photo_out.shape[:2]
    image = _read_composite(path)
    if image.shape[:2] != (height, 2 * width):
        raise DataError(
            f"{path.name} is {image.shape[1]}x{image.shape[0]} pixels but the first image of "
            f"the folder is {2 * width}x{height}; every file of a split must have one size: {path}"
        )
    cv2.cvtColor(image[:, :width], cv2.COLOR_BGR2RGB, dst=photo_out)
    label_bgr = image[:, width:]
    # (H, W, 2) bytes per pixel: train id, distance to its palette colour.
    decoded = _decode_packed(label_bgr, bgr=True).view(np.uint8).reshape(height, width, 2)
    if target == "rgb":
        label_rgb = cv2.cvtColor(label_bgr, cv2.COLOR_BGR2RGB)
        np.multiply(label_rgb, np.float32(1.0 / 255.0), out=target_out, dtype=np.float32)
    else:
        target_out[...] = decoded[..., 0]
    return decoded


def _decode_chunk(items: list, size: tuple[int, int], target: str, read: Callable = _read_composite_into) -> dict:
    """Reads and decodes a run of images with ``read`` (runs on a worker thread).

    Returns:
        dict with ``photos`` uint8 (k, H, W, 3), ``targets`` (k, H, W) uint8
        or (k, H, W, 3) float32, ``kept`` item indices within ``items``,
        ``errors`` [(index, DataError)], ``class_pixels`` and
        ``distance_histogram`` int64 (256,) over the kept items, and ``far``
        [(index, share)] for label halves mostly far from the palette.
    """
    height, width = size
    count = len(items)
    photos = np.empty((count, height, width, 3), dtype=np.uint8)
    target_shape, target_dtype = _target_spec(target, size)
    targets = np.empty((count, *target_shape), dtype=target_dtype)
    class_pixels = np.zeros(256, dtype=np.int64)
    distance_histogram = np.zeros(256, dtype=np.int64)
    kept, errors, far = [], [], []
    for index, item in enumerate(items):
        slot = len(kept)
        try:
            decoded = read(item, photos[slot], targets[slot], target)
        except DataError as error:
            errors.append((index, error))
            continue
        kept.append(index)
        # cv2.calcHist reads one channel of the interleaved pairs without a copy.
        class_pixels += cv2.calcHist([decoded], [0], None, [256], [0, 256]).reshape(-1).astype(np.int64)
        if decoded.ndim == 3:  # composites: the distance of each label pixel to its palette colour
            distances = cv2.calcHist([decoded], [1], None, [256], [0, 256]).reshape(-1).astype(np.int64)
            distance_histogram += distances
            share = distances[FAR_DISTANCE + 1 :].sum() / (height * width)
            if share > FAR_IMAGE_SHARE:
                far.append((index, float(share)))
    used = len(kept)
    return {
        "photos": photos[:used],
        "targets": targets[:used],
        "kept": kept,
        "errors": errors,
        "class_pixels": class_pixels,
        "distance_histogram": distance_histogram,
        "far": far,
    }


def _file_key(
    paths: list[Path], target: str, names: list[str] | None = None, extra: dict | None = None
) -> tuple[str, list]:
    """The cache key: a hash of the format version, the target and every file's name, size, mtime.

    Args:
        names: one per path (default: the file names).
        extra: more of what the entry depends on (the layout, the class
            table), hashed after the files; None for the pairs, whose keys
            predate it.
    """
    stats = []
    for path, name in zip(paths, names if names is not None else [path.name for path in paths]):
        try:
            info = path.stat()
        except OSError:  # a dangling link, a file just removed: decoding names it (or skip_bad skips it)
            stats.append([name, None, None])
            continue
        stats.append([name, info.st_size, info.st_mtime_ns])
    content = {"format": CACHE_FORMAT, "target": target, "files": stats, **(extra or {})}
    text = json.dumps(content, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24], stats


def _entry_prefix(folder: Path, target: str) -> str:
    """Cache entries of one folder and target share this prefix (older ones are evicted)."""
    resolved = str(folder.resolve())
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.resolve().name)[:40] or "split"
    return f"{name}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}-{target}-"


def _warn_problems(summary: SplitSummary, folder: Path, skip_bad: bool) -> None:
    """The warnings of a decoded split (also replayed from the cache)."""
    if summary.skipped:
        if not skip_bad:
            raise DataError(summary.skipped[0][1])  # the reason, naming the file
        names = ", ".join(name for name, _ in summary.skipped[:3])
        more = ", ..." if len(summary.skipped) > 3 else ""
        warnings.warn(
            f"skipped {len(summary.skipped)} unusable file{'s' if len(summary.skipped) > 1 else ''} in "
            f"{folder} ({names}{more}); first: {summary.skipped[0][1]}",
            PspnetWarning,
            stacklevel=3,
        )
    if summary.far_images:
        name, share = max(summary.far_images, key=lambda item: item[1])
        warnings.warn(
            f"{len(summary.far_images)} of {summary.num_images} label halves in {folder} are mostly far "
            f"from the Cityscapes palette, e.g. {name}: {share:.0%} of its label pixels are farther than "
            f"{FAR_DISTANCE} from every palette colour (are these colour label images?)",
            PspnetWarning,
            stacklevel=3,
        )


def _read_entry(entry: Path, key: str) -> tuple[np.ndarray, np.ndarray, SplitSummary] | None:
    """A complete, matching cache entry memory-mapped, or None."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            return None
        summary = SplitSummary.from_json(meta["summary"])
        photos = np.load(entry / "photos.npy", mmap_mode="r")
        targets = np.load(entry / "targets.npy", mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    height, width = summary.image_size
    if photos.shape != (summary.num_images, height, width, 3) or len(targets) != summary.num_images:
        return None
    summary.cached = True
    summary.seconds = 0.0
    return photos, targets, summary


def _first_size(paths: list[Path], skip_bad: bool) -> tuple[int, int]:
    """(height, width) of one half, from the first readable file."""
    for path in paths:
        try:
            image = _read_composite(path)
        except DataError:
            if skip_bad:
                continue
            raise
        return image.shape[0], image.shape[1] // 2
    raise DataError(f"no readable image among the {len(paths)} files of {paths[0].parent}")


def _chunk_results(pool: ThreadPoolExecutor, source: _Source, size: tuple[int, int], target: str, workers: int):
    """(start, ``_decode_chunk`` result) of each run of ``_CHUNK`` items, in order.

    At most 2 chunks per worker in flight: memory stays bounded and results
    come in item order.
    """
    starts = list(range(0, len(source.items), _CHUNK))
    pending = []
    next_chunk = 0
    while next_chunk < len(starts) or pending:
        while next_chunk < len(starts) and len(pending) < 2 * workers:
            start = starts[next_chunk]
            chunk = source.items[start : start + _CHUNK]
            pending.append((start, pool.submit(_decode_chunk, chunk, size, target, source.read)))
            next_chunk += 1
        start, future = pending.pop(0)
        yield start, future.result()


def _decode_split(
    source: _Source, target: str, skip_bad: bool, workers: int, progress: bool, sink_factory
) -> tuple[object, SplitSummary]:
    """Decodes every item on threads into the sink made by ``sink_factory(count, size)``."""
    started = time.perf_counter()
    size = source.size or _first_size(source.items, skip_bad)
    sink = sink_factory(len(source.items), size)
    from tqdm.auto import tqdm

    # disable=None: a bar only on a terminal (or notebook), never in logs.
    bar = tqdm(
        total=len(source.items),
        desc=f"decode {source.folder.name}",
        unit="img",
        disable=None if progress else True,
        leave=False,
    )
    counts = {"class_pixels": np.zeros(256, dtype=np.int64), "distance_histogram": np.zeros(256, dtype=np.int64)}
    kept_names: list[str] = []
    skipped: list[tuple[str, str]] = []
    far: list[tuple[str, float]] = []
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for start, result in _chunk_results(pool, source, size, target, workers):
            for index, error in result["errors"]:
                if not skip_bad:
                    raise error
                skipped.append((source.names[start + index], str(error)))
            sink.write(result["photos"], result["targets"])
            kept_names.extend(source.names[start + index] for index in result["kept"])
            far.extend((source.names[start + index], round(share, 4)) for index, share in result["far"])
            for name in counts:
                counts[name] += result[name]
            bar.update(min(_CHUNK, len(source.items) - start))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if not kept_names:
        raise DataError(f"none of the {len(source.items)} images in {source.folder} could be read ({skipped[0][1]})")
    class_pixels, classes = counts["class_pixels"], source.num_classes
    summary = SplitSummary(
        folder=str(source.folder),
        num_images=len(kept_names),
        image_size=size,
        files=kept_names,
        class_pixels=np.append(class_pixels[:classes], class_pixels[classes:].sum()),
        distance_histogram=counts["distance_histogram"],
        skipped=skipped,
        far_images=far,
        seconds=round(time.perf_counter() - started, 3),
    )
    return sink, summary


def _target_spec(target: str, size: tuple[int, int]) -> tuple[tuple, np.dtype]:
    height, width = size
    if target == "rgb":
        return (height, width, 3), np.dtype(np.float32)
    return (height, width), np.dtype(np.uint8)


def _write_entry(
    temporary: Path, source: _Source, key: str, target: str, keyed: float, skip_bad: bool, workers: int, progress: bool
) -> SplitSummary:
    """Decodes the source into a temporary entry folder (emptied and removed if anything fails)."""
    sink = None
    try:

        def file_sink(count, size):
            nonlocal sink
            sink = FileSink(temporary, count, (*size, 3), *_target_spec(target, size))
            return sink

        _, summary = _decode_split(source, target, skip_bad, workers, progress, file_sink)
        sink.close()
        meta = {
            "format": CACHE_FORMAT,
            "key": key,
            "target": target,
            "keyed": keyed,
            "created": time.time(),
            "summary": summary.to_json(),
        }
        # meta.json is written last: an entry without it is never trusted.
        (temporary / "meta.json").write_text(json.dumps(meta))
    except BaseException:
        if sink is not None:
            sink.abort()
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return summary


def _cached_entry(
    source: _Source,
    root: Path,
    key: str,
    prefix: str,
    keyed: float,
    target: str,
    skip_bad: bool,
    workers: int,
    progress: bool,
    fallback: str,
) -> tuple[np.ndarray, np.ndarray, SplitSummary] | None:
    """The cache entry ``root/PREFIX+KEY`` memory-mapped: read, or decoded now, written and published.

    Args:
        keyed: when the files were looked at for ``key`` (before it was made).
        fallback: what the caller does instead, for the warning when the
            cache folder cannot be written.

    Returns:
        ``(photos, targets, summary)``, or None (with a warning) when the
        cache folder cannot be written.
    """
    entry = root / f"{prefix}{key}"
    found = _read_entry(entry, key) if entry.is_dir() else None
    if found is not None:
        return found
    try:
        root.mkdir(parents=True, exist_ok=True)
        temporary = temporary_name(entry)
        temporary.mkdir()
    except OSError as error:
        _warn_unwritable(root, error, fallback)
        return None
    # Held until the entry is in place: another process's clean-up leaves this folder alone.
    with folder_lock(temporary):
        try:
            summary = _write_entry(temporary, source, key, target, keyed, skip_bad, workers, progress)
        except OSError as error:  # a full disk, say: the temporary folder is gone, the files are still readable
            _warn_unwritable(root, error, fallback)
            return None
        found = publish(root, temporary, entry, prefix, keyed, lambda path: _read_entry(path, key))
    if found is None:
        raise DataError(f"the cache entry just written cannot be read back: {entry}")
    found[2].cached = False
    found[2].seconds = summary.seconds
    return found


def _warn_unwritable(root: Path, error: OSError, fallback: str) -> None:
    warnings.warn(
        f"cannot write the cache in {root} ({error.strerror or error}); {fallback}", PspnetWarning, stacklevel=5
    )


def _workers(workers: int | None) -> int:
    """Decoding threads: as asked, or the CPU count, at most 8."""
    return max(1, int(workers or min(8, os.cpu_count() or 1)))


def _cache_root(cache_dir) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir() / "splits"


def _load(
    folder: str | os.PathLike, cache_dir, target: str, skip_bad: bool, workers: int | None, progress: bool
) -> tuple[np.ndarray, np.ndarray, SplitSummary]:
    """load_split plus its summary."""
    if target not in TARGETS:
        raise ConfigError(f"target must be one of {TARGETS}, got {target!r}")
    folder = Path(folder)
    paths = list_images(folder)
    source = _Source(folder, paths, [path.name for path in paths], _read_composite_into)
    workers = _workers(workers)
    found = None
    if cache_dir is not False:
        keyed = time.time()  # an entry keyed later than this one saw newer files, and is never cleaned up by it
        key, _ = _file_key(paths, target)
        found = _cached_entry(
            source,
            _cache_root(cache_dir),
            key,
            _entry_prefix(folder, target),
            keyed,
            target,
            skip_bad,
            workers,
            progress,
            fallback=f"decoding {folder} into memory",
        )
    if found is None:  # no cache asked for, or none can be written

        def memory_sink(count, size):
            return MemorySink(count, (*size, 3), *_target_spec(target, size))

        sink, summary = _decode_split(source, target, skip_bad, workers, progress, memory_sink)
        found = (*sink.result(), summary)
    _warn_problems(found[2], folder, skip_bad)
    return found


def load_split(
    folder: str | os.PathLike,
    cache_dir: str | os.PathLike | None | bool = None,
    target: str = "train_ids",
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Reads a split folder of composites into photos and targets, cached on disk.

    Files are read in natural order, split into halves, the label half decoded
    with ``decode_labels``. The arrays are cached in ``cache_dir`` under a key
    made of every file's name, size and modification time (and ``target``):
    the next call with unchanged files memory-maps them instead of decoding.
    A cache entry is written into a temporary folder and renamed into place
    only when complete, so an interrupted run never leaves one that is trusted.
    Processes loading at once share the cache: entries are placed and removed
    under a lock on the cache folder, and an entry of newer files (keyed later)
    or one still being written is never removed by another process.

    Args:
        folder: a folder of .jpg/.jpeg/.png composites (photo left, label right).
        cache_dir: where cache entries live; None: ``default_cache_dir()/splits``
            ($PSPNET_CACHE or ~/.cache/pspnet); False: no cache, decode into memory.
        target: "train_ids" for uint8 class maps, or "rgb" for the seed's
            colour-regression target (the label half as float32 RGB in [0, 1]).
        skip_bad: skip unusable files (unreadable, truncated, greyscale, wrong
            size) with one warning, instead of raising.
        workers: decoding threads (default: the CPU count, at most 8).
        progress: show a progress bar while decoding.

    Returns:
        ``(photos, targets)``: photos uint8 (N, H, W, 3) RGB; targets uint8
        (N, H, W) train ids (255 void) or, for target="rgb", float32
        (N, H, W, 3). Cached arrays are read-only ``np.memmap``.

    Raises:
        DataError: missing or empty folder, or an unusable file (without skip_bad).
        ConfigError: unknown ``target``.
    """
    photos, targets, _ = _load(folder, cache_dir, target, skip_bad, workers, progress)
    return photos, targets


def summarize_split(
    folder: str | os.PathLike,
    cache_dir: str | os.PathLike | None | bool = None,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> SplitSummary:
    """Decodes (or reads from the cache) a split and returns what it holds.

    Args: as ``load_split``.

    Returns:
        A ``SplitSummary``: file count, image size, pixels per class and the
        histogram of decode distances.
    """
    return _load(folder, cache_dir, "train_ids", skip_bad, workers, progress)[2]
