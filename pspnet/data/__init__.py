"""The data layer: files on disk -> photos and train ids -> training batches.

One module per job: ``files`` (reading photo and label files), ``composites``
(the Kaggle photo|label pairs), ``labels`` (colour labels -> train ids),
``cache`` (a split decoded once and memory-mapped after), ``pipeline`` (the
augmented batches; it needs Keras) and ``synth`` (the synthetic scenes of the
demo set).

Example::

    photos, train_ids = load_split("cityscapes_data/val")  # (500,256,256,3), (500,256,256)
    dataset = SegmentationDataset(photos, train_ids, batch_size=8)
"""

from __future__ import annotations

from pspnet.data.cache import CACHE_FORMAT, FAR_DISTANCE, SplitSummary, load_split, summarize_split
from pspnet.data.composites import read_pair, split_composite
from pspnet.data.files import IMAGE_SUFFIXES, list_images, natural_key, read_any_photo, read_photo
from pspnet.data.labels import class_pixel_counts, class_pixel_shares, decode_labels
from pspnet.fileio import default_cache_dir

__all__ = [
    "CACHE_FORMAT",
    "FAR_DISTANCE",
    "IMAGE_SUFFIXES",
    "SegmentationDataset",
    "SplitSummary",
    "class_pixel_counts",
    "class_pixel_shares",
    "decode_labels",
    "default_cache_dir",
    "list_images",
    "load_split",
    "natural_key",
    "read_any_photo",
    "read_pair",
    "read_photo",
    "split_composite",
    "summarize_split",
]


def __getattr__(name: str):
    # The pipeline needs Keras; import it only when asked for.
    if name == "SegmentationDataset":
        from pspnet.data.pipeline import SegmentationDataset

        return SegmentationDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
