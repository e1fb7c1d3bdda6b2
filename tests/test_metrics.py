"""Tests for pspnet.metrics: scores equal hand-computed ones."""

import json
import math

import numpy as np
import pytest

from pspnet.metrics import ConfusionMatrix, confusion_matrix, scores, to_jsonable

# Truth and prediction over 12 pixels, 3 classes, two of them void (255).
TRUTH = np.array([[0, 0, 0, 0, 1, 1], [1, 2, 2, 255, 255, 0]])
PRED = np.array([[0, 0, 0, 1, 1, 2], [1, 2, 0, 2, 1, 0]])
# Valid pixels by (truth, prediction):
#   truth 0: (0,0) x4, (0,1) x1          -> row 0 = [4, 1, 0]
#   truth 1: (1,1) x2, (1,2) x1          -> row 1 = [0, 2, 1]
#   truth 2: (2,2) x1, (2,0) x1          -> row 2 = [1, 0, 1]
EXPECTED = np.array([[4, 1, 0], [0, 2, 1], [1, 0, 1]])


def test_confusion_matrix_counts_pairs_and_skips_void():
    confusion = confusion_matrix(TRUTH, PRED, num_classes=3)
    assert confusion.dtype == np.int64
    np.testing.assert_array_equal(confusion, EXPECTED)


def test_confusion_matrix_without_ignore_index_rejects_255_truth():
    with pytest.raises(ValueError, match="truth ids"):
        confusion_matrix(TRUTH, PRED, num_classes=3, ignore_index=None)


def test_confusion_matrix_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(TRUTH, PRED[:, :3], num_classes=3)


def test_scores_match_hand_computation():
    result = scores(EXPECTED, class_names=["a", "b", "c"])
    # IoU = TP / (row + col - TP): a 4/(5+5-4), b 2/(3+3-2), c 1/(2+2-1).
    iou = [4 / 6, 2 / 4, 1 / 3]
    accuracy = [4 / 5, 2 / 3, 1 / 2]
    assert result["per_class_iou"] == pytest.approx(dict(zip("abc", iou)))
    assert result["per_class_accuracy"] == pytest.approx(dict(zip("abc", accuracy)))
    assert result["mean_iou"] == pytest.approx(np.mean(iou))
    assert result["mean_class_accuracy"] == pytest.approx(np.mean(accuracy))
    assert result["pixel_accuracy"] == pytest.approx(7 / 10)
    # Frequency-weighted IoU: truth frequencies 5/10, 3/10, 2/10.
    assert result["frequency_weighted_iou"] == pytest.approx(0.5 * iou[0] + 0.3 * iou[1] + 0.2 * iou[2])


def test_absent_class_is_nan_and_left_out_of_means():
    # Class 2 neither in truth nor prediction; class 3 predicted but never true.
    truth = np.array([0, 0, 1, 1])
    pred = np.array([0, 3, 1, 1])
    result = scores(confusion_matrix(truth, pred, num_classes=4))
    iou = result["per_class_iou"]
    assert math.isnan(iou["2"]) and math.isnan(result["per_class_accuracy"]["2"])
    assert iou["3"] == 0.0  # a false positive only: IoU 0, counted in the mean
    assert math.isnan(result["per_class_accuracy"]["3"])  # no truth: no accuracy
    assert iou["0"] == pytest.approx(0.5) and iou["1"] == pytest.approx(1.0)
    assert result["mean_iou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert result["mean_class_accuracy"] == pytest.approx((0.5 + 1.0) / 2)


def test_default_class_names_are_cityscapes_for_19_classes():
    result = scores(np.eye(19, dtype=np.int64))
    assert list(result["per_class_iou"])[:3] == ["road", "sidewalk", "building"]
    assert result["mean_iou"] == 1.0
    with pytest.raises(ValueError, match="class names"):
        scores(np.eye(3), class_names=["a", "b"])


def test_empty_confusion_gives_nan_scores():
    result = scores(np.zeros((2, 2), dtype=np.int64))
    assert all(
        math.isnan(result[key])
        for key in ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou")
    )


def test_accumulator_equals_one_shot_matrix():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=(6, 8, 8))
    truth[truth == 4] = 255
    pred = rng.integers(0, 4, size=(6, 8, 8))
    accumulator = ConfusionMatrix(4)
    for start in range(0, 6, 4):  # batches of 4 and 2
        accumulator.update(truth[start : start + 4], pred[start : start + 4])
    np.testing.assert_array_equal(accumulator.matrix, confusion_matrix(truth, pred, 4))
    assert accumulator.result()["mean_iou"] == scores(accumulator.matrix)["mean_iou"]
    accumulator.reset()
    assert accumulator.matrix.sum() == 0


def test_out_of_range_predictions_are_misses_of_their_truth_class():
    # A colour output decoded to a void colour (255) where the truth is a class.
    truth = np.array([0, 0, 1, 1])
    pred = np.array([0, 255, 1, 1])
    with pytest.raises(ValueError, match="return_missed"):
        confusion_matrix(truth, pred, 2)
    confusion, missed = confusion_matrix(truth, pred, 2, return_missed=True)
    np.testing.assert_array_equal(confusion, [[1, 0], [0, 2]])
    np.testing.assert_array_equal(missed, [1, 0])
    accumulator = ConfusionMatrix(2)
    accumulator.update(truth, pred)
    result = accumulator.result(["a", "b"])
    assert result["per_class_iou"]["a"] == pytest.approx(1 / 2)  # the miss is a FN
    assert result["per_class_iou"]["b"] == pytest.approx(1.0)  # no FP booked on b
    assert result["pixel_accuracy"] == pytest.approx(3 / 4)


def test_to_jsonable_writes_nan_as_null():
    result = scores(np.diag([3, 0, 1]), class_names=["a", "b", "c"])
    text = json.dumps(to_jsonable(result), allow_nan=False)
    assert json.loads(text)["per_class_iou"] == {"a": 1.0, "b": None, "c": 1.0}


def test_mean_iou_agrees_with_keras_mean_iou():
    import keras

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 6, size=(2, 16, 16))
    truth[truth == 5] = 255  # void
    pred = rng.integers(0, 4, size=(2, 16, 16))  # class 4 never predicted nor true
    reference = keras.metrics.MeanIoU(num_classes=5, ignore_class=255)
    reference.update_state(truth, pred)
    ours = scores(confusion_matrix(truth, pred, 5))["mean_iou"]
    assert ours == pytest.approx(float(reference.result()), rel=1e-5)


def test_pixel_accuracy_leaves_out_ignored_pixels():
    truth = np.array([[0, 1, 255, 2]], np.int32)
    logits = np.eye(3, dtype=np.float32)[[[0, 2, 1, 2]]]  # right, wrong, (ignored), right
    from pspnet.training.pixel_accuracy import PixelAccuracy

    metric = PixelAccuracy()
    metric.update_state(truth, logits)
    assert float(metric.result()) == pytest.approx(2 / 3)


def test_a_confusion_matrix_scores_under_its_tables_names():
    names = ("soil", "crop", "weed", "water", "stone")
    accumulator = ConfusionMatrix(5, class_names=names)
    accumulator.update(np.array([0, 1, 2, 3, 4, 255]), np.array([0, 1, 2, 3, 0, 1]))
    iou = accumulator.result()["per_class_iou"]
    assert list(iou) == list(names)
    assert iou["crop"] == 1.0 and iou["stone"] == 0.0 and iou["soil"] == pytest.approx(0.5)
    assert list(accumulator.result(["a", "b", "c", "d", "e"])["per_class_iou"]) == ["a", "b", "c", "d", "e"]
    with pytest.raises(ValueError, match="^19 class names for 5 classes$"):
        ConfusionMatrix(5, class_names=[str(index) for index in range(19)])
