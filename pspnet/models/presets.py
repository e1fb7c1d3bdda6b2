"""The model presets and heads: their names and the sizes they accept.

Plain data (no Keras), so the command line builds its parsers without a backend.
"""

PRESETS = ("fast", "seed", "pspnet50", "lite")  # model presets (pspnet.models.builder.build_pspnet)
HEADS = ("classes", "rgb")  # class logits, or the seed's sigmoid colour image
MIN_SIZE = {"fast": 8, "seed": 8, "pspnet50": 32, "lite": 32}  # smallest height/width each preset accepts
OUTPUT_STRIDES = {"fast": (8, 4), "lite": (16, 8, 32)}  # the presets with a choice: default first
PRETRAINED = ("pspnet50", "lite")  # the presets with an ImageNet backbone
