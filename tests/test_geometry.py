"""pspnet.data.geometry: the padding colour, fitting and padded arrays of training and inference."""

from __future__ import annotations

import numpy as np

from pspnet.data.geometry import PAD_RGB, fit_size, pad_rows, padded_photos, scaled_size


def test_scaled_size_rounds_and_keeps_the_base_at_scale_one():
    assert scaled_size((512, 1024)) == (512, 1024)
    assert scaled_size((512, 1024), 0.75) == (384, 768)
    assert scaled_size((3, 3), 0.01) == (1, 1)


def test_fit_size_fits_a_square_in_a_square_exactly():
    assert fit_size((100, 100), (64, 64)) == (64, 64)
    assert fit_size((1024, 2048), (512, 512)) == (256, 512)
    assert fit_size((2048, 1024), (512, 512)) == (512, 256)


def test_pad_rows_appends_fill_rows_up_to_the_batch():
    photos = np.ones((2, 4, 4, 3), np.float32)
    padded = pad_rows(photos, 3, PAD_RGB)
    assert padded.shape == (3, 4, 4, 3) and padded.dtype == np.float32
    assert (padded[:2] == 1).all() and (padded[2] == np.float32(PAD_RGB)).all()
    assert pad_rows(photos, 2) is photos and pad_rows(photos, 1) is photos
    assert (pad_rows(np.full((1, 2), 7, np.uint8), 2, 255)[1] == 255).all()


def test_padded_photos_are_pad_rgb_of_the_asked_size_and_dtype():
    photos = padded_photos(2, (3, 5), np.uint8)
    assert photos.shape == (2, 3, 5, 3) and photos.dtype == np.uint8
    assert (photos == np.array(PAD_RGB, np.uint8)).all()
