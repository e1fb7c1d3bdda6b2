"""PSPNet semantic segmentation of Cityscapes street scenes in Keras 3."""

__version__ = "0.1.0"

from pspnet._quiet import import_keras_quietly as _import_keras_quietly
from pspnet.allocator import pad_heap as _pad_heap

# Before TensorFlow's runtime starts, or it has no effect (pspnet/allocator.py).
_pad_heap()
_import_keras_quietly()

# Importing the layers registers them with Keras, so that saved models load
# with keras.saving.load_model(path) without custom_objects.
from pspnet import layers  # noqa: E402,F401
from pspnet.model import PRESETS, build_pspnet  # noqa: E402

__all__ = ["PRESETS", "build_pspnet", "layers"]
