"""What every pspnet command shares: the one-line error wrapper, exit codes, the backend start, argparse types.

Every known failure (``PspnetError``, a bad flag, any ``OSError`` such as a missing
file, a read-only folder or a full disk, a Keras backend that is misspelt or not
installed) ends in one line ``<prog>: error: <what>: <file>`` and a non-zero exit
status, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from pspnet.checks import argparse_type, parse_int, parse_size
from pspnet.errors import ConfigError, PspnetError, first_line
from pspnet.fileio import final_name, temporary_name

EXIT_ERROR = 1  # a known failure (bad file, bad data)
EXIT_USAGE = 2  # a bad flag (argparse's own convention)
EXIT_INTERRUPTED = 130

# The backends pspnet runs on, and what each needs installed (module, what to tell).
BACKENDS = {
    "tensorflow": ("tensorflow", "TensorFlow: pip install tensorflow"),
    "jax": ("jax", "JAX: pip install jax"),
    "torch": ("torch", "PyTorch: pip install torch"),
}
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


def _out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, or a backend's: TensorFlow's ResourceExhaustedError, torch's
    OutOfMemoryError, JAX's RESOURCE_EXHAUSTED (matched by name: no backend is imported)."""
    names = ("MemoryError", "ResourceExhaustedError", "OutOfMemoryError")
    return type(error).__name__ in names or str(error).startswith("RESOURCE_EXHAUSTED")


def _run(
    prog: str,
    body: Callable[[], int | None],
    interrupted: str = "",
    backend: bool = True,
    start_runtime: bool = True,
    out: str | os.PathLike | None = None,
) -> int:
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
    except Exception as error:
        if not _out_of_memory(error):
            raise
        print(f"{prog}: error: out of memory ({first_line(error)}); lower --batch-size", file=sys.stderr)
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
        if Path(path).is_dir():  # the probe beside it would pass; the final rename would not
            raise ConfigError(f"--json is a folder: {path}")
        probe = temporary_name(path)
        probe.touch()
        probe.unlink()


# argparse types, one parser each underneath (pspnet.checks): a ConfigError becomes the one-line usage error.
_positive = argparse_type(partial(parse_int, minimum=1), "a positive integer")
_count = argparse_type(partial(parse_int, minimum=0), "a count >= 0")
_image_size = argparse_type(parse_size, "SIZE or HEIGHTxWIDTH")


def _add_model_arguments(parser: argparse.ArgumentParser, batch_size: int, quiet_help: str) -> None:
    """The flags shared by the commands that run a saved model (evaluate, predict)."""
    parser.add_argument(
        "--model",
        required=True,
        help="a .keras model file (RUN/best.keras), or one pspnet-export wrote (.onnx, .tflite, a SavedModel folder)",
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=batch_size, help=f"images per forward pass ({batch_size})"
    )
    parser.add_argument(
        "--image-size",
        type=_positive,
        default=None,
        help="side of the square input for models that take any size (default: the size the "
        "model was trained at, 256 if its file does not say)",
    )
    parser.add_argument("--head", choices=("classes", "rgb"), default=None, help="override the detected output head")
    parser.add_argument("--quiet", action="store_true", help=quiet_help)


def _slide_sizes(slide: Sequence[str] | None) -> tuple | None:
    """``--slide CROP STRIDE`` (each N or HxW) as two (height, width) sizes, or None without the flag."""
    if slide is None:
        return None
    return parse_size(slide[0], "--slide CROP"), parse_size(slide[1], "--slide STRIDE")


def _add_mode_arguments(parser: argparse.ArgumentParser, slide_help: str, scales_help: str) -> None:
    """How the Segmenter runs (evaluate, predict): flip averaging, sliding windows, scales."""
    parser.add_argument("--tta", action="store_true", help="average with the mirrored image")
    parser.add_argument("--slide", nargs=2, metavar=("CROP", "STRIDE"), default=None, help=slide_help)
    parser.add_argument("--scales", nargs="+", type=float, metavar="S", default=None, help=scales_help)
