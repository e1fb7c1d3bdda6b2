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
from pspnet.config import PRESETS

_registry.register_when_keras_loads()

__all__ = ["PRESETS", "build_pspnet", "load_model"]


def __getattr__(name: str):
    # The functions that need Keras load it on first use (PEP 562).
    if name == "build_pspnet":
        from pspnet.model import build_pspnet

        return build_pspnet
    if name == "load_model":
        from pspnet.modelfile import load_model

        return load_model
    raise AttributeError(f"module 'pspnet' has no attribute {name!r}")
