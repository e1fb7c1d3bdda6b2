"""``pspnet-data synth`` and ``pspnet-data inspect``: make and summarise data sets."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from pspnet.cli.common import _count, _Parser, _run

LAYOUTS = ("pairs", "cityscapes", "folders")  # pspnet.data.layouts.LAYOUTS, without importing the data layer


def _data_parser() -> argparse.ArgumentParser:
    """The parser of ``pspnet-data`` (synth, inspect)."""
    parser = _Parser(prog="pspnet-data", description="Make and inspect data sets (pairs, cityscapes, folders).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_synth_parser(commands, LAYOUTS)
    _add_inspect_parser(commands, LAYOUTS)
    return parser


def _add_synth_parser(commands, layouts: Sequence[str]) -> None:
    """The ``pspnet-data synth`` subcommand and its flags."""

    def side(text: str) -> int:  # named for argparse's "invalid side value"
        value = int(text)
        if value < 8 or value % 8:
            raise argparse.ArgumentTypeError(f"expected a multiple of 8, at least 8, got {text!r}")
        return value

    synth = commands.add_parser(
        "synth",
        help="write a synthetic data set in one of the layouts",
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
    synth.add_argument(
        "--size", type=side, default=256, help="side of each half of a pair, or the height of a frame, in pixels (256)"
    )
    synth.add_argument(
        "--thickness",
        type=float,
        default=1.0,
        help="width factor of poles, persons and grass strips, 1 to 4 (1; the demo set uses 2)",
    )
    synth.add_argument("--overwrite", action="store_true", help="replace the existing set in OUT")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_inspect_parser(commands, layouts: Sequence[str]) -> None:
    """The ``pspnet-data inspect`` subcommand and its flags."""
    inspect = commands.add_parser(
        "inspect",
        help="summarise a data set",
        description="The layout, the classes and their pixel shares, the image sizes and the problems found, "
        "per split of a data set root (pairs: of a split folder, or of DIR/train and DIR/val, with the decode "
        "distances of the label halves). What was read is cached (see --cache-dir).",
    )
    inspect.add_argument("folder", metavar="ROOT", help="a data set root, or a split folder of pairs")
    inspect.add_argument("--layout", choices=layouts, default=None, help="the layout (default: detected)")
    inspect.add_argument("--split", default=None, help="the split to inspect (default: every split there)")
    inspect.add_argument(
        "--cache-dir",
        default=None,
        help="cache folder (default: $PSPNET_CACHE or ~/.cache/pspnet: splits/ for pairs, scans/ for the others)",
    )
    inspect.add_argument("--no-cache", action="store_true", help="read in memory, write no cache")
    inspect.add_argument(
        "--skip-bad", action="store_true", help="leave unusable files out, with a warning, and list them as problems"
    )
    inspect.add_argument("--far", type=_count, default=None, help="distance counted as far from the palette (30)")
    inspect.add_argument("--quiet", action="store_true", help="no progress bar")


def _data_synth(args) -> int:
    """``pspnet-data synth``."""

    if args.layout == "pairs":
        from pspnet.data.synth import write_synthetic_set

        out = write_synthetic_set(
            args.out,
            train=args.train,
            val=args.val,
            seed=args.seed,
            size=args.size,
            overwrite=args.overwrite,
            progress=not args.quiet,
            thickness=args.thickness,
        )
        for split, number in (("train", args.train), ("val", args.val)):
            print(f"wrote {number} pairs of {args.size}x{2 * args.size} to {Path(out) / split}")
        return 0
    from pspnet.data.synth_layouts import write_layout

    out, (height, width) = write_layout(
        args.out,
        args.layout,
        train=args.train,
        val=args.val,
        seed=args.seed,
        size=args.size,
        overwrite=args.overwrite,
        thickness=args.thickness,
    )
    photos, labels = ("leftImg8bit", "gtFine") if args.layout == "cityscapes" else ("images", "masks")
    for split, number in (("train", args.train), ("val", args.val)):
        print(
            f"wrote {number} {args.layout} images of {width}x{height} to {out / photos / split} "
            f"(labels in {out / labels / split})"
        )
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
        print(
            f"files: {summary.num_images} composites of {2 * width}x{height} "
            f"(photo and label {width}x{height} each)"
            + (f", {len(summary.skipped)} skipped" if summary.skipped else "")
        )
        print(f"{'class':<16}{'train id':>9}{'pixels %':>10}")
        for info in CLASSES:
            print(f"{info.name:<16}{info.train_id:>9}{100 * shares[info.train_id]:>10.2f}")
        print(f"{'void (ignored)':<16}{IGNORE_INDEX:>9}{100 * shares[-1]:>10.2f}")
        percentiles = ", ".join(f"p{q} {summary.distance_percentile(q)}" for q in (50, 90, 99))
        print(
            f"decode distance to the nearest palette colour: mean {summary.mean_distance():.1f}, "
            f"{percentiles}; {100 * summary.far_share(far):.1f}% of label pixels farther than {far}"
        )
        if summary.far_images:
            print(f"label halves mostly far from the palette: {len(summary.far_images)}")
        for _name, reason in summary.skipped:
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
        raise DataError(
            f"no train/, val/ or test/ split in {photos}"
            if photos.is_dir()
            else f"no {photos.name}/ folder (the {layout} layout keeps its photos there): {photos}"
        )
    return names


def _data_inspect_layout(args, folder: Path, layout: str) -> int:
    """``pspnet-data inspect`` of a cityscapes or folders root: per split, classes, shares, sizes, problems."""
    from pspnet.data.layouts import open_split
    from pspnet.data.samples import scan_split

    names = [args.split] if args.split else _data_split_names(folder, layout)
    cache_dir = False if args.no_cache else args.cache_dir
    print(f"layout: {layout} ({folder})")
    for name in names:
        split, summary = scan_split(
            open_split(folder, name, layout), cache_dir=cache_dir, skip_bad=args.skip_bad, progress=not args.quiet
        )
        classes = summary.classes
        sizes = ", ".join(
            f"{w}x{h}: {count}" for (h, w), count in sorted(summary.sizes.items(), key=lambda item: -item[1])[:4]
        )
        more = f", {len(summary.sizes) - 4} more sizes" if len(summary.sizes) > 4 else ""
        print()
        print(f"split: {name} ({split.folder})")
        print(
            f"files: {summary.num_images} image{'s' if summary.num_images != 1 else ''}"
            + ("" if summary.labelled else " without labels")
            + f" ({sizes}{more})"
            + (f", {len(summary.skipped)} skipped" if summary.skipped else "")
        )
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


def _data_inspect(args) -> int:
    """``pspnet-data inspect``: the pairs report, or the report of a cityscapes or folders root."""
    from pspnet.data.layouts import detect_layout

    folder = Path(args.folder)
    if _data_is_pairs(folder, args.layout):
        return _data_inspect_pairs(args, folder)
    return _data_inspect_layout(args, folder, args.layout or detect_layout(folder))


def main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-data synth OUT ...`` and ``pspnet-data inspect ROOT``.

    ``pspnet-data synth OUT [--layout pairs|cityscapes|folders] --train N --val M --seed S [--size 256]``
    writes a synthetic set in that layout; ``pspnet-data inspect ROOT [--layout L] [--split S]
    [--cache-dir D]`` names the layout of a data set root and prints, per split, the file count, the image
    sizes, the classes (names, colours) with their share of pixels and the problems found; for pairs (a
    split folder, or DIR/train and DIR/val) also a summary of the label decode distances.
    """
    args = _data_parser().parse_args(argv)
    body = (lambda: _data_synth(args)) if args.command == "synth" else (lambda: _data_inspect(args))
    return _run("pspnet-data", body, backend=False, out=args.out if args.command == "synth" else args.cache_dir)
