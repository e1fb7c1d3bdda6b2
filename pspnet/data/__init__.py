"""The data layer: files on disk -> photos and train ids -> training batches.

One module per job: ``files`` (reading photo and label files), ``composites``
(the Kaggle photo|label pairs), ``labels`` (colour labels -> train ids),
``classes`` (class tables: names, colours, ignore index), ``layouts`` (the
pairs, the official Cityscapes tree and image/mask folders), ``samples``
(a split scanned once, decoded on the fly or from the cache), ``cache`` (a
split of pairs decoded once and memory-mapped after), ``pipeline`` (the
augmented batches; it needs Keras), ``synth`` and ``synth_layouts`` (the
synthetic scenes of the demo set, in every layout).

Example::

    split = open_split("cityscapes_data", "val")  # any layout, detected
    photos, train_ids, summary = load_arrays(split)  # pairs: (500,256,256,3), (500,256,256)
    dataset = SegmentationDataset(photos, train_ids, batch_size=8)
"""

from __future__ import annotations

from pspnet.data.cache import CACHE_FORMAT, FAR_DISTANCE, SplitSummary, load_split, summarize_split
from pspnet.data.classes import CITYSCAPES, ClassTable, read_dataset_json
from pspnet.data.composites import read_pair, split_composite
from pspnet.data.files import IMAGE_SUFFIXES, list_images, natural_key, read_any_photo, read_photo
from pspnet.data.labels import class_pixel_counts, class_pixel_shares, decode_labels
from pspnet.data.layouts import LAYOUTS, Sample, Split, detect_layout, open_split, resolve_split
from pspnet.data.samples import load_arrays, scan_split
from pspnet.fileio import default_cache_dir

__all__ = [
    "CACHE_FORMAT",
    "CITYSCAPES",
    "ClassTable",
    "LAYOUTS",
    "Sample",
    "Split",
    "detect_layout",
    "load_arrays",
    "open_split",
    "read_dataset_json",
    "resolve_split",
    "scan_split",
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
