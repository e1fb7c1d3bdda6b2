"""What a decoded split holds: its files, image size, pixels per class and label decode distances.

Kept in each cache entry beside the arrays (``pspnet.data.cache``) and
extended for the other layouts (``pspnet.data.samples.LayoutSummary``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pspnet.errors import ConfigError

__all__ = ["FAR_DISTANCE", "SplitSummary"]

# A label pixel farther than this (Euclidean RGB) from every palette colour is
# "far". Measured on real val labels: JPEG noise moves 99.5% of the pixels of
# uniform regions by at most 16; 29% of border pixels (bilinear blends) and
# ~10% of all pixels lie beyond 30; see tests/test_real_data.py.
FAR_DISTANCE = 30


@dataclass
class SplitSummary:
    """What a decoded split holds; kept in the cache beside the arrays.

    ``class_pixels`` is int64 (num_classes + 1,): the class ids (the pairs:
    the 19 Cityscapes train ids), then void.
    ``distance_histogram`` is int64 (256,): label pixels per rounded distance
    to the nearest palette colour.
    """

    folder: str
    num_images: int
    image_size: tuple[int, int]  # (height, width) of one half
    files: list[str]
    class_pixels: np.ndarray
    distance_histogram: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    far_images: list[tuple[str, float]] = field(default_factory=list)  # (file, far share)
    seconds: float = 0.0  # decoding time (0 when read from the cache)
    cached: bool = False  # read from the cache

    def class_shares(self) -> np.ndarray:
        """float64 (NUM_CLASSES + 1,): share of all label pixels per class, void last."""
        return self.class_pixels / max(int(self.class_pixels.sum()), 1)

    def far_share(self, threshold: int = FAR_DISTANCE) -> float:
        """Share of label pixels farther than ``threshold`` (0 or more) from every palette colour."""
        if threshold < 0:  # a negative index would count the last bins instead
            raise ConfigError(f"threshold={threshold} must be 0 or more", flags={"threshold=": "--far "})
        return float(self.distance_histogram[threshold + 1 :].sum() / max(int(self.distance_histogram.sum()), 1))

    def distance_percentile(self, q: float) -> int:
        """The q-th percentile (0-100) of the per-pixel decode distance."""
        cumulative = np.cumsum(self.distance_histogram)
        if cumulative[-1] == 0:
            return 0
        return int(np.searchsorted(cumulative, q / 100.0 * cumulative[-1], side="left"))

    def mean_distance(self) -> float:
        """The mean per-pixel decode distance."""
        total = max(int(self.distance_histogram.sum()), 1)
        return float((self.distance_histogram * np.arange(256)).sum() / total)

    def to_json(self) -> dict:
        return {
            "folder": self.folder,
            "num_images": self.num_images,
            "image_size": list(self.image_size),
            "files": self.files,
            "class_pixels": self.class_pixels.tolist(),
            "distance_histogram": self.distance_histogram.tolist(),
            "skipped": [list(item) for item in self.skipped],
            "far_images": [list(item) for item in self.far_images],
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: dict) -> SplitSummary:
        return cls(
            folder=data["folder"],
            num_images=int(data["num_images"]),
            image_size=tuple(data["image_size"]),
            files=list(data["files"]),
            class_pixels=np.asarray(data["class_pixels"], dtype=np.int64),
            distance_histogram=np.asarray(data["distance_histogram"], dtype=np.int64),
            skipped=[tuple(item) for item in data["skipped"]],
            far_images=[(name, float(share)) for name, share in data["far_images"]],
            seconds=float(data.get("seconds", 0.0)),
        )
