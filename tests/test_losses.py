"""Tests of pspnet.training.losses: the weighted cross-entropy and the class weights."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from pspnet.training.losses import WeightedSparseCrossentropy, class_weights, class_weights_from_counts


def test_class_weights_from_pixel_counts():
    train_ids = np.array([[[0, 0, 0, 1], [0, 0, 255, 255]]], np.uint8)  # 5 x class 0, 1 x class 1
    assert np.allclose(class_weights(train_ids, "none", num_classes=3), 1.0)
    weights = class_weights(train_ids, "inverse_sqrt_freq", num_classes=3)
    raw = np.array([1 / math.sqrt(5 / 6), 1 / math.sqrt(1 / 6)])
    raw /= (5 / 6) * raw[0] + (1 / 6) * raw[1]  # pixel-weighted mean 1
    assert np.allclose(weights, [raw[0], raw[1], 1.0])


def test_weighted_crossentropy_ignores_255_and_weights_classes():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    truth = rng.integers(0, 3, size=(2, 4, 4)).astype(np.int32)
    truth[0, 0] = 255
    ones = WeightedSparseCrossentropy([1.0, 1.0, 1.0])(truth, logits)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)(truth, logits)
    assert float(ones) == pytest.approx(float(keras_loss), rel=1e-5)

    weights = np.array([0.5, 2.0, 1.0])
    valid = truth != 255
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    entropy = -np.take_along_axis(log_probs, np.where(valid, truth, 0)[..., None], -1)[..., 0]
    expected = (entropy * weights[np.where(valid, truth, 0)] * valid).sum() / (weights[truth[valid]]).sum()
    assert float(WeightedSparseCrossentropy(weights)(truth, logits)) == pytest.approx(expected, rel=1e-5)


def _entropy(logits, truth):
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, np.where(truth == 255, 0, truth)[..., None], -1)[..., 0]


def test_ohem_averages_the_hard_pixels_and_at_least_the_hardest_share():
    rng = np.random.default_rng(1)
    logits = (3 * rng.normal(size=(2, 8, 8, 4))).astype(np.float32)
    truth = rng.integers(0, 4, size=(2, 8, 8)).astype(np.int32)
    truth[1, :3] = 255
    entropy, valid = _entropy(logits, truth), truth != 255
    hard = valid & (entropy > -math.log(0.7))
    assert 16 < hard.sum() < valid.sum()  # the threshold decides here
    ohem = WeightedSparseCrossentropy(np.ones(4), ohem_threshold=0.7, ohem_min_kept=0.1)
    assert float(ohem(truth, logits)) == pytest.approx(entropy[hard].mean(), rel=1e-5)
    # A threshold no pixel passes: the hardest 10% of the 128 pixels (12), never an ignored one.
    strict = WeightedSparseCrossentropy(np.ones(4), ohem_threshold=1e-6, ohem_min_kept=0.1)
    assert float(strict(truth, logits)) == pytest.approx(np.sort(entropy[valid])[-12:].mean(), rel=1e-5)
    restored = WeightedSparseCrossentropy.from_config(ohem.get_config())
    assert (restored.ohem_threshold, restored.ohem_min_kept) == (0.7, 0.1)


def test_class_weights_of_five_classes_from_maps_of_any_size_and_from_counts():
    # A split decoded on the fly: a list of maps of different sizes, not one array.
    maps = [np.array([[0, 0, 1, 255]], np.uint8), np.array([[0, 2], [2, 4], [9, 255]], np.uint8)]
    weights = class_weights(maps, "median_freq", num_classes=5)
    counts = np.array([3, 1, 2, 0, 1])  # 9 is no class of the five: left out, like 255
    assert weights.shape == (5,)
    np.testing.assert_allclose(weights, class_weights_from_counts(counts, "median_freq"))
    frequency = counts / counts.sum()
    present = counts > 0
    assert weights[3] == 1.0  # absent
    assert np.sum(frequency[present] * weights[present]) == pytest.approx(1.0)
    assert weights[1] / weights[0] == pytest.approx(3.0)  # median(f) / f_c: three times rarer
