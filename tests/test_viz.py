"""Tests for pspnet.inference.viz: arrays of the right shape and colours, figures of the right layout."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from pspnet.data.classes import CITYSCAPES, ClassTable
from pspnet.inference import viz
from pspnet.palette import CLASSES, NUM_CLASSES


def _train_ids(height=32, width=64):
    """A map with every class in a stripe and a void stripe at the end."""
    ids = np.full((height, width), 255, dtype=np.uint8)
    for train_id in range(NUM_CLASSES):
        ids[:, train_id * 3 : (train_id + 1) * 3] = train_id
    return ids


def test_colorize_paints_palette_colours_and_void_black():
    colors = viz.colorize(_train_ids())
    assert colors.shape == (32, 64, 3) and colors.dtype == np.uint8
    for info in CLASSES:
        np.testing.assert_array_equal(colors[5, info.train_id * 3], info.color)
    np.testing.assert_array_equal(colors[0, -1], (0, 0, 0))


def test_colorize_keeps_batch_shape_and_custom_ignore_colour():
    batch = np.stack([_train_ids(), np.zeros((32, 64), np.uint8)])
    colors = viz.colorize(batch, ignore_color=(255, 255, 255))
    assert colors.shape == (2, 32, 64, 3)
    np.testing.assert_array_equal(colors[0, 0, -1], (255, 255, 255))
    np.testing.assert_array_equal(colors[1, 3, 3], CLASSES[0].color)
    with pytest.raises(TypeError):
        viz.colorize(np.zeros((2, 2), np.float32))


def test_overlay_blends_classes_and_leaves_void_alone():
    photo = np.full((32, 64, 3), 100, dtype=np.uint8)
    ids = _train_ids()
    blended = viz.overlay(photo, ids, alpha=0.5)
    assert blended.shape == (32, 64, 3) and blended.dtype == np.uint8
    road = np.array(CLASSES[0].color, dtype=np.float64)
    np.testing.assert_array_equal(blended[0, 0], np.rint(0.5 * 100 + 0.5 * road))
    np.testing.assert_array_equal(blended[0, -1], (100, 100, 100))  # void
    np.testing.assert_array_equal(viz.overlay(photo, ids, alpha=0.0), photo)


def test_overlay_resizes_a_smaller_map_with_nearest_neighbour():
    photo = np.zeros((32, 64, 3), dtype=np.float32)
    small = np.zeros((8, 16), dtype=np.uint8)
    small[:, 8:] = 13  # car on the right half
    blended = viz.overlay(photo, small, alpha=1.0)
    np.testing.assert_array_equal(blended[10, 5], CLASSES[0].color)
    np.testing.assert_array_equal(blended[10, 60], CLASSES[13].color)
    # Nearest neighbour: only the two class colours, no blends between them.
    assert len(np.unique(blended.reshape(-1, 3), axis=0)) == 2


@pytest.mark.parametrize("map_size", [(32, 64), (8, 16)])
def test_overlay_leaves_every_id_colorize_calls_void_alone(map_size):
    # Ids outside 0-18 are void to colorize; resized as uint8 they wrapped (256 became road).
    photo = np.full((32, 64, 3), 100, dtype=np.uint8)
    ids = np.zeros(map_size, dtype=np.int32)
    ids[:, : map_size[1] // 4] = 256
    ids[:, map_size[1] // 4 : map_size[1] // 2] = -2
    ids[:, map_size[1] // 2 : 3 * map_size[1] // 4] = NUM_CLASSES
    blended = viz.overlay(photo, ids, alpha=0.5)
    np.testing.assert_array_equal(blended[:, :48], photo[:, :48])
    road = np.array(CLASSES[0].color, dtype=np.float64)
    np.testing.assert_array_equal(blended[0, -1], np.rint(0.5 * 100 + 0.5 * road))


def test_three_panel_one_and_many_samples():
    photos = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    ids = np.stack([_train_ids(32, 64)[:, :32]] * 3)
    figure = viz.three_panel(photos, ids, ids)
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 9
    assert [axis.get_title() for axis in figure.axes[:3]] == ["photo", "truth", "prediction"]
    # The truth panel shows the colourised map.
    np.testing.assert_array_equal(figure.axes[1].images[0].get_array(), viz.colorize(ids[0]))

    single = viz.three_panel(photos[0], ids[0], np.zeros((32, 32, 3), np.float32))
    assert len(single.axes) == 3
    without_truth = viz.three_panel(photos, None, ids)
    assert len(without_truth.axes) == 6
    with pytest.raises(ValueError, match="photos"):
        viz.three_panel(photos, ids[:2], ids)


def test_size_mismatches_are_told_in_singular_and_plural():
    photos = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="^1 truth image for 2 photos$"):
        viz.three_panel(photos, np.zeros((1, 8, 8), np.uint8), np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="^1 colour for 2 names$"):
        viz.legend(["x", "y"], [(255, 0, 0)])


def test_legend_has_a_swatch_and_name_per_class():
    figure = viz.legend()
    assert isinstance(figure, Figure)
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert texts == [info.name for info in CLASSES]
    assert len(figure.axes[0].patches) == NUM_CLASSES
    custom = viz.legend(["x", "y"], [(255, 0, 0), (0, 255, 0)])
    np.testing.assert_allclose(custom.axes[0].patches[1].get_facecolor()[:3], (0, 1, 0))


def test_plot_history_from_csv_and_dict(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(
        "epoch,learning_rate,loss,mean_iou,val_loss,val_mean_iou\n"
        "0,0.001,1.5,0.2,1.6,0.18\n1,0.001,1.1,0.3,1.2,0.25\n2,0.001,0.9,0.4,1.0,0.33\n"
    )
    figure = viz.plot_history(path)
    assert isinstance(figure, Figure) and len(figure.axes) == 2
    loss_axis, metric_axis = figure.axes
    assert sorted(line.get_label() for line in loss_axis.lines) == ["loss", "val_loss"]
    assert sorted(line.get_label() for line in metric_axis.lines) == ["mean_iou", "val_mean_iou"]
    np.testing.assert_array_equal(loss_axis.lines[0].get_xdata(), [1, 2, 3])

    only_loss = viz.plot_history({"loss": [1.0, 0.5]})
    assert len(only_loss.axes) == 1


def test_plot_history_draws_only_metrics_never_bookkeeping_columns(tmp_path):
    # The columns pspnet-train's history.csv holds: train_minutes grows to tens of
    # minutes and would squash the [0, 1] scores into a flat line at the bottom.
    path = tmp_path / "history.csv"
    path.write_text(
        "epoch,learning_rate,loss,mean_iou,pixel_accuracy,train_minutes,"
        "val_loss,val_mean_iou,val_pixel_accuracy\n"
        "0,0.001,1.5,0.2,0.5,9.5,1.6,0.18,0.45\n1,0.0005,1.1,0.3,0.6,19.8,1.2,0.25,0.55\n"
    )
    loss_axis, score_axis = viz.plot_history(path).axes
    assert sorted(line.get_label() for line in loss_axis.lines) == ["loss", "val_loss"]
    assert sorted(line.get_label() for line in score_axis.lines) == [
        "mean_iou",
        "pixel_accuracy",
        "val_mean_iou",
        "val_pixel_accuracy",
    ]
    assert score_axis.get_ylim() == (0.0, 1.0)
    only_bookkeeping = viz.plot_history({"train_minutes": [9.5, 19.8], "lr": [1e-3, 5e-4], "steps": [50, 90]})
    assert [line for axis in only_bookkeeping.axes for line in axis.lines] == []


def test_plot_confusion_normalises_rows():
    confusion = np.array([[3, 1], [0, 0]])
    figure = viz.plot_confusion(confusion, ["a", "b"])
    assert isinstance(figure, Figure)
    shown = figure.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown, [[0.75, 0.25], [0.0, 0.0]])
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["a", "b"]
    raw = viz.plot_confusion(confusion, ["a", "b"], normalize=False)
    np.testing.assert_array_equal(raw.axes[0].images[0].get_array(), confusion)


def test_plot_per_class_iou_bars_and_nan():
    figure = viz.plot_per_class_iou({"road": 0.9, "sky": float("nan"), "car": None}, mean_iou=0.9)
    axis = figure.axes[0]
    widths = [patch.get_width() for patch in axis.patches]
    assert widths == [0.9, 0.0, 0.0]
    labels = [text.get_text() for text in axis.texts]
    assert labels == ["0.90", "n/a", "n/a"]
    road = np.array(CLASSES[0].color) / 255
    np.testing.assert_allclose(axis.patches[0].get_facecolor()[:3], road)


def test_figures_save_without_pyplot(tmp_path):
    figure = viz.plot_confusion(np.eye(19, dtype=np.int64))
    figure.savefig(tmp_path / "confusion.png")
    assert (tmp_path / "confusion.png").stat().st_size > 1000


# --- a class table of one's own: five classes, none of them Cityscapes' --------------

FARM = ClassTable(
    ("soil", "crop", "weed", "water", "stone"),
    ((120, 80, 40), (0, 200, 0), (200, 0, 200), (0, 0, 255), (128, 128, 128)),
)


def test_colorize_and_overlay_paint_a_tables_colours_and_its_unknown_ids_void():
    ids = np.array([[0, 1, 2, 3, 4, 5, 18, 255]], np.uint8)
    colors = viz.colorize(ids, classes=FARM)
    np.testing.assert_array_equal(colors[0, :5], FARM.colors)
    np.testing.assert_array_equal(colors[0, 5:], 0)  # 5 and 18 are no class of this table: void
    photo = np.full((1, 8, 3), 50, np.uint8)
    blended = viz.overlay(photo, ids, alpha=1.0, classes=FARM)
    np.testing.assert_array_equal(blended[0, :5], FARM.colors)
    np.testing.assert_array_equal(blended[0, 5:], photo[0, 5:])  # void keeps the photo


def test_three_panel_paints_train_ids_with_the_table():
    ids = np.tile(np.arange(5, dtype=np.uint8), (2, 8, 2))[:, :8, :8]
    figure = viz.three_panel(np.zeros((2, 8, 8, 3), np.uint8), ids, ids, classes=FARM)
    np.testing.assert_array_equal(figure.axes[1].images[0].get_array(), viz.colorize(ids[0], classes=FARM))


def test_legend_of_a_table_has_its_names_and_colours():
    figure = viz.legend(FARM)
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert texts == list(FARM.names)
    swatches = [patch.get_facecolor()[:3] for patch in figure.axes[0].patches]
    np.testing.assert_allclose(swatches, np.array(FARM.colors) / 255)
    with pytest.raises(ValueError, match="not with a class table"):
        viz.legend(FARM, [(0, 0, 0)] * 5)


def test_confusion_and_per_class_figures_name_and_colour_a_tables_classes():
    figure = viz.plot_confusion(np.eye(5, dtype=np.int64), FARM)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == list(FARM.names)
    with pytest.raises(ValueError, match="^19 class names for 5 classes$"):
        viz.plot_confusion(np.eye(5, dtype=np.int64), CITYSCAPES)
    bars = viz.plot_per_class_iou(dict(zip(FARM.names, [0.5] * 5)), classes=FARM).axes[0].patches
    np.testing.assert_allclose([bar.get_facecolor()[:3] for bar in bars], np.array(FARM.colors) / 255)
