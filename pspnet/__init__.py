"""PSPNet semantic segmentation of Cityscapes street scenes in Keras 3.

Importing ``pspnet`` defines things and does nothing else: it loads neither
Keras nor a backend, touches no device and leaves the process's allocator
alone. ``build_pspnet`` and ``load_model`` load Keras when first used, and
pspnet's Keras classes are registered whenever Keras loads
(``pspnet.registry``), so ``keras.saving.load_model("RUN/best.keras")``
works after ``import pspnet``.
"""

__version__ = "0.1.0"

from pspnet import registry as _registry
from pspnet.models.presets import PRESETS

_registry.register_when_keras_loads()

__all__ = ["PRESETS", "Segmenter", "TrainConfig", "build_pspnet", "load_model", "train"]


# The names that need Keras load it on first use (PEP 562); TrainConfig does not,
# but its module is loaded only when asked for.
_LAZY = {
    "build_pspnet": "pspnet.models.builder",
    "load_model": "pspnet.models.modelfile",
    "Segmenter": "pspnet.inference.segmenter",
    "TrainConfig": "pspnet.training.config",
    "train": "pspnet.training.loop",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pspnet' has no attribute {name!r}")
