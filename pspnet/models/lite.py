"""The "lite" presets: an ImageNet-pretrained EfficientNet-Lite (0, 1 or 2) and a small pyramid head."""

from __future__ import annotations

from pspnet.models.backbones import lite_features
from pspnet.models.blocks import fcn_head, output_head, pyramid_pooling_module


def build_lite(inputs, channels: int, head: str, dropout: float, output_stride: int, variant: str = "lite0"):
    """EfficientNet-Lite ``variant`` (``pspnet.models.backbones``) at output stride 16 with a small pyramid head.

    The backbone's last block (320 channels; Lite2's 352) at 1/16 of the input (its last
    stride-2 stage dilated instead of strided; 8 and 32 on request), PSPNet's
    pyramid of bins 1, 2, 3 and 6 reduced to 96 channels each (conv-BN-ReLU),
    concatenated with the features, then a 3x3 conv of 128 + BN + ReLU,
    dropout, a 1x1 classifier and bilinear upsampling to the input. Built to
    start from ImageNet weights (``backbone_weights="imagenet"``), which make
    the difference when training is short. The presets "lite", "lite1" and
    "lite2" are this head on Lite0, Lite1 and Lite2 (``presets.LITE_VARIANTS``).
    """
    features = lite_features(inputs, variant, output_stride)["last"]  # (B, H/16, W/16, 320)
    x = pyramid_pooling_module(features, (1, 2, 3, 6), 96, name="ppm")  # (B, H/16, W/16, 320 + 384)
    x = fcn_head(x, 128, channels, dropout, "head")
    return output_head(x, inputs, head, "logits" if head == "classes" else "rgb")
