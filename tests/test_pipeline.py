"""pspnet.data.pipeline wrappers: what a padded batch is padded with."""

from __future__ import annotations

import numpy as np

from pspnet.palette import IGNORE_INDEX
from pspnet.data.pipeline import PAD_RGB, PaddedBatches


class ThreeImages:
    """A stand-in dataset of one batch of 3 grey images (uint8 ids 1)."""

    workers, use_multiprocessing, max_queue_size = 1, False, 10

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return np.full((3, 8, 8, 3), 50, np.float32), np.ones((3, 8, 8), np.int32)


def test_padded_batches_pad_with_the_mean_photo_and_ignored_labels():
    photos, train_ids = PaddedBatches(ThreeImages(), 4)[0]
    assert photos.shape == (4, 8, 8, 3) and train_ids.shape == (4, 8, 8)
    # A black photo would shift batch-norm statistics more than an average one.
    assert (photos[3] == np.array(PAD_RGB, np.float32)).all() and (photos[:3] == 50).all()
    assert (train_ids[3] == IGNORE_INDEX).all() and (train_ids[:3] == 1).all()
