"""A split folder of composites -> cached uint8 arrays, decoded once and memory-mapped after.

Example::

    photos, train_ids = load_split("cityscapes_data/val")  # (500,256,256,3), (500,256,256)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pspnet.data.composites import _read_composite
from pspnet.data.files import list_images
from pspnet.data.labels import _decode_packed
from pspnet.errors import ConfigError, DataError, PspnetWarning
from pspnet.fileio import TEMPORARY_MARK, default_cache_dir, temporary_name
from pspnet.palette import NUM_CLASSES

# A label pixel farther than this (Euclidean RGB) from every palette colour is
# "far". Measured on real val labels: JPEG noise moves 99.5% of the pixels of
# uniform regions by at most 16; 29% of border pixels (bilinear blends) and
# ~10% of all pixels lie beyond 30; see tests/test_real_data.py.
FAR_DISTANCE = 30
FAR_IMAGE_SHARE = 0.5  # a label half with more far pixels than this triggers a warning
CACHE_FORMAT = 1  # bump when the cache layout or the decoding changes
TARGETS = ("train_ids", "rgb")
_CHUNK = 32  # images per decoding task


@dataclass
class SplitSummary:
    """What a decoded split holds; kept in the cache beside the arrays.

    ``class_pixels`` is int64 (NUM_CLASSES + 1,): ids 0-18, then void.
    ``distance_histogram`` is int64 (256,): label pixels per rounded distance
    to the nearest palette colour.
    """

    folder: str
    num_images: int
    image_size: tuple[int, int]  # (height, width) of one half
    files: list[str]
    class_pixels: np.ndarray
    distance_histogram: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    far_images: list[tuple[str, float]] = field(default_factory=list)  # (file, far share)
    seconds: float = 0.0  # decoding time (0 when read from the cache)
    cached: bool = False  # read from the cache

    def class_shares(self) -> np.ndarray:
        """float64 (NUM_CLASSES + 1,): share of all label pixels per class, void last."""
        return self.class_pixels / max(int(self.class_pixels.sum()), 1)

    def far_share(self, threshold: int = FAR_DISTANCE) -> float:
        """Share of label pixels farther than ``threshold`` (0 or more) from every palette colour."""
        if threshold < 0:  # a negative index would count the last bins instead
            raise ConfigError(f"threshold={threshold} must be 0 or more", flags={"threshold=": "--far "})
        return float(self.distance_histogram[threshold + 1 :].sum() / max(int(self.distance_histogram.sum()), 1))

    def distance_percentile(self, q: float) -> int:
        """The q-th percentile (0-100) of the per-pixel decode distance."""
        cumulative = np.cumsum(self.distance_histogram)
        if cumulative[-1] == 0:
            return 0
        return int(np.searchsorted(cumulative, q / 100.0 * cumulative[-1], side="left"))

    def mean_distance(self) -> float:
        """The mean per-pixel decode distance."""
        total = max(int(self.distance_histogram.sum()), 1)
        return float((self.distance_histogram * np.arange(256)).sum() / total)

    def to_json(self) -> dict:
        return {
            "folder": self.folder,
            "num_images": self.num_images,
            "image_size": list(self.image_size),
            "files": self.files,
            "class_pixels": self.class_pixels.tolist(),
            "distance_histogram": self.distance_histogram.tolist(),
            "skipped": [list(item) for item in self.skipped],
            "far_images": [list(item) for item in self.far_images],
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: dict) -> "SplitSummary":
        return cls(
            folder=data["folder"],
            num_images=int(data["num_images"]),
            image_size=tuple(data["image_size"]),
            files=list(data["files"]),
            class_pixels=np.asarray(data["class_pixels"], dtype=np.int64),
            distance_histogram=np.asarray(data["distance_histogram"], dtype=np.int64),
            skipped=[tuple(item) for item in data["skipped"]],
            far_images=[(name, float(share)) for name, share in data["far_images"]],
            seconds=float(data.get("seconds", 0.0)),
        )


class _MemorySink:
    """Collects decoded chunks into preallocated arrays."""

    def __init__(self, count: int, photo_shape: tuple, target_shape: tuple, target_dtype):
        self.photos = np.empty((count, *photo_shape), dtype=np.uint8)
        self.targets = np.empty((count, *target_shape), dtype=target_dtype)
        self.filled = 0

    def write(self, photos: np.ndarray, targets: np.ndarray) -> None:
        stop = self.filled + len(photos)
        self.photos[self.filled : stop] = photos
        self.targets[self.filled : stop] = targets
        self.filled = stop

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.photos[: self.filled], self.targets[: self.filled]


_NPY_HEADER_BYTES = 128  # fixed, so the final count can be written in place


def _npy_header(dtype: np.dtype, shape: tuple) -> bytes:
    """A version 1.0 .npy header padded to a fixed length."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    body_length = _NPY_HEADER_BYTES - 10  # magic (6) + version (2) + length (2)
    text = text.ljust(body_length - 1) + "\n"
    if len(text) != body_length:
        raise ValueError(f"shape {shape} too long for the .npy header")
    return b"\x93NUMPY\x01\x00" + body_length.to_bytes(2, "little") + text.encode("latin1")


class _FileSink:
    """Streams decoded chunks into two .npy files.

    Plain sequential writes keep the process's resident memory at a few chunks
    (written pages sit in the OS page cache, not in the process), unlike
    writing through a memory map, whose touched pages count as resident.
    """

    def __init__(self, folder: Path, count: int, photo_shape: tuple, target_shape: tuple, target_dtype):
        self.shapes = {"photos": photo_shape, "targets": target_shape}
        self.dtypes = {"photos": np.dtype(np.uint8), "targets": np.dtype(target_dtype)}
        self.files = {}
        for name in ("photos", "targets"):
            handle = open(folder / f"{name}.npy", "wb")
            handle.write(_npy_header(self.dtypes[name], (count, *self.shapes[name])))
            self.files[name] = handle
        self.filled = 0

    def write(self, photos: np.ndarray, targets: np.ndarray) -> None:
        for name, array in (("photos", photos), ("targets", targets)):
            self.files[name].write(memoryview(np.ascontiguousarray(array, dtype=self.dtypes[name])).cast("B"))
        self.filled += len(photos)

    def close(self) -> None:
        for name, handle in self.files.items():
            if not handle.closed:
                handle.seek(0)
                handle.write(_npy_header(self.dtypes[name], (self.filled, *self.shapes[name])))
                handle.close()

    def abort(self) -> None:
        for handle in self.files.values():
            handle.close()


def _decode_chunk(paths: list[Path], size: tuple[int, int], target: str) -> dict:
    """Reads and decodes a run of files (runs on a worker thread).

    Returns:
        dict with ``photos`` uint8 (k, H, W, 3), ``targets`` (k, H, W) uint8
        or (k, H, W, 3) float32, ``kept`` file indices within ``paths``,
        ``errors`` [(index, DataError)], ``class_pixels`` and
        ``distance_histogram`` int64 (256,) over the kept files, and ``far``
        [(index, share)] for label halves mostly far from the palette.
    """
    height, width = size
    count = len(paths)
    photos = np.empty((count, height, width, 3), dtype=np.uint8)
    if target == "rgb":
        targets = np.empty((count, height, width, 3), dtype=np.float32)
    else:
        targets = np.empty((count, height, width), dtype=np.uint8)
    class_pixels = np.zeros(256, dtype=np.int64)
    distance_histogram = np.zeros(256, dtype=np.int64)
    kept, errors, far = [], [], []
    for index, path in enumerate(paths):
        try:
            image = _read_composite(path)
            if image.shape[:2] != (height, 2 * width):
                raise DataError(
                    f"{path.name} is {image.shape[1]}x{image.shape[0]} pixels but the first image of "
                    f"the folder is {2 * width}x{height}; every file of a split must have one size: {path}"
                )
        except DataError as error:
            errors.append((index, error))
            continue
        slot = len(kept)
        kept.append(index)
        cv2.cvtColor(image[:, :width], cv2.COLOR_BGR2RGB, dst=photos[slot])
        label_bgr = image[:, width:]
        # (H, W, 2) bytes per pixel: train id, distance to its palette colour.
        decoded = _decode_packed(label_bgr, bgr=True).view(np.uint8).reshape(height, width, 2)
        if target == "rgb":
            label_rgb = cv2.cvtColor(label_bgr, cv2.COLOR_BGR2RGB)
            np.multiply(label_rgb, np.float32(1.0 / 255.0), out=targets[slot], dtype=np.float32)
        else:
            targets[slot] = decoded[..., 0]
        # cv2.calcHist reads one channel of the interleaved pairs without a copy.
        class_pixels += cv2.calcHist([decoded], [0], None, [256], [0, 256]).reshape(-1).astype(np.int64)
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


def _file_key(paths: list[Path], target: str) -> tuple[str, list]:
    """The cache key: a hash of the format version, the target and every file's name, size, mtime."""
    stats = []
    for path in paths:
        try:
            info = path.stat()
        except OSError:  # a dangling link, a file just removed: decoding names it (or skip_bad skips it)
            stats.append([path.name, None, None])
            continue
        stats.append([path.name, info.st_size, info.st_mtime_ns])
    text = json.dumps({"format": CACHE_FORMAT, "target": target, "files": stats}, separators=(",", ":"))
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


def _decode_split(
    folder: Path, paths: list[Path], target: str, skip_bad: bool, workers: int, progress: bool, sink_factory
) -> tuple[object, SplitSummary]:
    """Decodes every file on threads into the sink made by ``sink_factory(count, size)``."""
    started = time.perf_counter()
    size = _first_size(paths, skip_bad)
    sink = sink_factory(len(paths), size)
    from tqdm.auto import tqdm

    # disable=None: a bar only on a terminal (or notebook), never in logs.
    bar = tqdm(
        total=len(paths), desc=f"decode {folder.name}", unit="img", disable=None if progress else True, leave=False
    )
    class_pixels = np.zeros(256, dtype=np.int64)
    distance_histogram = np.zeros(256, dtype=np.int64)
    kept_names: list[str] = []
    skipped: list[tuple[str, str]] = []
    far: list[tuple[str, float]] = []
    chunks = [paths[start : start + _CHUNK] for start in range(0, len(paths), _CHUNK)]
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        pending = []
        next_chunk = 0
        # At most 2 chunks per worker in flight: memory stays bounded and results
        # are written in file order.
        while next_chunk < len(chunks) or pending:
            while next_chunk < len(chunks) and len(pending) < 2 * workers:
                pending.append((chunks[next_chunk], pool.submit(_decode_chunk, chunks[next_chunk], size, target)))
                next_chunk += 1
            chunk_paths, future = pending.pop(0)
            result = future.result()
            for index, error in result["errors"]:
                if not skip_bad:
                    raise error
                skipped.append((chunk_paths[index].name, str(error)))
            sink.write(result["photos"], result["targets"])
            kept_names.extend(chunk_paths[index].name for index in result["kept"])
            far.extend((chunk_paths[index].name, round(share, 4)) for index, share in result["far"])
            class_pixels += result["class_pixels"]
            distance_histogram += result["distance_histogram"]
            bar.update(len(chunk_paths))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if not kept_names:
        raise DataError(f"none of the {len(paths)} images in {folder} could be read ({skipped[0][1]})")
    summary = SplitSummary(
        folder=str(folder),
        num_images=len(kept_names),
        image_size=size,
        files=kept_names,
        class_pixels=np.append(class_pixels[:NUM_CLASSES], class_pixels[NUM_CLASSES:].sum()),
        distance_histogram=distance_histogram,
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


@contextlib.contextmanager
def _folder_lock(folder: Path, wait: bool = True):
    """Holds an ``flock`` on a folder itself (its descriptor: no lock file to clean up).

    Yields True once held, or False when ``wait`` is off and another process
    (or another descriptor of this one) holds it. The kernel drops it when its
    holder ends, however it ends. Where ``fcntl`` does not exist (Windows) it
    yields True and locks nothing.
    """
    try:
        import fcntl
    except ImportError:
        yield True
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(descriptor)


def _keyed_at(entry: Path) -> float:
    """When the files of a cache entry were looked at (0 for a damaged entry, which nobody writes into)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        return float(meta.get("keyed", meta["created"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0.0


def _clean_stale(root: Path, prefix: str, keep: str, keyed: float) -> None:
    """Removes the entries of the same folder and target keyed before ``keyed``, and abandoned temporary folders.

    Runs under the cache folder's lock. Another process's entry keyed later
    (it saw newer files) is kept, and so is the temporary folder of a writer
    still at work, however long it takes: the writer holds its lock.
    """
    now = time.time()
    for entry in root.iterdir():
        try:
            if entry.name.startswith(prefix) and entry.name != keep:
                if _keyed_at(entry) < keyed:
                    shutil.rmtree(entry, ignore_errors=True)
            elif TEMPORARY_MARK in entry.name and now - entry.stat().st_mtime > 3600:
                with _folder_lock(entry, wait=False) as abandoned:
                    if abandoned:
                        shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def _publish(root: Path, temporary: Path, entry: Path, key: str, prefix: str, keyed: float):
    """Moves a finished temporary entry into place, cleans up, and reads the entry back, under the cache's lock.

    An entry of the same key that another process finished first is kept and
    read instead (removing it could break that process's memory map).

    Returns:
        What ``_read_entry`` gives for the entry.
    """
    with _folder_lock(root):
        found = _read_entry(entry, key) if entry.is_dir() else None
        if found is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            if entry.exists():  # a damaged entry
                shutil.rmtree(entry, ignore_errors=True)
            try:
                os.rename(temporary, entry)
            except OSError:
                shutil.rmtree(temporary, ignore_errors=True)
            found = _read_entry(entry, key)  # mapped before anyone's clean-up can remove it
        _clean_stale(root, prefix, entry.name, keyed)
    return found


def _load(
    folder: str | os.PathLike,
    cache_dir,
    target: str,
    skip_bad: bool,
    workers: int | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, SplitSummary]:
    """load_split plus its summary."""
    if target not in TARGETS:
        raise ConfigError(f"target must be one of {TARGETS}, got {target!r}")
    folder = Path(folder)
    paths = list_images(folder)
    workers = max(1, int(workers or min(8, os.cpu_count() or 1)))
    sink_factory_memory = lambda count, size: _MemorySink(count, (*size, 3), *_target_spec(target, size))  # noqa: E731

    if cache_dir is False:
        sink, summary = _decode_split(folder, paths, target, skip_bad, workers, progress, sink_factory_memory)
        _warn_problems(summary, folder, skip_bad)
        return (*sink.result(), summary)

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "splits"
    keyed = time.time()  # an entry keyed later than this one saw newer files, and is never cleaned up by it
    key, _ = _file_key(paths, target)
    prefix = _entry_prefix(folder, target)
    entry = root / f"{prefix}{key}"
    found = _read_entry(entry, key) if entry.is_dir() else None
    if found is not None:
        _warn_problems(found[2], folder, skip_bad)
        return found

    try:
        root.mkdir(parents=True, exist_ok=True)
        temporary = temporary_name(entry)
        temporary.mkdir()
    except OSError as error:
        warnings.warn(
            f"cannot write the cache in {root} ({error.strerror or error}); decoding {folder} into memory",
            PspnetWarning,
            stacklevel=3,
        )
        sink, summary = _decode_split(folder, paths, target, skip_bad, workers, progress, sink_factory_memory)
        _warn_problems(summary, folder, skip_bad)
        return (*sink.result(), summary)

    sink = None
    # Held until the entry is in place: another process's clean-up leaves this folder alone.
    with _folder_lock(temporary):
        try:

            def file_sink(count, size):
                nonlocal sink
                sink = _FileSink(temporary, count, (*size, 3), *_target_spec(target, size))
                return sink

            _, summary = _decode_split(folder, paths, target, skip_bad, workers, progress, file_sink)
            sink.close()
            meta = {
                "format": CACHE_FORMAT, "key": key, "target": target, "keyed": keyed, "created": time.time(),
                "summary": summary.to_json(),
            }
            # meta.json is written last: an entry without it is never trusted.
            (temporary / "meta.json").write_text(json.dumps(meta))
        except BaseException:
            if sink is not None:
                sink.abort()
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        found = _publish(root, temporary, entry, key, prefix, keyed)
    if found is None:
        raise DataError(f"the cache entry just written cannot be read back: {entry}")
    found[2].cached = False
    found[2].seconds = summary.seconds
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

