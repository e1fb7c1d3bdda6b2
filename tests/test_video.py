"""pspnet.inference.video on tiny generated videos (32x48 frames) and an untrained fast model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import BatchRecorder

from pspnet.errors import ConfigError, DataError
from pspnet.inference.video import predict_video
from pspnet.models.modelfile import ModelInfo

NUM_FRAMES = 20
FPS = 10.0
HEIGHT, WIDTH = 32, 48


@pytest.fixture(scope="module")
def segmenter():
    """An untrained fast PSPNet taking any size, run at 32x48, four frames a batch."""
    import pspnet
    from pspnet.inference.segmenter import Segmenter
    from pspnet.models.modelfile import ModelInfo

    model = pspnet.build_pspnet("fast", input_shape=(None, None, 3))
    return Segmenter(model, ModelInfo(head="classes", num_classes=19, preset="fast"), (HEIGHT, WIDTH), batch_size=4)


def write_video(path: Path, fourcc: str = "MJPG", num_frames: int = NUM_FRAMES) -> Path:
    """Writes num_frames moving-bar frames of 32x48 at 10 fps; skips the test when OpenCV cannot."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} {path.suffix}")
    rng = np.random.default_rng(0)
    for index in range(num_frames):
        frame = rng.integers(0, 60, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        frame[:, 2 * index : 2 * index + 8] = (40, 160, 240)  # a bar that moves right
        writer.write(frame)
    writer.release()
    return path


def read_video(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frames decoded, fps, (height, width)) of a video file."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, frame.shape[:2]
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return count, fps, size


@pytest.mark.parametrize("suffix, fourcc", [(".avi", "MJPG"), (".mp4", "mp4v")])
def test_overlay_video_has_every_frame_at_source_size_and_rate(segmenter, tmp_path, suffix, fourcc):
    video = write_video(tmp_path / f"clip{suffix}", fourcc)
    out = tmp_path / "out"
    result = predict_video(segmenter, video, out, verbose=False)
    overlay = out / f"clip_overlay{suffix}"
    assert result["files"] == [str(overlay)]
    assert result["num_frames"] == NUM_FRAMES and result["predicted_frames"] == NUM_FRAMES
    assert result["out"] == str(out) and result["frames_per_second"] > 0
    assert read_video(overlay) == (NUM_FRAMES, FPS, (HEIGHT, WIDTH))
    assert sorted(path.name for path in out.iterdir()) == [overlay.name]  # no temporaries left


def test_every_predicts_every_nth_frame_and_writes_all(segmenter, tmp_path, monkeypatch, capsys):
    video = write_video(tmp_path / "clip.avi")
    predicted = []
    predict_ids = segmenter.predict_ids

    def spy(photos, label_size=None):
        predicted.append(len(photos))
        return predict_ids(photos, label_size)

    monkeypatch.setattr(segmenter, "predict_ids", spy)
    result = predict_video(segmenter, video, tmp_path / "out", every=5, verbose=True)
    assert sum(predicted) == 4 and result["predicted_frames"] == 4
    assert result["num_frames"] == NUM_FRAMES
    assert read_video(tmp_path / "out" / "clip_overlay.avi")[0] == NUM_FRAMES
    assert "video clip.avi: 20 frames (4 predicted) in " in capsys.readouterr().out


class CountingSegmenter:
    """A stand-in Segmenter whose k-th predicted frame gets train id k everywhere."""

    batch_size = 3
    info = ModelInfo(head="classes", num_classes=19)

    def __init__(self):
        self.count = 0

    def predict_ids(self, photos, label_size=None):
        ids = np.arange(self.count, self.count + len(photos), dtype=np.uint8)
        self.count += len(photos)
        return np.broadcast_to(ids[:, None, None], (len(photos), *label_size)).copy()


def test_frames_between_reuse_the_latest_prediction(tmp_path):
    from pspnet.palette import palette

    video = write_video(tmp_path / "clip.avi")
    out = tmp_path / "out"
    # every=3 at batch 3: chunks of 9 frames, so the reuse crosses chunk boundaries.
    predict_video(CountingSegmenter(), video, out, every=3, alpha=1.0, verbose=False)
    capture = cv2.VideoCapture(str(out / "clip_overlay.avi"))
    colours = palette()[:7].astype(np.float32)  # RGB of train ids 0-6
    found = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        mean = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).reshape(-1, 3).mean(axis=0)
        found.append(int(np.argmin(np.linalg.norm(colours - mean, axis=1))))
    capture.release()
    assert found == [index // 3 for index in range(NUM_FRAMES)]


def test_colour_video_is_written_beside_the_overlay(segmenter, tmp_path):
    video = write_video(tmp_path / "clip.avi")
    out = tmp_path / "out"
    result = predict_video(segmenter, video, out, colour_video=True, alpha=0.3, verbose=False)
    assert result["files"] == [str(out / "clip_overlay.avi"), str(out / "clip_color.avi")]
    assert read_video(out / "clip_color.avi") == (NUM_FRAMES, FPS, (HEIGHT, WIDTH))


def test_corrupt_file_names_it_and_leaves_no_folder(segmenter, tmp_path):
    video = tmp_path / "noise.mp4"
    video.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"cannot read video \(no frames decoded\): .*noise\.mp4"):
        predict_video(segmenter, video, tmp_path / "out", verbose=False)
    assert not (tmp_path / "out").exists()


def test_missing_file_is_a_data_error(segmenter, tmp_path):
    with pytest.raises(DataError, match=r"video not found: .*absent\.avi"):
        predict_video(segmenter, tmp_path / "absent.avi", tmp_path / "out", verbose=False)
    assert not (tmp_path / "out").exists()


def test_truncated_avi_keeps_the_frames_done_and_raises(segmenter, tmp_path):
    # An AVI cut in half keeps its header (20 frames) and decodes the frames before the cut.
    video = write_video(tmp_path / "clip.avi")
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"video ended after (\d+) of 20 frames \(truncated or corrupt\)") as caught:
        predict_video(segmenter, video, out, verbose=False)
    done = int(caught.value.args[0].split()[3])
    assert 0 < done < NUM_FRAMES
    assert str(video) in str(caught.value) and str(out / "clip_overlay.avi") in str(caught.value)
    assert read_video(out / "clip_overlay.avi")[0] == done
    assert [path.name for path in out.iterdir()] == ["clip_overlay.avi"]


def test_truncated_mp4_cannot_be_opened(segmenter, tmp_path):
    # OpenCV's mp4v writer puts the index (moov) at the end: a cut mp4 decodes nothing.
    video = write_video(tmp_path / "clip.mp4", "mp4v")
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read video \(no frames decoded\): .*clip\.mp4"):
        predict_video(segmenter, video, tmp_path / "out", verbose=False)


def test_a_crash_keeps_the_old_output_and_no_half_file(segmenter, tmp_path, monkeypatch):
    video = write_video(tmp_path / "clip.avi")
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip_overlay.avi").write_bytes(b"old")
    calls = []
    predict_ids = segmenter.predict_ids

    def crash_on_second_batch(photos, label_size=None):
        calls.append(len(photos))
        if len(calls) == 2:
            raise RuntimeError("killed")
        return predict_ids(photos, label_size)

    monkeypatch.setattr(segmenter, "predict_ids", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="killed"):
        predict_video(segmenter, video, out, verbose=False)
    assert [path.name for path in out.iterdir()] == ["clip_overlay.avi"]
    assert (out / "clip_overlay.avi").read_bytes() == b"old"


def test_every_below_one_is_a_config_error(segmenter, tmp_path):
    video = write_video(tmp_path / "clip.avi")
    with pytest.raises(ConfigError, match="every must be at least 1, got 0"):
        predict_video(segmenter, video, tmp_path / "out", every=0, verbose=False)
    assert not (tmp_path / "out").exists()


class ZeroSegmenter:
    """A stand-in Segmenter that predicts road (0) everywhere, in no time."""

    batch_size = 4
    info = ModelInfo(head="classes", num_classes=19)

    def predict_ids(self, photos, label_size=None):
        return np.zeros((len(photos), *label_size), np.uint8)


def test_every_300_holds_a_batch_of_frames_not_300(tmp_path):
    import tracemalloc

    # 302 frames of 640x480 (0.9 MB each): holding the 300 frames after a key
    # frame would take 276 MB; a batch of 4 frames and the writer's work, a few MB.
    height, width, count = 480, 640, 302
    video = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (width, height))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG .avi")
    frame = np.full((height, width, 3), 90, np.uint8)
    for index in range(count):
        frame[:, index % width] = 200
        writer.write(frame)
    writer.release()
    import pspnet.inference.viz  # noqa: F401  (its imports are not the video's memory)

    tracemalloc.start()
    try:
        result = predict_video(ZeroSegmenter(), video, tmp_path / "out", every=300, verbose=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (result["num_frames"], result["predicted_frames"]) == (count, 2)
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MB"  # 43 frames; measured 24 MB


def test_key_frames_are_not_padded_to_the_batch(tmp_path):
    from pspnet.inference.segmenter import Segmenter
    from pspnet.models.modelfile import ModelInfo

    model = BatchRecorder()  # a Keras-model stand-in: Segmenter pads its short batches
    segmenter = Segmenter(model, ModelInfo(head="classes", num_classes=19), (HEIGHT, WIDTH), batch_size=4)
    video = write_video(tmp_path / "clip.avi")
    result = predict_video(segmenter, video, tmp_path / "out", every=5, verbose=False)
    # One key frame in each batch of 4 frames: the model runs 4 images, not 4 padded batches of 4.
    assert sum(model.batches) == result["predicted_frames"] == 4
    assert segmenter.pad_batch  # the caller's segmenter is left as it was
