"""The ``.keras`` model file: saved with what the model is, checked and loaded back.

A model saved by ``save_model`` carries ``pspnet.json`` inside its ``.keras``
archive (beside Keras's own ``config.json`` and weights; Keras ignores it):
its preset, head, class count, class table (names, colours, ignore index:
``info.class_table()``) and the size it was trained at. Whoever loads
it (evaluation, prediction, export, another program) reads what it is instead
of guessing from layer names, and the file stays one file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pspnet.checks import parse_size
from pspnet.data.classes import ClassTable
from pspnet.errors import ConfigError, first_line
from pspnet.fileio import atomic_write
from pspnet.models.presets import HEADS

INFO_NAME = "pspnet.json"  # the member of the .keras archive that describes the model

# What reading a damaged archive raises besides BadZipFile: zlib for a deflated
# member cut or changed in its stream, zipfile for an unknown compression method
# (NotImplementedError) or an encrypted member (RuntimeError).
_ARCHIVE_ERRORS = (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError, RuntimeError)


@dataclass
class ModelInfo:
    """What a saved model is."""

    head: str  # "classes" (logits) or "rgb" (the seed's sigmoid colours)
    num_classes: int  # classes of the logits (19 for Cityscapes train ids)
    preset: str | None = None  # pspnet.models.builder preset, None for a model built elsewhere
    image_size: tuple[int, int] | None = None  # (H, W) it was trained at; None: unknown
    pspnet_version: str | None = None  # the package version that saved it
    classes: dict | None = None  # its ClassTable (pspnet.data.classes) as JSON; None: the 19 Cityscapes classes
    layout: str | None = None  # the data layout it trained on (pspnet.data.layouts); pairs: frames squashed square

    def class_table(self):
        """The ``pspnet.data.classes.ClassTable`` of the classes it predicts (Cityscapes when not stored).

        Raises:
            ConfigError: no table is stored and the model does not predict the 19 Cityscapes classes.
        """
        from pspnet.data.classes import CITYSCAPES, ClassTable

        if self.classes is not None:
            return ClassTable.from_json(self.classes)
        if self.head == "rgb" or self.num_classes == CITYSCAPES.num_classes:
            return CITYSCAPES  # every model saved before tables were stored learned these
        raise ConfigError(f"the model predicts {self.num_classes} classes but does not say which")

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        values["image_size"] = None if self.image_size is None else list(self.image_size)
        return json.dumps(values, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        values = json.loads(text)
        if not isinstance(values, dict):  # any JSON value parses; only an object describes a model
            kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
                type(values), "a number"
            )
            raise ValueError(f"not a JSON object but {kind}")
        known = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in values.items() if key in known}  # newer files may say more
        info = cls(**values)
        info.image_size = parse_size(info.image_size)
        if info.head not in HEADS:
            raise ValueError(f"unknown head {info.head!r}")
        if info.classes is not None:
            table = ClassTable.from_json(info.classes)  # ValueError names what is wrong
            if info.head == "classes" and table.num_classes != info.num_classes:
                raise ValueError(f"{info.num_classes} classes but a table of {table.num_classes}")
        return info


def save_model(model, path: str | os.PathLike, info: ModelInfo) -> None:
    """Saves ``model`` as a ``.keras`` file holding ``info``, atomically.

    Args:
        model: a keras.Model.
        path: the ``.keras`` file (replaced whole, never left half-written).
        info: what the model is.
    """
    if info.pspnet_version is None:
        from pspnet import __version__

        info = dataclasses.replace(info, pspnet_version=__version__)

    def write(temporary: Path) -> None:
        with _plain_batch_norm(model):
            model.save(str(temporary))
        with zipfile.ZipFile(temporary, "a") as archive:
            archive.writestr(INFO_NAME, info.to_json())

    atomic_write(path, write, suffix=".keras")


def all_layers(model) -> list:
    """Every layer of a model, nested models' layers included."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(all_layers(layer))
    return found


@contextlib.contextmanager
def _plain_batch_norm(model):
    """Batch norm synchronised across replicas (pspnet.training.distribute) saved as plain batch norm.

    Synchronisation is how a run trains, not what the model is; and Keras
    refuses ``synchronized=True`` when it loads a model on JAX or PyTorch.
    """
    synchronised = [layer for layer in all_layers(model) if getattr(layer, "synchronized", False) is True]
    for layer in synchronised:
        layer.synchronized = False
    try:
        yield
    finally:
        for layer in synchronised:
            layer.synchronized = True


def check_model_file(path: str | os.PathLike) -> Path:
    """Checks that ``path`` is a complete ``.keras`` archive before Keras reads it.

    Raises:
        ConfigError: missing, a folder, not ``.keras``, or damaged (truncated,
            not a zip archive, a member failing its checksum, no Keras config).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"not a model file: {path}")
    if path.suffix != ".keras":
        raise ConfigError(f"not a .keras model file: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()  # reads every member and checks its CRC
            names = set(archive.namelist())
    except _ARCHIVE_ERRORS as error:
        raise ConfigError(f"model file is damaged (not a complete .keras archive: {error}): {path}") from None
    if broken is not None:
        raise ConfigError(f"model file is damaged ({broken} fails its checksum): {path}")
    if "config.json" not in names:
        raise ConfigError(f"model file is damaged (no config.json in the archive): {path}")
    return path


def read_model_info(path: str | os.PathLike) -> ModelInfo | None:
    """The ``ModelInfo`` stored in a ``.keras`` file, or None when it holds none.

    Raises:
        ConfigError: the stored description is unreadable.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            if INFO_NAME not in archive.namelist():
                return None
            data = archive.read(INFO_NAME)
    except _ARCHIVE_ERRORS as error:
        raise ConfigError(f"model file is damaged ({error}): {path}") from None
    try:
        return ModelInfo.from_json(data.decode("utf-8"))  # a UnicodeDecodeError is a ValueError
    except (ValueError, TypeError, ConfigError) as error:
        raise ConfigError(f"model file has an unreadable {INFO_NAME} ({error}): {path}") from None


def describe_model(model) -> ModelInfo:
    """A ``ModelInfo`` for a model saved without one, from its output shape alone.

    Three output channels (or the seed notebook's flattened H*W*3) are the
    colour head; anything else is class logits. The training size is unknown.
    """
    output_shape = model.output_shape
    if isinstance(output_shape, dict):
        output_shape = output_shape["main"] if "main" in output_shape else next(iter(output_shape.values()))
    elif isinstance(output_shape, list):
        output_shape = output_shape[0]
    channels = output_shape[-1]
    rgb = channels == 3 or (len(output_shape) == 2 and channels is not None and channels % 3 == 0)
    return ModelInfo(head="rgb" if rgb else "classes", num_classes=3 if rgb else int(channels or 0))


def load_model(path: str | os.PathLike, compile: bool = False) -> tuple[Any, ModelInfo]:
    """Loads a ``.keras`` model with every pspnet object registered (safe mode).

    Args:
        path: the model file.
        compile: also restore the loss, metrics and optimizer (training state).

    Returns:
        (the keras.Model, its ModelInfo: stored, or described from its shape).

    Raises:
        ConfigError: the file is missing, damaged or not a loadable Keras model.
    """
    path = check_model_file(path)
    info = read_model_info(path)

    import keras

    from pspnet import registry

    registry.register_all()
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # JSON, h5 and deserialisation errors alike
        raise ConfigError(f"cannot load model {path}: {first_line(error)}") from None
    return model, info or describe_model(model)
