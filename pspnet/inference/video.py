"""Segmentation of a video: frames in, an overlay video (and a colour video) out.

``predict_video`` decodes a video with OpenCV, predicts every Nth frame
through a ``pspnet.inference.segmenter.Segmenter`` and writes the colours of the
model's classes over every frame at the source's frame rate and size; the frames it holds
are bounded (PENDING_BYTES, or one frame), however large N is. The videos are
written under temporary names and renamed into place when complete, so a crash
never leaves a half video under the final name.

Example:
    >>> segmenter = Segmenter.load("runs/demo-fast-classes/best.keras", batch_size=4)
    >>> predict_video(segmenter, "drive.mp4", "out", every=2)["files"]
    ['out/drive_overlay.mp4']
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from pspnet.errors import ConfigError, DataError
from pspnet.fileio import atomic_write

__all__ = ["predict_video"]

DEFAULT_FPS = 25.0  # for sources that report no frame rate
# Frames held while their key frames wait for a batch: a batch of key frames
# runs faster than one at a time (75 against 46 frames/s at --every 5 on the
# 2-core CPU), but not at any memory cost (--every 300 on 4K video).
PENDING_BYTES = 64 * 2**20


def _container(video: Path) -> tuple[str, str]:
    """(suffix, fourcc) of the outputs: AVI stays AVI (Motion JPEG), anything else becomes MP4."""
    if video.suffix.lower() == ".avi":
        return ".avi", "MJPG"
    return ".mp4", "mp4v"


def _frames(capture: cv2.VideoCapture, first: np.ndarray, video: Path) -> Iterator[np.ndarray]:
    """Yields (H, W, 3) RGB frames, starting with the BGR frame already read, until a read fails."""
    frame = first
    while True:
        if frame.shape != first.shape:
            size = f"{frame.shape[1]}x{frame.shape[0]}, not {first.shape[1]}x{first.shape[0]}"
            raise DataError(f"a frame is {size}: {video}")
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        ok, frame = capture.read()
        if not ok:
            return


def _segment(
    frames: Iterator[np.ndarray], segmenter, every: int, frame_bytes: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (rgb, train_ids) for each frame; frames 0, every, 2*every, ... are predicted.

    Where a batch of key frames and the frames after each fit in
    PENDING_BYTES, frames are read a chunk at a time (``every`` frames per key
    frame, at most a batch of key frames) and the key frames predicted in one
    call. Where even one key frame's run does not fit (a large ``every`` on
    large frames), each key frame is predicted alone and the frames after it
    are streamed with its map: at most one frame is held, however large
    ``every`` is.
    """
    keys_per_chunk = min(segmenter.batch_size, PENDING_BYTES // (every * frame_bytes))
    if keys_per_chunk < 1:
        yield from _stream(frames, _unpadded(segmenter), every)
        return
    while True:
        chunk = list(itertools.islice(frames, every * keys_per_chunk))  # (H, W, 3) RGB each
        if not chunk:
            return
        train_ids = segmenter.predict_ids(np.stack(chunk[::every]), label_size=chunk[0].shape[:2])  # (K, H, W)
        for position, rgb in enumerate(chunk):
            yield rgb, train_ids[position // every]


def _stream(frames: Iterator[np.ndarray], segmenter, every: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Predicts each key frame as it is read and yields the frames after it with its map."""
    held = None  # (H, W) train ids of the latest key frame
    for index, rgb in enumerate(frames):
        if index % every == 0:
            held = segmenter.predict_ids(rgb[None], label_size=rgb.shape[:2])[0]
        yield rgb, held


def _unpadded(segmenter):
    """The segmenter, or a copy of it that feeds the model single frames unpadded.

    Padding each key frame to the full batch would multiply the model's work.
    """
    if not getattr(segmenter, "pad_batch", False):
        return segmenter
    unpadded = copy.copy(segmenter)
    unpadded.pad_batch = False
    return unpadded


def _open_writer(path: Path, temporary: Path, fourcc: str, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """A VideoWriter on ``temporary`` (named ``path`` in errors) for (H, W) frames."""
    height, width = size
    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        writer.release()
        raise DataError(f"cannot write video (OpenCV has no {fourcc} {path.suffix} writer here): {path}")
    return writer


def _write_all(paths: Sequence[Path], write: Callable[[list[Path]], None], temporaries: tuple[Path, ...] = ()) -> None:
    """``atomic_write`` of several files: ``write(temporaries)`` once, then each is renamed over its path.

    When ``write`` raises, every temporary is deleted and no final file is touched.
    """
    if len(temporaries) == len(paths):
        write(list(temporaries))
        return
    path = paths[len(temporaries)]
    atomic_write(path, lambda temporary: _write_all(paths, write, (*temporaries, temporary)), suffix=path.suffix)


class _Source(NamedTuple):
    """An open video: its first frame (BGR), frame rate and the frame count its header reports."""

    first: np.ndarray  # (H, W, 3) BGR
    fps: float  # DEFAULT_FPS where the source reports none
    expected: int | None  # from the container's header; None when unknown


def _open_source(capture: cv2.VideoCapture, video: Path) -> _Source:
    """Reads the first frame and what the header says of the rest; DataError when no frame decodes."""
    ok, first = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        raise DataError(f"cannot read video (no frames decoded): {video}")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
    reported = capture.get(cv2.CAP_PROP_FRAME_COUNT)  # -1, 0 or NaN when unknown
    expected = int(reported) if math.isfinite(reported) and reported > 0 else None
    return _Source(first, fps, expected)


def _output_paths(out_dir: Path, video: Path, suffix: str, colour_video: bool) -> list[Path]:
    """The overlay video's path (and the colour video's), in ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{video.stem}_overlay{suffix}"]
    if colour_video:
        paths.append(out_dir / f"{video.stem}_color{suffix}")
    return paths


class _Encoder:
    """``write`` for ``_write_all``: segments the frames into its temporaries and counts them."""

    def __init__(
        self,
        paths: list[Path],
        frames: Iterator[tuple[np.ndarray, np.ndarray]],
        fourcc: str,
        source: _Source,
        alpha: float,
        classes,
        progress,
    ):
        self.paths, self.frames, self.fourcc, self.source = paths, frames, fourcc, source
        self.alpha, self.classes, self.progress = alpha, classes, progress
        self.num_frames = 0

    def __call__(self, temporaries: list[Path]) -> None:
        from pspnet.inference.viz import colorize, overlay

        writers = []
        try:
            for path, temporary in zip(self.paths, temporaries):
                writers.append(_open_writer(path, temporary, self.fourcc, self.source.fps, self.source.first.shape[:2]))
            for rgb, train_ids in self.frames:
                blended = overlay(rgb, train_ids, alpha=self.alpha, classes=self.classes)
                writers[0].write(cv2.cvtColor(blended, cv2.COLOR_RGB2BGR))
                if len(writers) > 1:
                    writers[1].write(cv2.cvtColor(colorize(train_ids, classes=self.classes), cv2.COLOR_RGB2BGR))
                self.num_frames += 1
                if self.progress is not None:
                    self.progress.update(1)
        finally:
            for writer in writers:
                writer.release()


def _check_options(every: int, alpha: float, video: Path) -> None:
    """Raises ConfigError for a bad ``every`` or ``alpha``, DataError for a missing video."""
    if every < 1:
        raise ConfigError(f"every must be at least 1, got {every}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha}")
    if not video.is_file():
        raise DataError(f"video not found: {video}")


def _report(
    video: Path,
    num_frames: int,
    expected: int | None,
    every: int,
    start: float,
    files: list[str],
    out_dir: Path,
    verbose: bool,
) -> dict:
    """``predict_video``'s result (and closing line); DataError when fewer frames came than the header said."""
    if expected is not None and num_frames < expected:
        raise DataError(
            f"video ended after {num_frames} of {expected} frames (truncated or corrupt); "
            f"wrote the {num_frames} frames done to {', '.join(files)}: {video}"
        )
    seconds = time.perf_counter() - start
    predicted = len(range(0, num_frames, every))
    frames_per_second = num_frames / seconds if seconds > 0 else float("inf")
    if verbose:
        print(
            f"video {video.name}: {num_frames} frames ({predicted} predicted) in {seconds:.1f} s, "
            f"{frames_per_second:.1f} frames/s; wrote {', '.join(files)}"
        )
    return {
        "num_frames": num_frames,
        "predicted_frames": predicted,
        "seconds": seconds,
        "frames_per_second": frames_per_second,
        "files": files,
        "out": str(out_dir),
    }


def predict_video(
    segmenter,
    video_path,
    out_dir,
    every: int = 1,
    colour_video: bool = False,
    alpha: float = 0.5,
    verbose: bool = True,
    classes=None,
) -> dict:
    """Segments a video and writes the overlay video (and optionally the colour video).

    Args:
        segmenter: a ``pspnet.inference.segmenter.Segmenter``; up to
            ``segmenter.batch_size`` key frames are predicted together (see ``_segment``).
        video_path: any video OpenCV reads (mp4, avi, mkv, ...).
        out_dir: where ``STEM_overlay.EXT`` (and ``STEM_color.EXT``) go; EXT is
            ``avi`` (Motion JPEG) for an AVI source, else ``mp4`` (mp4v). Created
            once the first frame is decoded.
        every: predict frames 0, every, 2*every, ...; the frames between reuse
            the latest prediction, so the output keeps every frame.
        colour_video: also write the class colours alone.
        alpha: weight of the colours in the overlay (0: the frame, 1: the colours).
        verbose: show a progress bar and print a summary line.
        classes: the ``ClassTable`` whose colours are drawn; None: the model's (``info.class_table()``).

    Returns:
        ``{"num_frames", "predicted_frames", "seconds", "frames_per_second",
        "files" (the paths written), "out"}``.

    Raises:
        ConfigError: ``every`` < 1 or ``alpha`` outside [0, 1].
        DataError: the video is missing, unreadable, truncated (after the frames
            decoded are written and renamed into place) or cannot be written.
    """
    video, out_dir = Path(video_path), Path(out_dir)
    _check_options(every, alpha, video)
    classes = segmenter.info.class_table() if classes is None else classes
    start = time.perf_counter()
    capture = cv2.VideoCapture(str(video))
    progress = None
    try:
        source = _open_source(capture, video)
        suffix, fourcc = _container(video)
        paths = _output_paths(out_dir, video, suffix, colour_video)
        if verbose:
            from tqdm.auto import tqdm

            progress = tqdm(total=source.expected, desc=video.name, unit="frame", disable=None)
        frames = _segment(_frames(capture, source.first, video), segmenter, every, source.first.nbytes)
        encoder = _Encoder(paths, frames, fourcc, source, alpha, classes, progress)
        # A read that fails early ends the frames like the end of the file does:
        # the frames done are written and renamed into place, then reported.
        _write_all(paths, encoder)
    finally:
        capture.release()
        if progress is not None:
            progress.close()
    files = [str(path) for path in paths]
    return _report(video, encoder.num_frames, source.expected, every, start, files, out_dir, verbose)
