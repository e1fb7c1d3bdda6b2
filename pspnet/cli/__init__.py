"""Command-line entry points: pspnet-data, -train, -evaluate, -predict, -export, -bench.

The only module that parses arguments and prints errors for people: every
known failure (``PspnetError``, a bad flag, any ``OSError`` such as a missing
file, a read-only folder or a full disk, a Keras backend that is misspelt or
not installed) ends in one line ``<prog>: error: <what>: <file>`` and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from pspnet.errors import ConfigError, PspnetError, first_line
from pspnet.fileio import atomic_write_text, final_name, temporary_name

EXIT_ERROR = 1  # a known failure (bad file, bad data)
EXIT_USAGE = 2  # a bad flag (argparse's own convention)
EXIT_INTERRUPTED = 130

# The backends pspnet runs on, and what each needs installed (module, what to tell).
BACKENDS = {"tensorflow": ("tensorflow", "TensorFlow: pip install tensorflow"),
            "jax": ("jax", "JAX: pip install jax"),
            "torch": ("torch", "PyTorch: pip install torch")}
OTHER_KERAS_BACKENDS = ("numpy", "openvino")  # Keras has them; pspnet's training and models are not tested on them
# Failures that mean the output cannot be written (disk full, read-only, quota), whatever call met them.
WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line, without the usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _one_line_warnings(prog: str) -> None:
    """Shows warnings as ``prog: warning: message`` without source lines."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show


def _keras_backend_name() -> tuple[str, str]:
    """The backend Keras will load, and where it is set (as Keras reads it: the variable, then keras.json)."""
    import json

    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], "KERAS_BACKEND"
    home = Path(os.environ.get("KERAS_HOME") or Path("~/.keras").expanduser())
    try:
        settings = json.loads((home / "keras.json").read_text())
    except (OSError, ValueError):  # none, or unreadable: Keras falls back to tensorflow too
        return "tensorflow", ""
    backend = settings.get("backend", "tensorflow") if isinstance(settings, dict) else "tensorflow"
    return str(backend), str(home / "keras.json")


def _check_backend() -> None:
    """Raises ``ConfigError`` in one line for a backend that is misspelt, unsupported or not installed.

    Checked before Keras loads: Keras would end in a traceback of its own.
    """
    import importlib.util

    name, source = _keras_backend_name()
    where = f"KERAS_BACKEND={name}" if source == "KERAS_BACKEND" else f"backend {name!r} in {source}"
    supported = f"({', '.join(BACKENDS)})"
    if name in OTHER_KERAS_BACKENDS:
        raise ConfigError(f"{where} is a Keras backend pspnet does not run on; use one of {supported}")
    if name not in BACKENDS:
        raise ConfigError(f"{where} is not a Keras backend {supported}")
    module, needs = BACKENDS[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(f"the {name} backend needs {needs}")


def _start_backend(start_runtime: bool = True) -> None:
    """Sets the process up before Keras loads: heap padding, then a quiet start.

    Only entry points call it: importing the package changes nothing in the
    process (see pspnet.allocator for why the padding must come first). With
    ``TF_CONFIG`` set, or ``start_runtime`` False, the runtime is left
    unstarted: a multi-worker strategy must be created before TensorFlow's
    first op, and ``jax.distributed`` started before JAX's (pspnet.training.distribute).
    """
    from pspnet._quiet import import_keras_quietly
    from pspnet.allocator import pad_heap

    _check_backend()
    pad_heap()
    try:
        import_keras_quietly(start_runtime=start_runtime and not os.environ.get("TF_CONFIG"))
    except ImportError as error:  # installed, but broken (a missing library, a version clash)
        raise ConfigError(f"cannot load the Keras backend: {first_line(error)}") from None


def _os_error_line(error: OSError, out: str | os.PathLike | None = None) -> str:
    """One line for a failed file operation: the file (or the output) and the reason.

    A write that fails (disk full, read-only folder) says ``cannot write FILE``;
    a temporary file is named by the file it was to become, and an error that
    names no file (h5py's) by the command's output.
    """
    name = error.filename or error.filename2
    # os.strerror: h5py's errors hold many lines of HDF5's report where the reason goes.
    reason = os.strerror(error.errno) if error.errno else (error.strerror or first_line(error))
    if name is not None:
        name = final_name(name)
    if error.errno == errno.EEXIST and name is not None and not Path(name).is_dir():
        return f"not a folder: {name}"  # a file stands where a folder is to be made
    if error.errno in WRITE_ERRNOS:
        if name is not None:
            return f"cannot write {name}: {reason}"
        return f"cannot write under {out}: {reason}" if out else f"cannot write: {reason}"
    return f"{reason}: {name}" if name is not None else reason


def _run(prog: str, body: Callable[[], int | None], interrupted: str = "", backend: bool = True,
         start_runtime: bool = True, out: str | os.PathLike | None = None) -> int:
    """Runs a command body, turning known failures into one line and an exit code.

    Args:
        prog: the command's name, which starts every line it prints.
        body: the command's work (arguments already parsed).
        interrupted: what to add to the line printed on Ctrl-C.
        backend: set the process up for Keras first (False: the body needs no Keras).
        start_runtime: let the backend find its devices first (False: the body
            must configure them first, as ``pspnet-train --distribute``).
        out: what the command writes, named when a write fails without naming its file.
    """
    _one_line_warnings(prog)
    # FFmpeg (OpenCV's video reader) would print its own lines about a damaged video before ours.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        if backend:
            _start_backend(start_runtime)
        return int(body() or 0)
    except PspnetError as error:
        print(f"{prog}: error: {error.command_line_message()}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:  # a missing file, a read-only folder, a full disk, a denied permission...
        print(f"{prog}: error: {_os_error_line(error, out)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        # On its own line: a progress bar may hold the cursor.
        print(f"\n{prog}: interrupted" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return EXIT_INTERRUPTED


def _check_writable(path: str | None) -> None:
    """Writes and deletes an empty temporary beside ``path`` (a --json file).

    A folder that is missing or read-only then fails before a long measurement,
    not after it.
    """
    if path is not None:
        probe = temporary_name(path)
        probe.touch()
        probe.unlink()


def _positive(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _count(text: str) -> int:
    """argparse type: a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text!r}")
    return value


def _add_model_arguments(parser: argparse.ArgumentParser, batch_size: int, quiet_help: str) -> None:
    """The flags shared by the commands that run a saved model (evaluate, predict)."""
    parser.add_argument("--model", required=True,
                        help="a .keras model file (RUN/best.keras), or one pspnet-export wrote (.onnx, .tflite, "
                             "a SavedModel folder)")
    parser.add_argument("--batch-size", type=_positive, default=batch_size,
                        help=f"images per forward pass ({batch_size})")
    parser.add_argument("--image-size", type=_positive, default=None,
                        help="side of the square input for models that take any size (default: the size the "
                             "model was trained at, 256 if its file does not say)")
    parser.add_argument("--head", choices=("classes", "rgb"), default=None,
                        help="override the detected output head")
    parser.add_argument("--quiet", action="store_true", help=quiet_help)


# --- pspnet-data ------------------------------------------------------------


def _data_parser() -> argparse.ArgumentParser:
    """The parser of ``pspnet-data`` (synth, inspect)."""

    def side(text: str) -> int:
        value = int(text)
        if value < 8 or value % 8:
            raise argparse.ArgumentTypeError(f"expected a multiple of 8, at least 8, got {text!r}")
        return value

    layouts = ("pairs", "cityscapes", "folders")  # pspnet.data.layouts.LAYOUTS, without importing the data layer
    parser = _Parser(prog="pspnet-data", description="Make and inspect data sets (pairs, cityscapes, folders).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    synth = commands.add_parser(
        "synth", help="write a synthetic data set in one of the layouts",
        description="Write synthetic street scenes: as photo|label JPEG composites like the Kaggle "
        "cityscapes-image-pairs files (OUT/train/1.jpg.., --layout pairs), in the official Cityscapes layout "
        "(OUT/leftImg8bit + OUT/gtFine, frames SIZE x 2*SIZE) or as image/mask folders with five classes of their "
        "own (OUT/images, OUT/masks, OUT/dataset.json; images SIZE x 5/3*SIZE).",
    )
    synth.add_argument("out", metavar="OUT", help="data folder to create")
    synth.add_argument("--layout", choices=layouts, default="pairs", help="the layout to write (pairs)")
    synth.add_argument("--train", type=_count, default=200, help="training images (200)")
    synth.add_argument("--val", type=_count, default=40, help="validation images (40)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (0)")
    synth.add_argument("--size", type=side, default=256,
                       help="side of each half of a pair, or the height of a frame, in pixels (256)")
    synth.add_argument("--thickness", type=float, default=1.0,
                       help="width factor of poles, persons and grass strips, 1 to 4 (1; the demo set uses 2)")
    synth.add_argument("--overwrite", action="store_true", help="replace the existing set in OUT")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    inspect = commands.add_parser(
        "inspect", help="summarise a data set",
        description="The layout, the classes and their pixel shares, the image sizes and the problems found, "
        "per split of a data set root (pairs: of a split folder, or of DIR/train and DIR/val, with the decode "
        "distances of the label halves). What was read is cached (see --cache-dir).",
    )
    inspect.add_argument("folder", metavar="ROOT", help="a data set root, or a split folder of pairs")
    inspect.add_argument("--layout", choices=layouts, default=None, help="the layout (default: detected)")
    inspect.add_argument("--split", default=None, help="the split to inspect (default: every split there)")
    inspect.add_argument(
        "--cache-dir", default=None,
        help="cache folder (default: $PSPNET_CACHE or ~/.cache/pspnet: splits/ for pairs, scans/ for the others)",
    )
    inspect.add_argument("--no-cache", action="store_true", help="read in memory, write no cache")
    inspect.add_argument("--skip-bad", action="store_true", help="leave unusable files out, with a warning, "
                         "and list them as problems")
    inspect.add_argument("--far", type=int, default=None, help="distance counted as far from the palette (30)")
    inspect.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _data_synth(args) -> int:
    """``pspnet-data synth``."""
    from pathlib import Path

    if args.layout == "pairs":
        from pspnet.data.synth import write_synthetic_set

        out = write_synthetic_set(
            args.out, train=args.train, val=args.val, seed=args.seed, size=args.size,
            overwrite=args.overwrite, progress=not args.quiet, thickness=args.thickness,
        )
        for split, number in (("train", args.train), ("val", args.val)):
            print(f"wrote {number} pairs of {args.size}x{2 * args.size} to {Path(out) / split}")
        return 0
    from pspnet.data.synth_layouts import write_layout

    out, (height, width) = write_layout(args.out, args.layout, train=args.train, val=args.val, seed=args.seed,
                                        size=args.size, overwrite=args.overwrite, thickness=args.thickness)
    photos, labels = ("leftImg8bit", "gtFine") if args.layout == "cityscapes" else ("images", "masks")
    for split, number in (("train", args.train), ("val", args.val)):
        print(f"wrote {number} {args.layout} images of {width}x{height} to {out / photos / split} "
              f"(labels in {out / labels / split})")
    if args.layout == "folders":
        print(f"classes in {out / 'dataset.json'}")
    return 0


def _data_is_pairs(folder: Path, layout: str | None) -> bool:
    """Whether ``inspect`` reads ``folder`` as pairs: forced, or a split folder, or a root of train/ val/ composites.

    A folder without sub-folders counts as a split folder of composites (its
    problems, an empty folder included, are then the pairs' own messages).
    """
    from pspnet.data.layouts import detect_layout

    if layout is not None:
        return layout == "pairs"
    if not folder.is_dir():
        return True  # "data folder not found", as before
    if not any(entry.is_dir() for entry in os.scandir(folder)):
        return True
    return detect_layout(folder) == "pairs"


def _data_inspect_pairs(args, folder: Path) -> int:
    """``pspnet-data inspect`` of pairs: today's report, per split folder."""
    from pspnet.data import FAR_DISTANCE, summarize_split
    from pspnet.errors import DataError
    from pspnet.palette import CLASSES, IGNORE_INDEX

    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}" if not folder.exists() else f"not a folder: {folder}")
    names = [args.split] if args.split else ["train", "val"]
    splits = [folder / name for name in names if (folder / name).is_dir()] or [folder]
    if args.split and not (folder / args.split).is_dir() and (folder / "train").is_dir():
        raise DataError(f"no {args.split} split: {folder / args.split} not found")
    far = FAR_DISTANCE if args.far is None else args.far
    cache_dir = False if args.no_cache else args.cache_dir
    for number, split in enumerate(splits):
        summary = summarize_split(split, cache_dir=cache_dir, skip_bad=args.skip_bad, progress=not args.quiet)
        height, width = summary.image_size
        shares = summary.class_shares()
        if number:
            print()
        print(f"folder: {split}")
        print(f"files: {summary.num_images} composites of {2 * width}x{height} "
              f"(photo and label {width}x{height} each)"
              + (f", {len(summary.skipped)} skipped" if summary.skipped else ""))
        print(f"{'class':<16}{'train id':>9}{'pixels %':>10}")
        for info in CLASSES:
            print(f"{info.name:<16}{info.train_id:>9}{100 * shares[info.train_id]:>10.2f}")
        print(f"{'void (ignored)':<16}{IGNORE_INDEX:>9}{100 * shares[-1]:>10.2f}")
        percentiles = ", ".join(f"p{q} {summary.distance_percentile(q)}" for q in (50, 90, 99))
        print(f"decode distance to the nearest palette colour: mean {summary.mean_distance():.1f}, "
              f"{percentiles}; {100 * summary.far_share(far):.1f}% of label pixels farther than {far}")
        if summary.far_images:
            print(f"label halves mostly far from the palette: {len(summary.far_images)}")
        for name, reason in summary.skipped:
            print(f"problem: {reason}")
    # Last, so that the report of a split keeps its lines where scripts have read them.
    print("\nlayout: pairs (photo|label composites, the 19 Cityscapes classes)")
    return 0


def _data_split_names(folder: Path, layout: str) -> list[str]:
    """The splits present in a cityscapes or folders root, in train, val, test order."""
    from pspnet.errors import DataError

    photos = folder / ("leftImg8bit" if layout == "cityscapes" else "images")
    names = [name for name in ("train", "val", "test") if (photos / name).is_dir()]
    if not names:
        raise DataError(f"no train/, val/ or test/ split in {photos}" if photos.is_dir() else
                        f"no {photos.name}/ folder (the {layout} layout keeps its photos there): {photos}")
    return names


def _data_inspect_layout(args, folder: Path, layout: str) -> int:
    """``pspnet-data inspect`` of a cityscapes or folders root: per split, classes, shares, sizes, problems."""
    from pspnet.data.layouts import open_split
    from pspnet.data.samples import scan_split

    names = [args.split] if args.split else _data_split_names(folder, layout)
    cache_dir = False if args.no_cache else args.cache_dir
    print(f"layout: {layout} ({folder})")
    for name in names:
        split, summary = scan_split(open_split(folder, name, layout), cache_dir=cache_dir, skip_bad=args.skip_bad,
                                    progress=not args.quiet)
        classes = summary.classes
        sizes = ", ".join(f"{w}x{h}: {count}" for (h, w), count in
                          sorted(summary.sizes.items(), key=lambda item: -item[1])[:4])
        more = f", {len(summary.sizes) - 4} more sizes" if len(summary.sizes) > 4 else ""
        print()
        print(f"split: {name} ({split.folder})")
        print(f"files: {summary.num_images} image{'s' if summary.num_images != 1 else ''}"
              + ("" if summary.labelled else " without labels") + f" ({sizes}{more})"
              + (f", {len(summary.skipped)} skipped" if summary.skipped else ""))
        print(f"classes: {classes.num_classes}, ignore index {classes.ignore_index}")
        if not summary.labelled:
            continue
        shares = summary.class_shares()
        width = max(16, max(len(n) for n in classes.names) + 2)
        print(f"{'class':<{width}}{'index':>6}  {'colour':<15}{'pixels %':>9}")
        for index, (class_name, colour) in enumerate(zip(classes.names, classes.colors)):
            print(f"{class_name:<{width}}{index:>6}  {','.join(map(str, colour)):<15}{100 * shares[index]:>9.2f}")
        print(f"{'(ignored)':<{width}}{classes.ignore_index:>6}  {'':<15}{100 * shares[-1]:>9.2f}")
        absent = [n for n, pixels in zip(classes.names, summary.class_pixels) if pixels == 0]
        if absent:
            print(f"classes without a pixel in this split: {', '.join(absent)}")
        print(f"problems: {len(summary.skipped) or 'none'}")
        for _, reason in summary.skipped:
            print(f"  {reason}")
    return 0


def data_main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-data synth OUT ...`` and ``pspnet-data inspect ROOT``.

    ``pspnet-data synth OUT [--layout pairs|cityscapes|folders] --train N --val M --seed S [--size 256]``
    writes a synthetic set in that layout; ``pspnet-data inspect ROOT [--layout L] [--split S]
    [--cache-dir D]`` names the layout of a data set root and prints, per split, the file count, the image
    sizes, the classes (names, colours) with their share of pixels and the problems found; for pairs (a
    split folder, or DIR/train and DIR/val) also a summary of the label decode distances.
    """
    args = _data_parser().parse_args(argv)

    def run_inspect() -> int:
        folder = Path(args.folder)
        if _data_is_pairs(folder, args.layout):
            return _data_inspect_pairs(args, folder)
        from pspnet.data.layouts import detect_layout

        return _data_inspect_layout(args, folder, args.layout or detect_layout(folder))

    body = (lambda: _data_synth(args)) if args.command == "synth" else run_inspect
    return _run("pspnet-data", body, backend=False, out=args.out if args.command == "synth" else args.cache_dir)


# --- pspnet-train -----------------------------------------------------------


def train_main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-train``: every TrainConfig field as a flag.

    The flags are generated from the dataclass fields (names, types, choices,
    and the field comments as help), so they cannot drift from the config.
    A flag left out keeps the field's default. The flags (and the config they
    make) are checked before Keras loads: --help and a bad flag answer at once.
    """
    from pspnet.training import config as configuration

    parser = _train_parser()
    args = parser.parse_args(argv)
    for name in ("image_size", "crop_size"):  # ["512", "1024"] or ["512x1024"] -> "512x1024"
        if name in vars(args):
            setattr(args, name, "x".join(getattr(args, name)))
    try:
        config = configuration.TrainConfig(**vars(args))
    except PspnetError as error:
        print(f"{parser.prog}: error: {error.command_line_message()}", file=sys.stderr)
        return EXIT_USAGE

    def body() -> int:
        from pspnet.training.distribute import ProcessStopped
        from pspnet.training.loop import train

        try:
            train(config)
        except ProcessStopped as error:
            # Leave now, while the exception still holds the run's objects: freeing them waits
            # on the dead peer (TensorFlow's collectives for seconds, jax.distributed's exit
            # handler for minutes). Every file is already written atomically, so nothing is lost.
            print(f"pspnet-train: error: {error.command_line_message()}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_ERROR)
        return 0

    return _run("pspnet-train", body, interrupted="run the same command again to resume from the last finished "
                "epoch", start_runtime=not config.distribute, out=config.resolved().out)


def _train_parser() -> argparse.ArgumentParser:
    """pspnet-train's parser: one flag per TrainConfig field, its help from the field's comment."""
    import dataclasses
    import typing

    from pspnet.training import config as configuration

    parser = _Parser(
        prog="pspnet-train",
        argument_default=argparse.SUPPRESS,
        description="Trains a PSPNet into a run folder; the same command again resumes it, and a larger "
        "--epochs or --time-limit extends a finished run. "
        "With no --data it trains the fast preset on a synthetic demo set (a few minutes on a CPU).",
        epilog="examples: pspnet-train | pspnet-train --data ../shared/data/cityscapes_data --epochs 50 | "
        "pspnet-train --data DIR --preset pspnet50 --optimizer sgd --lr 0.01 --weight-decay 1e-4 --distribute | "
        "pspnet-train --data CITYSCAPES_ROOT --base-size 1024 2048 --crop-size 512 1024",
    )
    help_texts = configuration.config_field_help()
    field_types = configuration.config_field_types()
    for field in dataclasses.fields(configuration.TrainConfig):
        kind = field_types[field.name]
        kinds = [k for k in typing.get_args(kind) if k is not type(None)] or [kind]
        flags = [configuration.flag_name(field.name)]
        if field.name == "learning_rate":
            flags.append("--learning-rate")
        if field.name == "image_size":
            flags.append("--image-size")  # its name before crops: the base size
        text = help_texts.get(field.name, field.name)
        # A field left at None takes the value its comment gives after "None:" (TrainConfig.resolved).
        text = text.replace("None: ", "default: ") if field.default is None else f"{text} (default: {field.default})"
        options: dict = {"help": text.replace("%", "%%"), "dest": field.name}
        if bool in kinds:
            options["action"] = argparse.BooleanOptionalAction
        elif field.name in ("image_size", "crop_size"):
            options.update(type=str, nargs="+", metavar="N|HxW")  # N, H W or HxW
        else:
            scalar = kinds[0] if kinds[0] in (int, float, str) else str
            options.update(type=scalar, metavar=field.name.upper())
            if field.name in configuration.CHOICES:
                options["choices"] = configuration.CHOICES[field.name]
                options.pop("metavar")
        parser.add_argument(*flags, **options)
    return parser



def _bench_train(args) -> int:
    """``pspnet-bench train``: measures and prints the training-speed table."""
    import dataclasses
    import json

    from pspnet.bench.training import format_speed_table, speed_table

    overrides = {
        name: getattr(args, name)
        for name in ("batch_size", "precision", "jit_compile", "steps_per_execution")
        if getattr(args, name) is not None
    }

    def progress(row) -> None:
        print(f"{row.name}: {row.train_images_per_s:.2f} images/s", file=sys.stderr, flush=True)

    machine, (peak, source), rows = speed_table(
        args.presets, args.image_size, steps=args.steps, warmup=args.warmup, seed_recipe=args.seed_recipe,
        pipeline_batches=args.pipeline_batches, workers=args.workers, overrides=overrides, progress=progress,
        num_classes=args.num_classes,
    )
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    print(f"{machine['device']} x{machine['devices']} ({machine['kind']}, {machine['cores']} CPU cores"
          + (f", driver {machine['driver']}" if machine["driver"] else "") + f"); backend {machine['backend']}")
    print(versions)
    print(f"peak {peak:.2f} TFLOP/s ({source}); {args.image_size}x{args.image_size} images of "
          f"{args.num_classes} classes, "
          f"{args.steps} timed steps after {args.warmup} untimed")
    print(format_speed_table(rows))
    if args.json:
        atomic_write_text(args.json, json.dumps({"machine": machine, "peak_tflops": peak, "peak_source": source,
                                                 "rows": [dataclasses.asdict(row) for row in rows]}, indent=2))
    return 0


def _bench_runtimes(args) -> int:
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
        rows = benchmark_runtimes(args.model, work, steps=args.steps, val=val, calibration=args.calibration,
                                  progress=lambda row: print(f"{row.runtime}: {row.images_per_s}", file=sys.stderr))
    print(format_runtimes_table(rows))
    return 0


# --- pspnet-evaluate --------------------------------------------------------


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-evaluate --model RUN/best.keras --data ROOT [--split val] [--slide CROP STRIDE] [--out DIR]``."""
    parser = _Parser(
        prog="pspnet-evaluate",
        description="Score a saved model on a labelled split at the labels' full resolution: per-class IoU, "
        "mean IoU, pixel accuracy, mean class accuracy, frequency-weighted IoU. Writes metrics.json "
        "and confusion_matrix.png.",
    )
    parser.add_argument(
        "--data", required=True,
        help="a data set root (pairs, cityscapes or folders layout) whose --split is scored, a split folder "
        "of composite pairs, or 'demo'",
    )
    parser.add_argument("--split", default="val", help="the split of a data set root (val)")
    parser.add_argument("--layout", choices=("pairs", "cityscapes", "folders"), default=None,
                        help="the data set's layout (default: detected from its folders)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: RUN/eval-<model>-<split>, -slide, -ms and -tta with those "
                             "modes, beside the model)")
    parser.add_argument("--tta", action="store_true", help="average with the mirrored image")
    parser.add_argument("--slide", nargs=2, metavar=("CROP", "STRIDE"), default=None,
                        help="score sliding windows of CROP (N or HxW) every STRIDE pixels of the rescaled photo, "
                             "averaged where they overlap (default: the whole photo)")
    parser.add_argument("--scales", nargs="+", type=float, metavar="S", default=None,
                        help="run at these multiples of the base size and average the probabilities, "
                             "e.g. 0.75 1.0 1.25 (default: 1.0)")
    parser.add_argument("--base-size", nargs="+", metavar="N|HxW", default=None,
                        help="the size photos are fitted into at scale 1, keeping their aspect ratio (default: "
                             "the size the model was trained at; --image-size N is the square form)")
    parser.add_argument("--stretch", action="store_true",
                        help="resize every photo to the base size exactly instead of keeping its aspect ratio")
    parser.add_argument("--cache-dir", default=None, help="cache folder for the decoded split")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable files with a warning")
    _add_model_arguments(parser, batch_size=8, quiet_help="no progress bar or table")
    args = parser.parse_args(argv)

    def body() -> int:
        from pspnet.checks import parse_size
        from pspnet.inference.evaluate import EvalConfig, evaluate

        base_size = args.image_size if args.base_size is None else parse_size("x".join(args.base_size), "--base-size")
        slide = None if args.slide is None else (parse_size(args.slide[0], "--slide CROP"),
                                                 parse_size(args.slide[1], "--slide STRIDE"))
        evaluate(
            EvalConfig(
                model=args.model, data=args.data, out=args.out, batch_size=args.batch_size,
                image_size=base_size, tta_flip=args.tta, cache_dir=args.cache_dir,
                head=args.head, verbose=not args.quiet, skip_bad=args.skip_bad, split=args.split,
                layout=args.layout, slide=slide, scales=args.scales, keep_aspect=False if args.stretch else None,
            )
        )
        return 0

    return _run(parser.prog, body, out=args.out or Path(args.model).parent)


# --- pspnet-predict ---------------------------------------------------------


def predict_main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-predict --model RUN/best.keras --input PATH --out DIR [--with-truth] [--native]``."""

    parser = _Parser(
        prog="pspnet-predict",
        description="Run a saved model on a photo, a photo|label composite, a folder of them, "
        "or a video. Writes NAME_color.png, NAME_overlay.png and NAME_ids.png (raw train ids) "
        "per image, NAME_panel.png (photo | truth | prediction) with --with-truth, "
        "labelIds/NAME_labelIds.png with --label-ids, and inputs.csv (how each file was read).",
    )
    parser.add_argument("--input", required=True,
                        help="an image file, a folder of images (or of folders of them: a Cityscapes split, "
                             "ROOT/leftImg8bit/val), or a video")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--with-truth", action="store_true",
                        help="composites: also write photo | truth | prediction panels")
    parser.add_argument("--native", action="store_true",
                        help="run at the pixel scale the model was trained at: each photo fitted into its trained "
                             "size keeping the aspect ratio, not resized to it (models that take any size)")
    parser.add_argument("--label-ids", action="store_true",
                        help="also write labelIds/NAME_labelIds.png, the official Cityscapes label ids at the "
                             "photo's size, for cityscapesscripts' evaluation and the benchmark server")
    parser.add_argument("--slide", nargs=2, metavar=("CROP", "STRIDE"), default=None,
                        help="predict sliding windows of CROP (N or HxW) every STRIDE pixels, as pspnet-evaluate's "
                             "(with --native: of the photo at the trained scale)")
    parser.add_argument("--scales", nargs="+", type=float, metavar="S", default=None,
                        help="average the probabilities at these multiples of the model's size (default: 1.0)")
    parser.add_argument("--tta", action="store_true", help="average with the mirrored image")
    parser.add_argument(
        "--pairs", choices=("auto", "always", "never"), default="auto",
        help="auto: an image twice as wide as high whose right half looks like a label image "
        "is a photo|label composite (left half predicted); never: every image is a plain photo; "
        "always: every image is a composite",
    )
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable files with a warning")
    parser.add_argument("--every", type=_positive, default=1, help="videos: predict every Nth frame (1)")
    parser.add_argument("--colour-video", action="store_true",
                        help="videos: also write the colour-map video")
    _add_model_arguments(parser, batch_size=4, quiet_help="no progress bar")
    args = parser.parse_args(argv)

    def body() -> int:
        from pspnet.checks import parse_size
        from pspnet.inference.predict import PredictConfig, predict

        slide = None if args.slide is None else (parse_size(args.slide[0], "--slide CROP"),
                                                 parse_size(args.slide[1], "--slide STRIDE"))
        predict(
            PredictConfig(
                model=args.model, input=args.input, out=args.out, with_truth=args.with_truth,
                native=args.native, batch_size=args.batch_size, pairs=args.pairs,
                image_size=args.image_size, head=args.head, verbose=not args.quiet,
                skip_bad=args.skip_bad, every=args.every, colour_video=args.colour_video,
                label_ids=args.label_ids, slide=slide, scales=args.scales, tta_flip=args.tta,
            )
        )
        return 0

    return _run(parser.prog, body, out=args.out)


# --- pspnet-export ----------------------------------------------------------


def export_main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-export --model RUN/best.keras --format onnx|litert|saved_model --out PATH``."""
    from pspnet.inference.runtimes import FORMATS

    parser = _Parser(
        prog="pspnet-export",
        description="Export a trained .keras model to ONNX, LiteRT or a TensorFlow SavedModel, with a JSON "
        "description beside it (PATH.json). The artefact takes float32 RGB photos in 0-255 at a fixed size "
        "and returns class logits; it is run in its own runtime and compared with the Keras model before "
        "it is written.",
    )
    parser.add_argument("--model", required=True, help="a .keras model file (RUN/best.keras)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx, litert (.tflite) or saved_model")
    parser.add_argument("--out", required=True,
                        help="the artefact: a .onnx or .tflite file, or a folder for saved_model (never replaced)")
    parser.add_argument("--image-size", type=_positive, nargs="+", metavar=("H", "W"), default=None,
                        help="fixed input size H [W] (default: the size the model was trained at, 256 if its "
                             "file does not say)")
    parser.add_argument("--quantize", action="store_true",
                        help="litert: int8 weights and activations, calibrated on --calibration photos")
    parser.add_argument("--calibration", default=None,
                        help="with --quantize: a folder of photos (or composites), or a data set root (its val photos)")
    parser.add_argument("--check-data", default=None, metavar="DIR",
                        help="check the export on up to 8 photos of DIR, a folder of photos or a data set root of "
                        "any layout (default: the calibration photos, else 4 generated street scenes)")
    args = parser.parse_args(argv)
    if args.image_size is not None and len(args.image_size) > 2:
        parser.error("--image-size takes H or H W")

    def body() -> int:
        from pspnet.inference.export import export

        export(args.model, args.format, args.out, image_size=args.image_size, quantize=args.quantize,
               calibration=args.calibration, check_data=args.check_data)
        return 0

    return _run(parser.prog, body, out=args.out)


# --- pspnet-bench -----------------------------------------------------------


def bench_main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-bench SECTION ...``: the speed tables of docs/BENCHMARKS.md, one subcommand each.

    ``pspnet-bench models [--presets ...] [--image-size 256] [--batch-size N] [--steps N]``
    prints, per preset: parameters, forward GFLOPs per image, training and inference
    images/s. ``train`` and ``runtimes`` are the other tables.
    """
    parser = _bench_parser()
    args = parser.parse_args(argv)
    if args.section == "train":
        return _run(parser.prog, lambda: _check_writable(args.json) or _bench_train(args), out=args.json)
    if args.section == "runtimes":
        return _run(parser.prog, lambda: _bench_runtimes(args))
    return _run(parser.prog, lambda: _check_writable(args.json) or _bench_models(args), out=args.json)


def _bench_models(args) -> int:
    """``pspnet-bench models``: measures and prints the models table."""
    import dataclasses
    import json

    import keras

    from pspnet.bench.models import benchmark_models, format_models_table

    def progress(row) -> None:
        print(f"{row.preset}: {row.train_images_per_s:.2f} training, {row.infer_images_per_s:.2f} inference "
              "images/s", file=sys.stderr, flush=True)

    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPU cores", file=sys.stderr)
    rows = benchmark_models(
        args.presets, progress=progress, image_size=args.image_size, batch_size=args.batch_size,
        steps=args.steps, warmup=args.warmup, num_classes=args.num_classes, dtype_policy=args.dtype_policy,
    )
    print(format_models_table(rows))
    if args.json:
        atomic_write_text(args.json, json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
    return 0


def _bench_image_size(text: str) -> tuple[int, int]:
    """``256`` -> (256, 256); ``256x512`` -> (256, 512)."""
    from pspnet.checks import parse_size
    from pspnet.errors import ConfigError

    try:
        return parse_size(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH, got {text!r}") from None


def _bench_parser() -> argparse.ArgumentParser:
    """The parser of ``pspnet-bench`` (models, train, runtimes)."""
    from pspnet.models.presets import PRESETS

    parser = _Parser(prog="pspnet-bench",
                     description="Speed benchmarks on this machine (backend: KERAS_BACKEND, default tensorflow).")
    sections = parser.add_subparsers(dest="section", required=True, metavar="SECTION")
    models = sections.add_parser(
        "models",
        help="parameters, GFLOPs and training/inference images/s of each preset",
        description="For each preset: parameters, forward GFLOPs per image, training images/s "
        "(train_on_batch, Adam, sparse cross-entropy from logits) and inference images/s "
        "(predict_on_batch), timed after warm-up steps on random photos.",
    )
    models.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS), help="presets to measure")
    models.add_argument("--image-size", type=_bench_image_size, default=(256, 256),
                        help="SIZE or HEIGHTxWIDTH (256)")
    models.add_argument("--batch-size", type=_positive, default=2, help="images per step (2)")
    models.add_argument("--steps", type=_positive, default=3, help="timed steps per measurement (3)")
    models.add_argument("--warmup", type=int, default=1, help="untimed steps before timing (1)")
    models.add_argument("--num-classes", type=_positive, default=19, help="classes of the logits head (19)")
    models.add_argument("--dtype-policy", default=None, help="a Keras dtype policy, e.g. mixed_bfloat16")
    models.add_argument("--json", default=None, help="also write the rows to this JSON file")
    _add_bench_train_parser(sections, PRESETS)
    runtimes = sections.add_parser(
        "runtimes",
        help="inference images/s (and val scores) of a trained model in Keras, ONNX Runtime and LiteRT",
        description="Exports --model to ONNX and LiteRT (and int8 LiteRT with --calibration) in a temporary "
        "folder and times predict_on_batch in each runtime at batch 1 and 8; with --data also scores each "
        "on that split.",
    )
    runtimes.add_argument("--model", required=True, help="a .keras model file")
    runtimes.add_argument("--data", default=None,
                          help="a data set root (any layout) or a split folder of pairs to score each runtime on")
    runtimes.add_argument("--split", default="val", help="the split of a data set root (val)")
    runtimes.add_argument("--layout", choices=("pairs", "cityscapes", "folders"), default=None,
                          help="the data set's layout (default: detected from its folders)")
    runtimes.add_argument("--calibration", default=None, help="photos for an int8 LiteRT row")
    runtimes.add_argument("--steps", type=_positive, default=5, help="timed calls per batch size (5)")
    runtimes.add_argument("--cache-dir", default=None, help="decoded-split cache (as pspnet-evaluate)")
    return parser


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
    train.add_argument("--no-seed-recipe", dest="seed_recipe", action="store_false",
                       help="leave out the seed notebook's recipe (no speed-up column)")
    train.add_argument("--pipeline-batches", type=_count, default=40,
                       help="batches timed for the input-pipeline row (40; 0: no row)")
    train.add_argument("--workers", type=_positive, default=None, help="input pipeline threads (min(4, cores))")
    train.add_argument("--num-classes", type=_positive, default=19,
                       help="classes of the presets' heads and of the random labels (19, the Cityscapes ones)")
    train.add_argument("--batch-size", type=_positive, default=None, help="override the machine's batch size")
    train.add_argument("--precision", choices=("float32", "mixed_bfloat16", "mixed_float16"), default=None,
                       help="override the machine's dtype policy")
    train.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                       help="override the machine's XLA setting")
    train.add_argument("--steps-per-execution", type=_positive, default=None,
                       help="override the machine's batches per compiled call")
    train.add_argument("--json", default=None, help="also write the machine and the rows to this JSON file")
