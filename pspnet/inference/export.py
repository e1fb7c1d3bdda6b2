"""``pspnet-export``: a trained ``.keras`` model as ONNX, LiteRT or SavedModel, checked before it counts.

    pspnet-export --model RUN/best.keras --format onnx --out exports/pspnet.onnx [--check-data VAL_DIR]
    pspnet-export --model RUN/best.keras --format litert --out exports/pspnet.tflite [--quantize --calibration DIR]
    pspnet-export --model RUN/best.keras --format saved_model --out exports/pspnet_savedmodel

The artefact takes what the Keras model takes, float32 RGB photos in 0-255
(the normalisation is inside), at a fixed size (the training size unless
``image_size`` says otherwise) with any batch (LiteRT: one image a call), and returns the main head's
scores at that size: class logits, or the seed's colours in 0-1. Beside it
goes ``<name>.json``: the model's class table (``classes``: the names in
train-id order, ``colors``: their RGB colours, ``ignore_index``: the mask
value of unlabelled pixels in its data set), the input and output, the preset
and where it came from, so that a consumer needs nothing from this package.

The export is written under a temporary name, run in its own runtime (ONNX
Runtime, the LiteRT interpreter, TensorFlow's SavedModel loader) and compared
with the Keras model on photos like the ones it will see: those of
``check_data`` (``--check-data DIR``, a folder of photos or a data set root) when given, else the calibration
photos, else a few generated street scenes; only when it agrees within
``TOLERANCE`` (int8: ``INT8_AGREEMENT`` of the pixels' classes) is it renamed
into place. It never replaces an existing file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pspnet.errors import ConfigError, first_line
from pspnet.fileio import atomic_write_text
from pspnet.inference.runtimes import FORMATS, SUFFIXES, description_path, open_exported

# Largest |export - keras| allowed, relative to max(1, the largest |keras score|).
# ONNX and SavedModel run the same float32 graph; LiteRT's kernels (XNNPACK)
# sum in another order. Measured on the tests' tiny models and on a trained
# lite model: docs/BENCHMARKS.md, "Export".
TOLERANCE = {"onnx": 1e-4, "saved_model": 1e-4, "litert": 1e-3}
INT8_AGREEMENT = 0.9  # int8 LiteRT: least share of pixels whose class matches the float model's
CHECK_PHOTOS = 4  # generated scenes an export is checked on without photos (batches of 3 and 1: the batch is dynamic)
CHECK_FOLDER_PHOTOS = 8  # at most this many photos of a folder (--check-data, --calibration) are checked on
CALIBRATION_PHOTOS = 32  # at most this many photos of --calibration calibrate int8


def export(
    model_path: str | os.PathLike,
    format: str,
    out: str | os.PathLike,
    image_size=None,
    quantize: bool = False,
    calibration: str | os.PathLike | None = None,
    check_data: str | os.PathLike | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Exports a ``.keras`` model and checks the artefact against it.

    Args:
        model_path: a ``.keras`` file saved by ``pspnet-train`` (or any pspnet model file).
        format: "onnx", "litert" or "saved_model".
        out: the artefact's path (``.onnx``, ``.tflite``, or a folder for a SavedModel); it and
            ``<out>.json`` must not exist. Its folder is created (and removed if the export fails).
        image_size: fixed input size N or (H, W); None: the training size.
        quantize: LiteRT only: int8 weights and activations, calibrated on ``calibration`` photos.
        calibration: photos for ``quantize`` (a folder of photos or composites, or a data set root
            of any layout: its val photos); the export is also checked on them, unless ``check_data``.
        check_data: photos to check the export on (as ``calibration``); None: the calibration
            photos, else generated street scenes.
        verbose: print one closing line.

    Returns:
        The description written beside the artefact, with ``"path"``.

    Raises:
        ConfigError: a bad option, an existing output, a model that cannot be
            converted, or an artefact that disagrees with the Keras model.
    """
    from pspnet.inference.segmenter import model_input_size
    from pspnet.models.modelfile import load_model

    out = _check_options(format, quantize, calibration, Path(out))
    # Bad folders fail before the model loads.
    check_readers = None if check_data is None else _listed(check_data, "--check-data")
    calibration_readers = _listed(calibration, "--calibration") if quantize else None
    model, info = load_model(model_path)
    classes = _class_table(info, model_path)
    size = model_input_size(model, info, image_size)
    calibration_photos = _folder_photos(calibration_readers[:CALIBRATION_PHOTOS], size) if quantize else None
    serving = _serving_model(_float32(model), size, model_path)
    photos, images = _reference_photos(size, check_readers, check_data, calibration_photos, calibration)
    expected = _scores(serving, photos)

    def write(work: Path) -> tuple[dict, dict]:
        built = _convert(serving, format, work, size, calibration_photos)
        check = {"images": images, **_check(built, format, quantize, photos, expected)}
        description = _description(info, classes, format, quantize, size, model_path, expected.shape[-1], check)
        _refuse_existing(out)  # again: made during the conversion (another export, a copy)?
        os.replace(built, out)  # the artefact first: a description never points at nothing
        atomic_write_text(description_path(out), json.dumps(description, indent=2) + "\n")
        return description, check

    description, check = _in_work_folder(out.parent, write)
    if verbose:
        print(
            f"pspnet-export: wrote {out} and {description_path(out).name} ({format}"
            f"{', int8' if quantize else ''}, {size[0]}x{size[1]}); {_check_text(check)}"
        )
    return {**description, "path": str(out)}


def _reference_photos(size, check_readers, check_data, calibration_photos, calibration) -> tuple[np.ndarray, str]:
    """The photos an export is checked on, and what they are: --check-data's, the calibration's, or generated."""
    if check_readers is not None:
        return _folder_photos(check_readers[:CHECK_FOLDER_PHOTOS], size), f"photos of {check_data}"
    if calibration_photos is not None:
        return calibration_photos[:CHECK_FOLDER_PHOTOS], f"calibration photos of {calibration}"
    return check_photos(size), "generated street scenes"


def _in_work_folder(folder: Path, write):
    """Calls ``write(work)`` with a temporary folder in ``folder`` (created if missing), removed after.

    A failed ``write`` leaves neither the work folder nor any folder made for it.
    """
    made = _make_folder(folder)
    try:
        work = Path(tempfile.mkdtemp(prefix=".pspnet-export-", dir=folder))
    except OSError as error:
        _remove_empty(made)
        raise ConfigError(
            f"cannot write in the output folder ({error.strerror or first_line(error)}): {folder}"
        ) from None
    try:
        result = write(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        _remove_empty(made)  # a failed export leaves no folder it made
        raise
    shutil.rmtree(work, ignore_errors=True)
    return result


def _check_options(format: str, quantize: bool, calibration, out: Path) -> Path:
    """Refuses a bad combination of options, or an output that exists, before anything is read; returns ``out``."""
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}; got {format!r}")
    if quantize and format != "litert":
        raise ConfigError("--quantize is for --format litert only")
    if calibration is not None and not quantize:
        raise ConfigError("--calibration needs --quantize")
    _check_out(out, format)
    if quantize and calibration is None:
        raise ConfigError("--quantize needs --calibration FOLDER (photos like the ones the model will see)")
    return out


def _refuse_existing(out: Path) -> None:
    """Raises ConfigError when the artefact or its description exists."""
    for path in (out, description_path(out)):
        if path.exists():
            raise ConfigError(f"{path} exists (pspnet-export never replaces files; choose another --out)")


def _check_out(out: Path, format: str) -> None:
    suffix = SUFFIXES[format]
    if suffix and out.suffix != suffix:
        raise ConfigError(f"--out for --format {format} must end in {suffix}: {out}")
    if not suffix and out.suffix in (".onnx", ".tflite", ".keras", ".json"):
        raise ConfigError(f"--out for --format saved_model is a folder, not a {out.suffix} file: {out}")
    _refuse_existing(out)
    for folder in (out.parent, *out.parent.parents):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"the output folder {folder} is a file: {out}")


def _make_folder(folder: Path) -> list[Path]:
    """Creates ``folder`` and its missing parents, as predict and evaluate do; returns those made, deepest first.

    Raises:
        ConfigError: it cannot be created (read-only file system, no permission).
    """
    made = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the output folder ({error.strerror or first_line(error)}): {folder}"
        ) from None
    return made


def _remove_empty(folders: list[Path]) -> None:
    """Removes the folders an export made, deepest first, where nothing else was put in them."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty: something else writes there now
            return


def _float32(model):
    """The model itself, or a float32 copy of a mixed-precision one (the converters want float32)."""
    import keras

    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def plain(value):
        if isinstance(value, dict):
            if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and str(
                value.get("config", {}).get("name", "")
            ).startswith("mixed_"):
                return "float32"
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    copy = keras.Model.from_config(plain(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def _serving_model(model, size: tuple[int, int], source):
    """The model at a fixed size with a dynamic batch, returning only its main output."""
    import keras

    from pspnet.inference.segmenter import main_output

    try:
        inputs = keras.Input((*size, 3), name="photos", dtype="float32")
        return keras.Model(inputs, main_output(model(inputs)), name="pspnet_export")
    except Exception as error:  # shape errors of any layer
        raise ConfigError(
            f"cannot build the model at {size[0]}x{size[1]} ({first_line(error)}); try another --image-size: {source}"
        ) from None


def check_photos(size: tuple[int, int], count: int = CHECK_PHOTOS) -> np.ndarray:
    """``count`` generated street scenes at ``size``, float32 0-255: what exports are checked on without photos."""
    import cv2

    from pspnet.data.synth import render_scene

    height, width = size
    side = max(64, height, width)
    return np.stack(
        [
            cv2.resize(render_scene(seed, size=side)[0], (width, height), interpolation=cv2.INTER_AREA)
            for seed in range(count)
        ]
    ).astype(np.float32)


def _listed(folder: str | os.PathLike, flag: str) -> list:
    """Readers of the photos a flag names: a folder's images (or composites), or a data set root's val photos.

    A folder that holds images is read as it is; any other folder is a data
    set root of any layout (``pspnet.data.layouts.resolve_split``), whose
    val split's photos are read. A missing folder is named with its flag.

    Returns:
        A list of functions without arguments, each returning one uint8 RGB photo.
    """
    from pspnet.data.files import IMAGE_SUFFIXES
    from pspnet.data.inputs import list_inputs, read_input

    path = Path(folder)
    if not path.exists():
        raise ConfigError(f"{flag} folder not found: {folder}")
    if path.is_dir() and not any(entry.suffix.lower() in IMAGE_SUFFIXES for entry in path.iterdir() if entry.is_file()):
        from pspnet.data.layouts import resolve_split

        split = resolve_split(path)
        return [functools.partial(split.read_photo, index) for index in range(len(split))]
    return [lambda path=path: read_input(path).photo for path in list_inputs(path)]


def _convert(serving, format: str, work: Path, size: tuple[int, int], calibration) -> Path:
    """Writes the artefact into ``work``; returns its path."""
    import keras

    # LiteRT gets a batch of one: its converted pyramid pooling cannot be
    # resized to another batch (XNNPACK fails to prepare), and phones run one
    # frame at a time; pspnet.inference.runtimes.LiteRTModel feeds a batch image by image.
    batch = 1 if format == "litert" else None
    signature = [keras.InputSpec(shape=(batch, *size, 3), dtype="float32", name="photos")]
    saved = work / "saved_model"
    try:
        if format == "onnx":
            path = work / "model.onnx"
            _quietly(lambda: serving.export(str(path), format="onnx", verbose=False, input_signature=signature))
            return path
        _quietly(lambda: serving.export(str(saved), format="tf_saved_model", verbose=False, input_signature=signature))
        if format == "saved_model":
            return saved
        path = work / "model.tflite"
        path.write_bytes(_to_litert(saved, calibration))
        return path
    except ConfigError:
        raise
    except ImportError as error:
        package = {"onnx": "tf2onnx and onnx"}.get(format, "tensorflow")
        raise ConfigError(
            f"--format {format} needs {package} ({error}): pip install {package.replace(' and ', ' ')}"
        ) from None
    except Exception as error:  # converters raise their own types
        raise ConfigError(f"cannot convert the model to {format}: {first_line(error)}") from None


def _to_litert(saved: Path, calibration) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if calibration is not None:

        def representative():
            for photo in calibration:
                yield [photo[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return _quietly(converter.convert)


def _folder_photos(readers: list, size: tuple[int, int]) -> np.ndarray:
    """The photos of ``_listed`` readers at the export size: float32 (N, H, W, 3) in 0-255."""
    import cv2

    return np.stack(
        [cv2.resize(read(), (size[1], size[0]), interpolation=cv2.INTER_AREA).astype(np.float32) for read in readers]
    )


def _scores(runner, photos: np.ndarray, batch_size: int = 3) -> np.ndarray:
    """``runner.predict_on_batch`` over ``photos`` in batches of 3 and the rest (the batch is dynamic)."""
    return np.concatenate(
        [
            np.asarray(runner.predict_on_batch(photos[start : start + batch_size]), np.float32)
            for start in range(0, len(photos), batch_size)
        ]
    )


def _check(path: Path, format: str, quantized: bool, photos: np.ndarray, expected: np.ndarray) -> dict:
    """Runs the artefact in its runtime on ``photos`` and compares it with Keras."""
    got = _scores(open_exported(path), photos)
    if got.shape != expected.shape:
        raise ConfigError(f"the {format} export returns shape {got.shape}, Keras {expected.shape}")
    scale = max(1.0, float(np.abs(expected).max()))
    difference = float(np.abs(got - expected).max())
    agreement = float((got.argmax(-1) == expected.argmax(-1)).mean())
    check = {
        "photos": len(photos),
        "max_abs_difference": difference,
        "score_scale": scale,
        "class_agreement": agreement,
    }
    if quantized:
        check["min_class_agreement"] = INT8_AGREEMENT
        if agreement < INT8_AGREEMENT:
            raise ConfigError(
                f"the int8 {format} export agrees with the float model on {agreement:.1%} of pixels, "
                f"less than {INT8_AGREEMENT:.0%}; calibrate on photos like the real ones"
            )
    else:
        check["tolerance"] = TOLERANCE[format] * scale
        if not difference <= TOLERANCE[format] * scale:
            raise ConfigError(
                f"the {format} export differs from the Keras model by {difference:.3g} "
                f"(allowed {TOLERANCE[format] * scale:.3g}); not written"
            )
    return check


def _check_text(check: dict) -> str:
    """ "checked on 4 generated street scenes: max |difference| 4e-06 <= 0.00025"."""
    if "tolerance" in check:
        return (
            f"checked on {check['photos']} {check['images']}: max |difference| "
            f"{check['max_abs_difference']:.2g} <= {check['tolerance']:.2g}"
        )
    return f"checked on {check['photos']} {check['images']}: {check['class_agreement']:.1%} of pixels agree with float"


def _class_table(info, model_path):
    """The class table of the model (Cityscapes for files saved before tables were stored).

    Raises:
        ConfigError: the model predicts other than 19 classes and its file does not say which.
    """
    try:
        return info.class_table()
    except ConfigError as error:
        raise ConfigError(f"{error}; export a model saved by pspnet-train: {model_path}") from None


def _description(info, table, format: str, quantized: bool, size, model_path, channels: int, check: dict) -> dict:
    from pspnet import __version__

    classes = info.head == "classes"
    return {
        "format": format,
        "quantized": "int8" if quantized else None,
        "input": {
            "name": "photos",
            "shape": [1 if format == "litert" else None, size[0], size[1], 3],
            "dtype": "float32",
            "layout": "NHWC",
            "values": "RGB 0-255 (normalised inside the model)",
        },
        "output": {
            "shape": [1 if format == "litert" else None, size[0], size[1], channels],
            "values": "class logits: argmax over the last axis is the train id"
            if classes
            else "RGB colours in 0-1 (the seed's head): snap to the nearest class colour",
        },
        "head": info.head,
        "num_classes": info.num_classes,
        # The class table, flat: the names and colours in train-id order (argmax i is classes[i]).
        "classes": list(table.names),
        "colors": [list(color) for color in table.colors],
        "ignore_index": table.ignore_index,
        "preset": info.preset,
        "trained_image_size": None if info.image_size is None else list(info.image_size),
        # The layout it trained on: a pairs model's photos are stretched to its size, not letterboxed.
        "layout": info.layout,
        "source": str(Path(model_path).resolve()),
        "pspnet_version": __version__,
        "check": check,
    }


def _quietly(function):
    """Calls ``function`` with the converters' chatter silenced: tf2onnx's log and
    anything printed. (stderr is left alone: a logging handler made while it was
    swapped would keep the swapped, later closed, stream.)"""
    import logging

    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # tf2onnx reads np.object, which NumPy 2 deprecates
            warnings.simplefilter("ignore", DeprecationWarning)
            return function()
    finally:
        logger.setLevel(level)
