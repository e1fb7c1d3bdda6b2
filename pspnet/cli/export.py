"""``pspnet-export``: a trained .keras model to ONNX, LiteRT or a SavedModel."""

from __future__ import annotations

from collections.abc import Sequence

from pspnet.cli.common import _Parser, _positive, _run


def main(argv: Sequence[str] | None = None) -> int:
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
    parser.add_argument(
        "--out",
        required=True,
        help="the artefact: a .onnx or .tflite file, or a folder for saved_model (never replaced)",
    )
    parser.add_argument(
        "--image-size",
        type=_positive,
        nargs="+",
        metavar=("H", "W"),
        default=None,
        help="fixed input size H [W] (default: the size the model was trained at, 256 if its file does not say)",
    )
    parser.add_argument(
        "--quantize",
        action="store_true",
        help="litert: int8 weights and activations, calibrated on --calibration photos",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        help="with --quantize: a folder of photos (or composites), or a data set root (its val photos)",
    )
    parser.add_argument(
        "--check-data",
        default=None,
        metavar="DIR",
        help="check the export on up to 8 photos of DIR, a folder of photos or a data set root of "
        "any layout (default: the calibration photos, else 4 generated street scenes)",
    )
    args = parser.parse_args(argv)
    if args.image_size is not None and len(args.image_size) > 2:
        parser.error("--image-size takes H or H W")

    def body() -> int:
        from pspnet.inference.export import export

        export(
            args.model,
            args.format,
            args.out,
            image_size=args.image_size,
            quantize=args.quantize,
            calibration=args.calibration,
            check_data=args.check_data,
        )
        return 0

    return _run(parser.prog, body, out=args.out)
