"""The model presets and heads: their names and the sizes they accept.

Plain data (no Keras), so the command line builds its parsers without a backend.
"""

PRESETS = ("fast", "seed", "pspnet50", "lite", "lite1", "lite2")  # model presets (pspnet.models.builder.build_pspnet)
HEADS = ("classes", "rgb")  # class logits, or the seed's sigmoid colour image
# The smallest height/width each preset accepts.
MIN_SIZE = {"fast": 8, "seed": 8, "pspnet50": 32, "lite": 32, "lite1": 32, "lite2": 32}
# The presets with a choice of output stride: default first.
OUTPUT_STRIDES = {"fast": (8, 4), "lite": (16, 8, 32), "lite1": (16, 8, 32), "lite2": (16, 8, 32)}
PRETRAINED = ("pspnet50", "lite", "lite1", "lite2")  # the presets with an ImageNet backbone
# The EfficientNet-Lite presets and their backbone (pspnet.models.backbones.VARIANTS).
LITE_VARIANTS = {"lite": "lite0", "lite1": "lite1", "lite2": "lite2"}
# The lite presets' decoders (pspnet.models.lite): default first.
DECODERS = ("pyramid", "fusion")
