"""PSPNet semantic segmentation of Cityscapes street scenes in Keras 3."""

__version__ = "0.1.0"
