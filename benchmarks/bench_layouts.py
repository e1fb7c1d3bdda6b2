"""Official-layout benchmark: 2048x1024 PNG frames through the training pipeline and the evaluator.

    python benchmarks/bench_layouts.py frames pipeline evaluate --json layouts.json     # all three steps
    python benchmarks/bench_layouts.py frames --from-pairs ../shared/data/cityscapes_data
    python benchmarks/bench_layouts.py evaluate --model runs/cityscapes-lite-classes/best.keras

Three steps, run in the order given:

- ``frames``: writes ``--train`` (64) and ``--val`` (8) frames of 2048x1024 in
  the official layout (``leftImg8bit/`` PNG photos, ``gtFine/`` labelIds) into
  ``WORK/frames``: synthetic scenes (``pspnet.data.synth_layouts``), or with
  ``--from-pairs DIR`` the Kaggle pairs of ``DIR/train`` and ``DIR/val``
  upscaled (photos bicubic; labels decoded to train ids, mapped to official
  label ids, nearest neighbour). ``WORK`` (``--work``; default
  ``$PSPNET_CACHE/bench-layouts``) must lie outside the repository.
- ``pipeline``: in a fresh subprocess (its own peak resident memory,
  ``ru_maxrss``), ``open_split`` + ``load_arrays`` of the train frames, then
  ``--batches`` (16) augmented batches of 8 crops of 512x1024 from frames
  scaled 0.5-2.0 about a 1024x2048 base, made by ``SegmentationDataset`` in
  ``--workers`` (2) threads through Keras' own ``PyDatasetAdapter`` (the
  path ``model.fit`` takes). Reports images/s, CPU seconds per image, the
  share of the batch threads' time spent decoding PNGs, and peak memory.
- ``evaluate``: ``pspnet.inference.evaluate.evaluate`` of one model on the val frames at
  their full resolution, each mode in a fresh subprocess: the whole frame at
  the base size, sliding windows (``--slide``, 512x1024 every 341x683) and
  multi-scale (``--scales`` 0.75 1 1.25). The model is ``--model`` or an
  untrained ``--preset`` (lite) with random weights (its mIoU means nothing;
  its time is the point). Each evaluation runs ``--repeat`` (2) times; the
  last is reported (the first also traces the model's function).

Timings depend on what else runs: the 1-minute load average is recorded
before and after each step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

STEPS = ("frames", "pipeline", "evaluate")
FRAMES_JSON = "frames.json"  # WORK/frames.json: what the frames step wrote
DEFAULT_SLIDE = ((512, 1024), (341, 683))
DEFAULT_SCALES = (0.75, 1.0, 1.25)


def default_work() -> Path:
    """$PSPNET_CACHE/bench-layouts (or ~/.cache/pspnet/bench-layouts)."""
    from pspnet.fileio import default_cache_dir

    return default_cache_dir() / "bench-layouts"


def check_work(work: Path) -> Path:
    """The work folder, refused inside the repository (its frames are gigabytes, never committed)."""
    work = Path(work).expanduser().resolve()
    if work == REPO or REPO in work.parents:
        raise SystemExit(f"bench_layouts: the work folder must be outside the repository: {work}")
    return work


def machine() -> dict:
    """This machine and the versions that ran the measurements."""
    model = next(
        (line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    versions = {}
    for package in ("numpy", "opencv-python", "opencv-python-headless", "keras", "tensorflow", "jax", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "versions": versions,
        "keras_backend_env": os.environ.get("KERAS_BACKEND"),  # the backend each measurement used is in its row
    }


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- frames -------------------------------------------------------------------


def write_frames(
    work: Path,
    train: int = 64,
    val: int = 8,
    height: int = 1024,
    width: int = 2048,
    seed: int = 0,
    from_pairs: Path | None = None,
    workers: int | None = None,
) -> dict:
    """Writes the official-layout frames into ``work/frames`` (replaced) and describes them in ``work/frames.json``.

    Returns:
        The description: root, source, counts, frame size, seconds, megabytes on disk.
    """
    root = work / "frames"
    if root.exists():
        shutil.rmtree(root)
    started = time.perf_counter()
    if from_pairs is None:
        from pspnet.data.synth_layouts import write_cityscapes

        write_cityscapes(root, train=train, val=val, seed=seed, height=height, width=width, workers=workers)
        source = "synthetic scenes (pspnet.data.synth_layouts.write_cityscapes)"
    else:
        train, val = (
            _upscale_pairs(Path(from_pairs) / split, root, split, count, height, width, workers)
            for split, count in (("train", train), ("val", val))
        )
        source = f"Kaggle pairs of {from_pairs} upscaled (photos bicubic, labels nearest)"
    files = [path for path in root.rglob("*.png")]
    described = {
        "root": str(root),
        "source": source,
        "train": int(train),
        "val": int(val),
        "height": int(height),
        "width": int(width),
        "seconds": round(time.perf_counter() - started, 2),
        "megabytes": round(sum(path.stat().st_size for path in files) / 2**20, 1),
    }
    (work / FRAMES_JSON).write_text(json.dumps(described, indent=2) + "\n")
    return described


def _upscale_pairs(
    folder: Path, root: Path, split: str, count: int, height: int, width: int, workers: int | None
) -> int:
    """The first ``count`` pairs of ``folder`` as official frames (city "kaggle"); how many were written."""
    import cv2

    from pspnet.data.composites import read_pair
    from pspnet.data.files import list_images
    from pspnet.data.labels import decode_labels
    from pspnet.palette import train_id_to_label_id

    pairs = list_images(folder)[: int(count)] if folder.is_dir() else []
    if not pairs:
        raise SystemExit(f"bench_layouts: no pairs in {folder}")
    to_label_id = train_id_to_label_id()
    photos, labels = root / "leftImg8bit" / split / "kaggle", root / "gtFine" / split / "kaggle"
    photos.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)

    def one(job: tuple[int, Path]) -> None:
        number, path = job
        photo, label_rgb = read_pair(path)
        # Labels are decoded at the pairs' size (their JPEG colours snapped), then enlarged as ids.
        label_ids = to_label_id[decode_labels(label_rgb)]
        photo = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)
        label_ids = cv2.resize(label_ids, (width, height), interpolation=cv2.INTER_NEAREST)
        stem = f"kaggle_000000_{number:06d}"
        if not (
            cv2.imwrite(str(photos / f"{stem}_leftImg8bit.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
            and cv2.imwrite(str(labels / f"{stem}_gtFine_labelIds.png"), label_ids)
        ):
            raise SystemExit(f"bench_layouts: cannot write frame {stem} under {root}")

    with ThreadPoolExecutor(max_workers=max(1, int(workers or os.cpu_count() or 1))) as pool:
        list(pool.map(one, enumerate(pairs, start=1)))
    return len(pairs)


def read_frames(work: Path) -> dict:
    """What the frames step wrote (``work/frames.json``)."""
    path = work / FRAMES_JSON
    if not path.is_file():
        raise SystemExit(f"bench_layouts: no frames in {work}: run the frames step first ({path} not found)")
    return json.loads(path.read_text())


# --- pipeline (in its own process) ---------------------------------------------


class _Timed:
    """A lazy sequence whose ``__getitem__`` seconds (summed over threads) go to ``clock``."""

    def __init__(self, items, clock: list, lock: threading.Lock):
        self.items, self.clock, self.lock = items, clock, lock

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        started = time.perf_counter()
        item = self.items[index]
        with self.lock:
            self.clock[0] += time.perf_counter() - started
        return item


def _timed_dataset(photos, labels, settings: dict):
    """A SegmentationDataset that sums the seconds its batches and its decoding take (in every thread)."""
    from pspnet.data.pipeline import SegmentationDataset

    lock, decode_clock, batch_clock = threading.Lock(), [0.0], [0.0]

    class TimedDataset(SegmentationDataset):
        def __getitem__(self, index):
            started = time.perf_counter()
            batch = super().__getitem__(index)
            with lock:
                batch_clock[0] += time.perf_counter() - started
            return batch

    dataset = TimedDataset(
        _Timed(photos, decode_clock, lock),
        _Timed(labels, decode_clock, lock),
        batch_size=settings["batch_size"],
        image_size=tuple(settings["crop"]),
        base_size=tuple(settings["base_size"]),
        augment=True,
        seed=0,
        steps_per_epoch=settings["batches"],
        drop_remainder=True,
        workers=settings["workers"],
        use_multiprocessing=False,  # threads, as training runs it (drop_remainder too)
    )
    return dataset, decode_clock, batch_clock


def measure_pipeline(settings: dict) -> dict:
    """Times ``settings["batches"]`` augmented batches of the train frames, made the way ``model.fit`` makes them.

    Args:
        settings: root, batches, batch_size, crop (H, W), base_size (H, W), workers, cache_dir.

    Returns:
        images_per_s, cpu_s_per_image, decode_share, scan_s, peak_rss_mib and what was measured.
    """
    import keras
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from pspnet.data.layouts import open_split
    from pspnet.data.samples import load_arrays

    rss_imports = _peak_rss_mib()
    started = time.perf_counter()
    split = open_split(settings["root"], "train", "cityscapes")
    photos, labels, _ = load_arrays(split, cache_dir=settings["cache_dir"], workers=settings["workers"], progress=False)
    scan_s = time.perf_counter() - started
    dataset, decode_clock, batch_clock = _timed_dataset(photos, labels, settings)
    count, shapes, cpu_before = 0, set(), _cpu_s()
    started = time.perf_counter()
    for batch_photos, batch_ids in PyDatasetAdapter(dataset, shuffle=False).get_numpy_iterator():
        count += len(batch_photos)
        shapes.add((tuple(batch_photos.shape[1:3]), tuple(batch_ids.shape[1:3])))
    seconds = time.perf_counter() - started
    return {
        "backend": keras.backend.backend(),
        "frames": len(photos),
        "batches": settings["batches"],
        "batch_size": settings["batch_size"],
        "crop": list(settings["crop"]),
        "base_size": list(settings["base_size"]),
        "workers": settings["workers"],
        "images": count,
        "seconds": round(seconds, 3),
        "images_per_s": count / seconds,
        "cpu_s_per_image": (_cpu_s() - cpu_before) / count,
        "decode_share": decode_clock[0] / batch_clock[0],
        "batch_thread_s": round(batch_clock[0], 3),
        "decode_thread_s": round(decode_clock[0], 3),
        "scan_s": round(scan_s, 3),
        "batch_shapes": sorted(list(map(list, shape)) for shape in shapes),
        "rss_after_imports_mib": rss_imports,
        "peak_rss_mib": _peak_rss_mib(),
    }


# --- evaluation (each mode in its own process) ----------------------------------


def build_model(path: Path, preset: str, base_size: tuple[int, int]) -> Path:
    """Saves an untrained ``preset`` (random weights, any input size) as ``path``, trained size ``base_size``."""
    from pspnet import build_pspnet
    from pspnet.data.classes import CITYSCAPES
    from pspnet.models.modelfile import ModelInfo, save_model

    model = build_pspnet(
        preset=preset, num_classes=CITYSCAPES.num_classes, input_shape=(None, None, 3), backbone_weights=None
    )
    info = ModelInfo(
        head="classes",
        num_classes=CITYSCAPES.num_classes,
        preset=preset,
        image_size=tuple(base_size),
        classes=CITYSCAPES.to_json(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, path, info)
    return path


def eval_modes(slide=DEFAULT_SLIDE, scales=DEFAULT_SCALES) -> dict:
    """The three modes: name -> (slide, scales)."""
    return {"whole": (None, None), "slide": (slide, None), "multiscale": (None, tuple(scales))}


def measure_evaluation(settings: dict) -> dict:
    """``pspnet.inference.evaluate.evaluate`` of one mode on the val frames, ``settings["repeat"]`` times;
    the last reported.

    Args:
        settings: model, root, out, mode, slide, scales, base_size (or None: the model's), batch_size,
            repeat, cache_dir.

    Returns:
        seconds (scoring only, the last run), seconds_per_image, wall_s (load and scan included),
        first_seconds, mean_iou, the inference mode and peak_rss_mib.
    """
    import keras

    from pspnet.inference.evaluate import EvalConfig, evaluate

    base = settings["base_size"]
    config = EvalConfig(
        model=settings["model"],
        data=settings["root"],
        out=settings["out"],
        batch_size=settings["batch_size"],
        image_size=None if base is None else tuple(base),
        cache_dir=settings["cache_dir"],
        verbose=False,
        layout="cityscapes",
        slide=settings["slide"],
        scales=settings["scales"],
    )
    runs = []
    for _ in range(max(1, int(settings["repeat"]))):
        started = time.perf_counter()
        results = evaluate(config)
        runs.append((results, time.perf_counter() - started))
    results, wall = runs[-1]
    return {
        "mode": settings["mode"],
        "backend": keras.backend.backend(),
        "images": results["num_images"],
        "seconds": results["seconds"],
        "seconds_per_image": results["seconds"] / results["num_images"],
        "first_seconds": runs[0][0]["seconds"],
        "wall_s": round(wall, 3),
        "mean_iou": results["mean_iou"],
        "inference": results["inference"],
        "batch_size": settings["batch_size"],
        "repeat": len(runs),
        "peak_rss_mib": _peak_rss_mib(),
    }


_MEASURES = {"pipeline": measure_pipeline, "evaluate": measure_evaluation}


def in_child(step: str, settings: dict) -> dict:
    """Runs ``measure_<step>(settings)`` in a fresh Python process (its own peak memory) and returns its result."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_child", step, json.dumps(settings)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    if result.returncode:
        raise SystemExit(f"bench_layouts: the {step} subprocess failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the steps --------------------------------------------------------------------


def run_pipeline(work: Path, args) -> dict:
    """The pipeline step: one subprocess over the train frames."""
    frames = read_frames(work)
    settings = {
        "root": frames["root"],
        "batches": args.batches,
        "batch_size": args.batch_size,
        "crop": list(args.crop),
        "base_size": list(args.base_size),
        "workers": args.workers,
        # --lazy: no decoded cache, each frame decoded when its batch is made (as a split too large to cache)
        "cache_dir": False if args.lazy else str(work / "cache"),
    }
    return {
        "frame_size": [frames["height"], frames["width"]],
        "lazy": bool(args.lazy),
        **in_child("pipeline", settings),
    }


def run_evaluate(work: Path, args) -> dict:
    """The evaluate step: the model (given or built), then one subprocess per mode."""
    frames = read_frames(work)
    model, base = args.model, args.base_size
    if model is None:
        model = build_model(work / "models" / f"untrained-{args.preset}.keras", args.preset, base)
    elif not args.base_size_given:
        base = None  # the model's own trained size
    results = {"model": str(model), "untrained": args.model is None, "frame_size": [frames["height"], frames["width"]]}
    slide = (tuple(args.slide[:2]), tuple(args.slide[2:]))
    for mode, (mode_slide, scales) in eval_modes(slide, args.scales).items():
        settings = {
            "model": str(model),
            "root": frames["root"],
            "out": str(work / f"eval-{mode}"),
            "mode": mode,
            "slide": mode_slide,
            "scales": scales,
            "base_size": base,
            "batch_size": args.eval_batch,
            "repeat": args.repeat,
            "cache_dir": str(work / "cache"),
        }
        results[mode] = in_child("evaluate", settings)
    return results


def report(results: dict) -> str:
    """The results as a few lines of text."""
    lines = [
        f"{results['machine']['date']}: {results['machine']['cpus']} CPUs ({results['machine']['cpu']}), "
        f"Python {results['machine']['python']}, "
        + ", ".join(f"{name} {version}" for name, version in results["machine"]["versions"].items())
    ]
    if "frames" in results:
        frames = results["frames"]
        lines.append(
            f"frames: {frames['train']} train + {frames['val']} val of {frames['width']}x{frames['height']} "
            f"PNG, {frames['source']}; {frames['megabytes']} MiB in {frames['seconds']} s"
        )
    if "pipeline" in results:
        row = results["pipeline"]
        lines.append(
            f"pipeline: {row['images_per_s']:.2f} images/s ({row['batches']} batches of {row['batch_size']} "
            f"{row['crop'][0]}x{row['crop'][1]} crops, base {row['base_size'][0]}x{row['base_size'][1]}, "
            f"{row['workers']} worker threads, {row['backend']}); {row['cpu_s_per_image']:.3f} CPU s/image, "
            f"decoding {100 * row['decode_share']:.0f}% of the batch time; peak RSS "
            f"{row['peak_rss_mib']:.0f} MiB ({row['rss_after_imports_mib']:.0f} after imports); "
            f"scan {row['scan_s']:.1f} s"
        )
    if "evaluate" in results:
        evaluation = results["evaluate"]
        lines.append(f"evaluate {evaluation['model']}" + (" (untrained)" if evaluation["untrained"] else ""))
        for mode in eval_modes():
            row = evaluation[mode]
            lines.append(
                f"  {mode:<10} {row['seconds_per_image']:8.2f} s/image  mIoU {row['mean_iou']:.4f}  "
                f"peak RSS {row['peak_rss_mib']:.0f} MiB  {json.dumps(row['inference'])}"
            )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("steps", nargs="+", choices=STEPS, help="steps to run, in this order")
    parser.add_argument(
        "--work", default=None, help="work folder, outside the repository (default: $PSPNET_CACHE/bench-layouts)"
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    frames = parser.add_argument_group("frames")
    frames.add_argument("--train", type=int, default=64, help="train frames (64)")
    frames.add_argument("--val", type=int, default=8, help="val frames (8)")
    frames.add_argument("--frame-size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    frames.add_argument("--from-pairs", default=None, help="upscale the Kaggle pairs of DIR/train and DIR/val")
    pipeline = parser.add_argument_group("pipeline")
    pipeline.add_argument("--batches", type=int, default=16, help="batches to time (16)")
    pipeline.add_argument("--batch-size", type=int, default=8)
    pipeline.add_argument("--crop", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    pipeline.add_argument(
        "--base-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="base size of the pipeline and the evaluation (1024 2048)",
    )
    pipeline.add_argument("--workers", type=int, default=2, help="PyDataset worker threads (2)")
    pipeline.add_argument(
        "--lazy",
        action="store_true",
        help="decode every frame when its batch is made, not from the decoded cache (a split of "
        "one size under 4 GiB is cached; the 2,975 official train frames are not)",
    )
    evaluation = parser.add_argument_group("evaluate")
    evaluation.add_argument("--model", default=None, help="a .keras model (default: an untrained --preset)")
    evaluation.add_argument("--preset", default="lite", help="preset of the untrained model (lite)")
    evaluation.add_argument(
        "--slide",
        type=int,
        nargs=4,
        default=(512, 1024, 341, 683),
        metavar=("CROP_H", "CROP_W", "STRIDE_H", "STRIDE_W"),
    )
    evaluation.add_argument("--scales", type=float, nargs="+", default=DEFAULT_SCALES)
    evaluation.add_argument("--eval-batch", type=int, default=2, help="images or windows per forward pass (2)")
    evaluation.add_argument("--repeat", type=int, default=2, help="evaluations per mode; the last is reported (2)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["_child"]:  # a measurement subprocess: one JSON line out
        print(json.dumps(_MEASURES[argv[1]](json.loads(argv[2]))))
        return {}
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the untrained model is built in this process
    args.base_size_given = args.base_size is not None
    args.base_size = tuple(args.base_size or (1024, 2048))
    work = check_work(Path(args.work) if args.work else default_work())
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine(), "work": str(work), "load_average": {"before": os.getloadavg()[0]}}
    for step in [step for step in STEPS if step in args.steps]:
        if step == "frames":
            results["frames"] = write_frames(work, args.train, args.val, *args.frame_size, from_pairs=args.from_pairs)
        elif step == "pipeline":
            results["pipeline"] = run_pipeline(work, args)
        else:
            results["evaluate"] = run_evaluate(work, args)
        results["load_average"][f"after_{step}"] = os.getloadavg()[0]
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
