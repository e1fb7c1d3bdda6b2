"""``pspnet-evaluate``: score a saved model on a labelled split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pspnet.cli.common import _add_mode_arguments, _add_model_arguments, _Parser, _run, _slide_sizes


def _parser() -> _Parser:
    """The parser of ``pspnet-evaluate``."""
    parser = _Parser(
        prog="pspnet-evaluate",
        description="Score a saved model on a labelled split at the labels' full resolution: per-class IoU, "
        "mean IoU, pixel accuracy, mean class accuracy, frequency-weighted IoU. Writes metrics.json "
        "and confusion_matrix.png.",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="a data set root (pairs, cityscapes or folders layout) whose --split is scored, a split folder "
        "of composite pairs, or 'demo'",
    )
    parser.add_argument("--split", default="val", help="the split of a data set root (val)")
    parser.add_argument(
        "--layout",
        choices=("pairs", "cityscapes", "folders"),
        default=None,
        help="the data set's layout (default: detected from its folders)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: RUN/eval-<model>-<split>, -slide, -ms and -tta with those "
        "modes, beside the model)",
    )
    _add_mode_arguments(
        parser,
        slide_help="score sliding windows of CROP (N or HxW) every STRIDE pixels of the rescaled photo, "
        "averaged where they overlap (default: the whole photo)",
        scales_help="run at these multiples of the base size and average the probabilities, e.g. 0.75 1.0 1.25 "
        "(default: 1.0)",
    )
    parser.add_argument(
        "--base-size",
        nargs="+",
        metavar="N|HxW",
        default=None,
        help="the size photos are fitted into at scale 1, keeping their aspect ratio (default: "
        "the size the model was trained at; --image-size N is the square form)",
    )
    parser.add_argument(
        "--stretch",
        action="store_true",
        help="resize every photo to the base size exactly instead of keeping its aspect ratio",
    )
    parser.add_argument("--cache-dir", default=None, help="cache folder for the decoded split")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable files with a warning")
    _add_model_arguments(parser, batch_size=8, quiet_help="no progress bar or table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-evaluate --model RUN/best.keras --data ROOT [--split val] [--slide CROP STRIDE] [--out DIR]``."""
    parser = _parser()
    args = parser.parse_args(argv)

    def body() -> int:
        from pspnet.checks import parse_size
        from pspnet.inference.evaluate import EvalConfig, evaluate

        base_size = args.image_size if args.base_size is None else parse_size("x".join(args.base_size), "--base-size")
        slide = _slide_sizes(args.slide)
        evaluate(
            EvalConfig(
                model=args.model,
                data=args.data,
                out=args.out,
                batch_size=args.batch_size,
                image_size=base_size,
                tta_flip=args.tta,
                cache_dir=args.cache_dir,
                head=args.head,
                verbose=not args.quiet,
                skip_bad=args.skip_bad,
                split=args.split,
                layout=args.layout,
                slide=slide,
                scales=args.scales,
                keep_aspect=False if args.stretch else None,
            )
        )
        return 0

    return _run(parser.prog, body, out=args.out or Path(args.model).parent)
