"""``pspnet-train``: every TrainConfig field as a flag."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pspnet.cli.common import EXIT_ERROR, EXIT_USAGE, _Parser, _run
from pspnet.errors import PspnetError


def main(argv: Sequence[str] | None = None) -> int:
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

    return _run(
        "pspnet-train",
        body,
        interrupted="run the same command again to resume from the last finished epoch",
        start_runtime=not config.distribute,
        out=config.resolved().out,
    )


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
