"""``pspnet-predict``: run a saved model on photos, composites or a video."""

from __future__ import annotations

from collections.abc import Sequence

from pspnet.cli.common import _add_mode_arguments, _add_model_arguments, _Parser, _positive, _run, _slide_sizes


def _parser() -> _Parser:
    """The parser of ``pspnet-predict``."""
    parser = _Parser(
        prog="pspnet-predict",
        description="Run a saved model on a photo, a photo|label composite, a folder of them, "
        "or a video. Writes NAME_color.png, NAME_overlay.png and NAME_ids.png (raw train ids) "
        "per image, NAME_panel.png (photo | truth | prediction) with --with-truth, "
        "labelIds/NAME_labelIds.png with --label-ids, and inputs.csv (how each file was read).",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="an image file, a folder of images (or of folders of them: a Cityscapes split, "
        "ROOT/leftImg8bit/val), or a video",
    )
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument(
        "--with-truth", action="store_true", help="composites: also write photo | truth | prediction panels"
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="run at the pixel scale the model was trained at: each photo fitted into its trained "
        "size keeping the aspect ratio, not resized to it (models that take any size)",
    )
    parser.add_argument(
        "--label-ids",
        action="store_true",
        help="also write labelIds/NAME_labelIds.png, the official Cityscapes label ids at the "
        "photo's size, for cityscapesscripts' evaluation and the benchmark server",
    )
    _add_mode_arguments(
        parser,
        slide_help="predict sliding windows of CROP (N or HxW) every STRIDE pixels, as pspnet-evaluate's "
        "(with --native: of the photo at the trained scale)",
        scales_help="average the probabilities at these multiples of the model's size (default: 1.0)",
    )
    parser.add_argument(
        "--pairs",
        choices=("auto", "always", "never"),
        default="auto",
        help="auto: an image twice as wide as high whose right half looks like a label image "
        "is a photo|label composite (left half predicted); never: every image is a plain photo; "
        "always: every image is a composite",
    )
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable files with a warning")
    parser.add_argument("--every", type=_positive, default=1, help="videos: predict every Nth frame (1)")
    parser.add_argument("--colour-video", action="store_true", help="videos: also write the colour-map video")
    _add_model_arguments(parser, batch_size=4, quiet_help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-predict --model RUN/best.keras --input PATH --out DIR [--with-truth] [--native]``."""
    parser = _parser()
    args = parser.parse_args(argv)

    def body() -> int:
        from pspnet.inference.predict import PredictConfig, predict

        slide = _slide_sizes(args.slide)
        predict(
            PredictConfig(
                model=args.model,
                input=args.input,
                out=args.out,
                with_truth=args.with_truth,
                native=args.native,
                batch_size=args.batch_size,
                pairs=args.pairs,
                image_size=args.image_size,
                head=args.head,
                verbose=not args.quiet,
                skip_bad=args.skip_bad,
                every=args.every,
                colour_video=args.colour_video,
                label_ids=args.label_ids,
                slide=slide,
                scales=args.scales,
                tta_flip=args.tta,
            )
        )
        return 0

    return _run(parser.prog, body, out=args.out)
