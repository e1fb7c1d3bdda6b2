"""Exported models run in their own runtimes, behind the one method ``Segmenter`` calls.

``pspnet-export`` writes ONNX (``.onnx``), LiteRT (``.tflite``) and SavedModel
(a folder with ``saved_model.pb``) artefacts, each with a JSON description
beside it (``pspnet.inference.export``). ``load_exported`` opens one in ONNX Runtime,
the LiteRT interpreter or TensorFlow, and returns an object with the two
things ``pspnet.inference.segmenter.Segmenter`` uses of a Keras model, ``input_shape``
and ``predict_on_batch``, plus the ``ModelInfo`` of its description: an
exported model is scored and predicted exactly as the ``.keras`` file it came from.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from pspnet.checks import parse_size
from pspnet.errors import ConfigError, first_line
from pspnet.models.modelfile import ModelInfo

FORMATS = ("onnx", "litert", "saved_model")
SUFFIXES = {"onnx": ".onnx", "litert": ".tflite", "saved_model": ""}


def exported_format(path: str | os.PathLike) -> str | None:
    """The export format of a path by its name (a folder holding saved_model.pb is a SavedModel), or None."""
    path = Path(path)
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".tflite":
        return "litert"
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "saved_model"
    return None


def description_path(path: str | os.PathLike) -> Path:
    """Where the JSON description of an artefact lives: ``model.onnx`` -> ``model.onnx.json``
    (``.onnx`` and ``.tflite`` exports of one name may share a folder)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_description(path: str | os.PathLike) -> dict:
    """The JSON description written beside an exported artefact.

    Raises:
        ConfigError: it is missing or unreadable.
    """
    json_path = description_path(path)
    try:
        description = json.loads(json_path.read_text())
        if not isinstance(description, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise ConfigError(
            f"no description {json_path.name} beside the exported model (pspnet-export writes it): {json_path}"
        ) from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"unreadable export description ({error}): {json_path}") from None
    return description


def info_of(description: dict, source: str | os.PathLike = "") -> ModelInfo:
    """The ``ModelInfo`` an export description holds (``source``: its file, for the error)."""
    try:
        info = ModelInfo(
            head=description["head"],
            num_classes=int(description["num_classes"]),
            preset=description.get("preset"),
            image_size=parse_size(description.get("trained_image_size"), "trained_image_size"),
            pspnet_version=description.get("pspnet_version"),
            layout=description.get("layout"),  # Segmenter's keep_aspect follows it, as for the .keras file
        )
    except (KeyError, TypeError, ValueError, ConfigError) as error:
        raise ConfigError(f"export description lacks or garbles {error}: {source}") from None
    info.classes = _class_table_of(description, info, source)
    return info


def _class_table_of(description: dict, info: ModelInfo, source) -> dict | None:
    """The class table (``ClassTable.to_json`` form) of an export description; None when it names no classes."""
    from pspnet.data.classes import ClassTable

    if description.get("classes") is None:
        return None  # info.class_table() then falls back to Cityscapes for 19 classes
    try:
        table = ClassTable(description["classes"], description["colors"], description.get("ignore_index", 255))
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"export description garbles its class table ({error}): {source}") from None
    if info.head == "classes" and table.num_classes != info.num_classes:
        raise ConfigError(
            f"export description has {info.num_classes} classes but a table of {table.num_classes}: {source}"
        )
    return table.to_json()


class OnnxModel:
    """An ONNX model in ONNX Runtime (CPU): float32 photos in 0-255, scores out."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError("running an ONNX model needs ONNX Runtime: pip install onnxruntime") from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ONNX Runtime raises its own exception types
            raise ConfigError(f"cannot load ONNX model ({first_line(error)}): {path}") from None
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        self.input_shape = tuple(dim if isinstance(dim, int) else None for dim in spec.shape)

    def predict_on_batch(self, photos: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.asarray(photos, np.float32)})[0]


class LiteRTModel:
    """A LiteRT (TensorFlow Lite) model in its interpreter, fed one image at a time
    (``pspnet-export`` writes LiteRT models with a batch of one)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        interpreter_class = _interpreter_class()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TensorFlow >= 2.20 points to ai-edge-litert on every use
                self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ConfigError(f"cannot load LiteRT model ({first_line(error)}): {path}") from None
        spec = self.interpreter.get_input_details()[0]
        self._input, self._output = spec["index"], self.interpreter.get_output_details()[0]["index"]
        self._batch = int(spec["shape"][0])
        self.input_shape = (None, *(int(dim) for dim in spec["shape"][1:]))

    def predict_on_batch(self, photos: np.ndarray) -> np.ndarray:
        photos = np.asarray(photos, np.float32)
        outputs = []
        for start in range(0, len(photos), self._batch):
            self.interpreter.set_tensor(self._input, photos[start : start + self._batch])
            self.interpreter.invoke()
            outputs.append(self.interpreter.get_tensor(self._output).copy())
        return np.concatenate(outputs)


def _interpreter_class():
    """LiteRT's interpreter: the ai-edge-litert package, else TensorFlow's own copy."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf
    except ImportError:
        raise ConfigError(
            "running a LiteRT model needs ai-edge-litert or tensorflow: pip install ai-edge-litert"
        ) from None
    return tf.lite.Interpreter


class SavedModelRunner:
    """A SavedModel reloaded by TensorFlow, called through its ``serve`` endpoint."""

    def __init__(self, path: str | os.PathLike):
        try:
            import tensorflow as tf
        except ImportError:
            raise ConfigError("running a SavedModel needs tensorflow") from None
        try:
            self.loaded = tf.saved_model.load(str(path))
            self.serve = self.loaded.signatures["serving_default"]
        except Exception as error:  # TensorFlow raises many types here
            raise ConfigError(f"cannot load SavedModel ({first_line(error)}): {path}") from None
        spec = next(iter(self.serve.structured_input_signature[1].values()))
        self.input_shape = tuple(spec.shape.as_list())
        self._input_name = next(iter(self.serve.structured_input_signature[1]))

    def predict_on_batch(self, photos: np.ndarray) -> np.ndarray:
        outputs = self.serve(**{self._input_name: np.asarray(photos, np.float32)})
        return np.asarray(next(iter(outputs.values())))


RUNTIMES = (OnnxModel, LiteRTModel, SavedModelRunner)  # each takes any batch: Segmenter never pads for them


def open_exported(path: str | os.PathLike, threads: int | None = None):
    """The runtime object of an exported artefact, chosen by its name.

    Raises:
        ConfigError: not an exported model, or its runtime cannot load it.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model not found: {path}")
    kind = exported_format(path)
    if kind == "onnx":
        return OnnxModel(path, threads)
    if kind == "litert":
        return LiteRTModel(path, threads)
    if kind == "saved_model":
        return SavedModelRunner(path)
    raise ConfigError(f"not an exported model (.onnx, .tflite or a SavedModel folder): {path}")


def load_exported(path: str | os.PathLike, threads: int | None = None):
    """Opens an exported artefact and reads its description.

    Returns:
        (the runtime object, its ModelInfo).
    """
    if not Path(path).exists():  # a mistyped path is the model's error, not its description's
        raise ConfigError(f"model not found: {path}")
    info = info_of(read_description(path), description_path(path))
    return open_exported(path, threads), info
