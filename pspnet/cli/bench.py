"""``pspnet-bench models|train|runtimes``: the speed tables of docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pspnet.cli.common import _check_writable, _count, _image_size, _Parser, _positive, _run
from pspnet.fileio import atomic_write_text


def main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-bench SECTION ...``: the speed tables of docs/BENCHMARKS.md, one subcommand each.

    ``pspnet-bench models [--presets ...] [--image-size 256] [--batch-size N] [--steps N]``
    prints, per preset: parameters, forward GFLOPs per image, training and inference
    images/s. ``train`` and ``runtimes`` are the other tables.
    """
    parser = _bench_parser()
    args = parser.parse_args(argv)
    if args.section == "runtimes":
        return _run(parser.prog, lambda: _bench_runtimes(args))
    # The JSON file is checked first: a folder that cannot take it fails before a long measurement.
    measure = _bench_train if args.section == "train" else _bench_models
    return _run(parser.prog, lambda: _check_writable(args.json) or measure(args), out=args.json)


def _bench_models(args) -> int:
    """``pspnet-bench models``: measures and prints the models table."""
    import dataclasses
    import json

    import keras

    from pspnet.bench.models import benchmark_models, format_models_table
    from pspnet.bench.peaks import compute_dtype, describe_peaks

    def progress(row) -> None:
        print(
            f"{row.preset}, {row.dtype_policy}: {row.train_images_per_s:.2f} training, "
            f"{row.infer_images_per_s:.2f} inference images/s",
            file=sys.stderr,
            flush=True,
        )

    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPU cores", file=sys.stderr)
    rows = benchmark_models(
        args.presets,
        progress=progress,
        image_size=args.image_size,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        num_classes=args.num_classes,
        dtype_policies=args.dtype_policy or [None],
    )
    peaks = {compute_dtype(row.dtype_policy): (row.peak_tflops, row.peak_source) for row in rows}
    print(describe_peaks(dict(sorted(peaks.items()))), file=sys.stderr)
    print(format_models_table(rows))
    if args.json:
        atomic_write_text(args.json, json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
    return 0


def _bench_parser() -> argparse.ArgumentParser:
    """The parser of ``pspnet-bench`` (models, train, runtimes)."""
    from pspnet.models.presets import PRESETS

    parser = _Parser(
        prog="pspnet-bench",
        description="Speed benchmarks on this machine (backend: KERAS_BACKEND, default tensorflow).",
    )
    sections = parser.add_subparsers(dest="section", required=True, metavar="SECTION")
    _add_bench_models_parser(sections, PRESETS)
    _add_bench_train_parser(sections, PRESETS)
    _add_bench_runtimes_parser(sections)
    return parser


def _add_bench_models_parser(sections, presets) -> None:
    """The ``pspnet-bench models`` subcommand and its flags."""
    models = sections.add_parser(
        "models",
        help="parameters, GFLOPs and training/inference images/s of each preset",
        description="For each preset: parameters, forward GFLOPs per image, training images/s "
        "(train_on_batch, Adam, sparse cross-entropy from logits) and inference images/s "
        "(predict_on_batch), timed after warm-up steps on random photos.",
    )
    models.add_argument("--presets", nargs="+", choices=presets, default=list(presets), help="presets to measure")
    models.add_argument("--image-size", type=_image_size, default=(256, 256), help="SIZE or HEIGHTxWIDTH (256)")
    models.add_argument("--batch-size", type=_positive, default=2, help="images per step (2)")
    models.add_argument("--steps", type=_positive, default=3, help="timed steps per measurement (3)")
    models.add_argument("--warmup", type=int, default=1, help="untimed steps before timing (1)")
    models.add_argument("--num-classes", type=_positive, default=19, help="classes of the logits head (19)")
    models.add_argument(
        "--dtype-policy",
        nargs="+",
        default=None,
        help="Keras dtype policies, each a row per preset: float32, mixed_bfloat16, mixed_float16, or auto "
        "(what pspnet-train --precision auto picks for the preset here); default: the global policy",
    )
    models.add_argument("--json", default=None, help="also write the rows to this JSON file")


def _add_bench_runtimes_parser(sections) -> None:
    """The ``pspnet-bench runtimes`` subcommand and its flags."""
    runtimes = sections.add_parser(
        "runtimes",
        help="inference images/s (and val scores) of a trained model in Keras, ONNX Runtime and LiteRT",
        description="Exports --model to ONNX and LiteRT (and int8 LiteRT with --calibration) in a temporary "
        "folder and times predict_on_batch in each runtime at batch 1 and 8; with --data also scores each "
        "on that split.",
    )
    runtimes.add_argument("--model", required=True, help="a .keras model file")
    runtimes.add_argument(
        "--data", default=None, help="a data set root (any layout) or a split folder of pairs to score each runtime on"
    )
    runtimes.add_argument("--split", default="val", help="the split of a data set root (val)")
    runtimes.add_argument(
        "--layout",
        choices=("pairs", "cityscapes", "folders"),
        default=None,
        help="the data set's layout (default: detected from its folders)",
    )
    runtimes.add_argument("--calibration", default=None, help="photos for an int8 LiteRT row")
    runtimes.add_argument("--steps", type=_positive, default=5, help="timed calls per batch size (5)")
    runtimes.add_argument("--cache-dir", default=None, help="decoded-split cache (as pspnet-evaluate)")


def _add_bench_train_parser(sections, presets) -> None:
    """The ``pspnet-bench train`` subcommand and its flags."""
    train = sections.add_parser(
        "train",
        help="the seed notebook's recipe against each preset trained the package's way",
        description="One table: training images/s of the seed notebook's recipe (its model, float32, "
        "MSE, Adam 1e-3, batch 10, fit on in-memory arrays) and of each preset trained the package's "
        "way (augmenting input pipeline, this machine's best settings), the ratio between them, "
        "inference images/s, the input pipeline alone, achieved TFLOP/s and share of the machine's peak.",
    )
    train.add_argument("--presets", nargs="+", choices=presets, default=list(presets), help="presets to measure (all)")
    train.add_argument("--image-size", type=_positive, default=256, help="side of the square images (256)")
    train.add_argument("--steps", type=_positive, default=3, help="timed steps (executions) per row (3)")
    train.add_argument("--warmup", type=_positive, default=1, help="untimed steps before timing (1)")
    train.add_argument(
        "--no-seed-recipe",
        dest="seed_recipe",
        action="store_false",
        help="leave out the seed notebook's recipe (no speed-up column)",
    )
    train.add_argument(
        "--pipeline-batches", type=_count, default=40, help="batches timed for the input-pipeline row (40; 0: no row)"
    )
    train.add_argument("--workers", type=_positive, default=None, help="input pipeline threads (min(4, cores))")
    train.add_argument(
        "--num-classes",
        type=_positive,
        default=19,
        help="classes of the presets' heads and of the random labels (19, the Cityscapes ones)",
    )
    train.add_argument("--batch-size", type=_positive, default=None, help="override the machine's batch size")
    train.add_argument(
        "--precision",
        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
        default=None,
        help="override the machine's dtype policy (auto: what pspnet-train --precision auto picks per preset)",
    )
    train.add_argument(
        "--jit-compile", action=argparse.BooleanOptionalAction, default=None, help="override the machine's XLA setting"
    )
    train.add_argument(
        "--steps-per-execution", type=_positive, default=None, help="override the machine's batches per compiled call"
    )
    train.add_argument("--json", default=None, help="also write the machine and the rows to this JSON file")


def _bench_train(args) -> int:
    """``pspnet-bench train``: measures and prints the training-speed table."""
    import dataclasses
    import json

    from pspnet.bench.peaks import describe_peaks
    from pspnet.bench.training import format_speed_table, speed_table

    overrides = {
        name: getattr(args, name)
        for name in ("batch_size", "precision", "jit_compile", "steps_per_execution")
        if getattr(args, name) is not None
    }

    def progress(row) -> None:
        print(f"{row.name}: {row.train_images_per_s:.2f} images/s", file=sys.stderr, flush=True)

    machine, peaks, rows = speed_table(
        args.presets,
        args.image_size,
        steps=args.steps,
        warmup=args.warmup,
        seed_recipe=args.seed_recipe,
        pipeline_batches=args.pipeline_batches,
        workers=args.workers,
        overrides=overrides,
        progress=progress,
        num_classes=args.num_classes,
    )
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    print(
        f"{machine['device']} x{machine['devices']} ({machine['kind']}, {machine['cores']} CPU cores"
        + (f", driver {machine['driver']}" if machine["driver"] else "")
        + f"); backend {machine['backend']}"
    )
    print(versions)
    print(
        f"{describe_peaks(peaks)}; {args.image_size}x{args.image_size} images of "
        f"{args.num_classes} classes, "
        f"{args.steps} timed steps after {args.warmup} untimed"
    )
    print(format_speed_table(rows))
    if args.json:
        atomic_write_text(
            args.json,
            json.dumps(
                {
                    "machine": machine,
                    "peaks": {dtype: {"tflops": tflops, "source": source} for dtype, (tflops, source) in peaks.items()},
                    "rows": [dataclasses.asdict(row) for row in rows],
                },
                indent=2,
            ),
        )
    return 0


def _bench_runtimes(args) -> int:
    """``pspnet-bench runtimes``: exports, times (and with --data scores) the model in each runtime."""
    import tempfile

    import keras

    from pspnet.bench.runtimes import benchmark_runtimes, format_runtimes_table

    val = None
    if args.data:  # any layout; a data set of other classes than the model's is refused before anything runs
        from pspnet.data.layouts import resolve_split
        from pspnet.data.samples import load_arrays
        from pspnet.inference.evaluate import check_classes
        from pspnet.models.modelfile import load_model

        split = resolve_split(args.data, args.split, args.layout)
        check_classes(load_model(args.model)[1], split, args.model)
        val = load_arrays(split, cache_dir=args.cache_dir, progress=False)[:2]
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPU cores", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="pspnet-bench-") as work:
        rows = benchmark_runtimes(
            args.model,
            work,
            steps=args.steps,
            val=val,
            calibration=args.calibration,
            progress=lambda row: print(f"{row.runtime}: {row.images_per_s}", file=sys.stderr),
        )
    print(format_runtimes_table(rows))
    return 0
