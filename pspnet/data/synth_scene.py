"""One synthetic street scene: the layout of its parts, drawn at twice the size, then scaled down.

A scene is drawn at twice the output size: sky, facades and hedges along the
street, sidewalk, road, grass strips, then trees, poles (with a sign or a
light), cars and persons from far to near, sometimes the ego-vehicle's bonnet,
and a light and colour cast over the whole frame. The photo is then
area-downsampled and the label resized bilinearly, so class borders blend as
in the real files.

Labels stay honest: where a bilinear blend of two classes' colours would
snap to a third class that is not there (the midpoint of building grey and
sky blue is nearest to *wall*), or come close enough to one that JPEG noise
could tip it over, the pixel keeps an unblended colour instead. Blends that
snap to one of the classes present, or to void, are kept.

Every step draws from the scene's generator in a fixed order: a scene depends
only on its seed, size and thickness, and the files and caches made from it
rely on that.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pspnet.data.synth_canvas import Canvas
from pspnet.data.synth_parts import (
    draw_building,
    draw_car,
    draw_ego_vehicle,
    draw_hedge,
    draw_person,
    draw_pole,
    draw_road,
    draw_sidewalk,
    draw_sign,
    draw_sky,
    draw_terrain,
    draw_traffic_light,
    draw_tree,
)
from pspnet.errors import ConfigError
from pspnet.palette import LABEL_COLORS, LABEL_TRAIN_IDS

__all__ = ["as_generator", "check_size", "check_thickness", "draw_scene", "make_composite", "render", "render_scene"]


def draw_scene(rng: np.random.Generator, side: int, thickness: float = 1.0) -> Canvas:
    """Draws one street scene on a (side, side) canvas.

    Args:
        rng: the scene's generator (drawn from in a fixed order).
        side: side of the canvas in pixels.
        thickness: width factor of poles, persons and grass strips.

    Returns:
        The ``Canvas`` with the photo and its palette rows.
    """
    canvas = Canvas(side)
    horizon = int(side * rng.uniform(0.38, 0.5))
    ground = horizon + int(side * rng.uniform(0.0, 0.05))
    vanish_x = side * rng.uniform(0.35, 0.65)
    draw_sky(rng, canvas, horizon)
    _draw_facades(rng, canvas, ground)
    draw_sidewalk(rng, canvas, ground)
    road, _ = draw_road(rng, canvas, ground, vanish_x)
    _draw_verge(rng, canvas, road, ground, thickness)
    _draw_lawn(rng, canvas, ground, thickness)
    for kind, base_y in _standing_objects(rng, side, ground):
        _draw_object(rng, canvas, kind, base_y, base_y - horizon, road, thickness)
    if rng.random() < 0.3:
        draw_ego_vehicle(rng, canvas)

    # Light and colour cast of the whole frame.
    canvas.photo *= rng.uniform(0.75, 1.15)
    canvas.photo += rng.uniform(-10, 10, 3).astype(np.float32)
    return canvas


def _draw_facades(rng, canvas: Canvas, ground: int) -> None:
    """Facades along the street; some gaps show the sky over a hedge."""
    side = canvas.side
    x = -int(side * rng.uniform(0, 0.1))
    while x < side:
        width = int(side * rng.uniform(0.12, 0.45))
        if rng.random() < 0.15:
            draw_hedge(rng, canvas, x, width, ground, int(side * rng.uniform(0.04, 0.1)))
        else:
            top = int(side * rng.uniform(0.03, 0.3))
            draw_building(rng, canvas, x, x + width, min(top, ground - 8), ground)
        x += width


def _road_span(polygon: np.ndarray, y: float) -> tuple[float, float]:
    """Left and right x of the road trapezoid at height y."""
    (tl, top), (tr, _), (br, bottom), (bl, _) = polygon
    t = (y - top) / max(bottom - top, 1e-6)
    return tl + (bl - tl) * t, tr + (br - tr) * t


# Ground strips as thin as poles: ``thickness`` widens them too.


def _draw_verge(rng, canvas: Canvas, road: np.ndarray, ground: int, thickness: float) -> None:
    """Sometimes a grass verge along one side of the road."""
    if rng.random() >= 0.65:
        return
    side = canvas.side
    depth = side * rng.uniform(0.08, 0.2) * thickness
    flip = rng.random() < 0.5
    y0, y1 = ground + (side - ground) * rng.uniform(0.05, 0.3), float(side)
    l0, r0 = _road_span(road, y0)
    l1, r1 = _road_span(road, y1)
    grow = depth * (y1 - ground) / (side - ground)
    if flip:
        points = np.array([(r0, y0), (r0 + depth * 0.3, y0), (r1 + grow, y1), (r1, y1)])
    else:
        points = np.array([(l0 - depth * 0.3, y0), (l0, y0), (l1, y1), (l1 - grow, y1)])
    draw_terrain(rng, canvas, points)


def _draw_lawn(rng, canvas: Canvas, ground: int, thickness: float) -> None:
    """Sometimes a lawn strip in front of the buildings."""
    if rng.random() >= 0.4:
        return
    side = canvas.side
    left = side * rng.uniform(0, 0.7)
    width, depth = side * rng.uniform(0.15, 0.35), side * rng.uniform(0.02, 0.05) * thickness
    lawn = [(left, ground), (left + width, ground), (left + width, ground + depth), (left, ground + depth)]
    draw_terrain(rng, canvas, np.array(lawn))


def _sidewalk_x(rng, road: np.ndarray, side: int, y: float) -> float:
    """An x on the sidewalk at height y, left or right of the road."""
    left, right = _road_span(road, y)
    if rng.random() < 0.5 and left > side * 0.06:
        return rng.uniform(max(left - side * 0.25, 0), left - side * 0.03)
    if right < side * 0.94:
        return rng.uniform(right + side * 0.03, min(right + side * 0.25, side))
    return rng.uniform(0, max(left - side * 0.03, 1))


def _standing_objects(rng, side: int, ground: int) -> list[tuple[str, float]]:
    """(kind, base y) of the trees, poles, cars and persons, sorted far to near."""
    objects = []
    for _ in range(rng.integers(0, 4)):
        objects.append(("tree", ground + (side - ground) * rng.uniform(0.02, 0.35)))
    for _ in range(rng.integers(1, 4)):
        objects.append(("pole", ground + (side - ground) * rng.uniform(0.05, 0.5)))
    for _ in range(rng.integers(1, 5)):
        objects.append(("car", ground + (side - ground) * rng.uniform(0.12, 0.8)))
    for _ in range(rng.integers(0, 5)):
        objects.append(("person", ground + (side - ground) * rng.uniform(0.2, 0.8)))
    objects.sort(key=lambda item: item[1])
    return objects


def _draw_object(
    rng, canvas: Canvas, kind: str, base_y: float, distance: float, road: np.ndarray, thickness: float
) -> None:
    """One standing object; distance below the horizon sets its apparent size."""
    side = canvas.side
    if kind == "tree":
        draw_tree(rng, canvas, _sidewalk_x(rng, road, side, base_y), base_y, distance * rng.uniform(1.2, 2.0))
    elif kind == "pole":
        _draw_pole_with_fixture(rng, canvas, base_y, distance, road, thickness)
    elif kind == "car":
        left, right = _road_span(road, base_y)
        height = min(distance * rng.uniform(0.8, 1.0), side * 0.42)
        low = left + height * 0.6  # keep the car on the road
        draw_car(rng, canvas, rng.uniform(low, max(right - height * 0.6, low)), base_y, height)
    else:
        x = _sidewalk_x(rng, road, side, base_y)
        draw_person(rng, canvas, x, base_y, max(distance * rng.uniform(1.05, 1.25), side * 0.08), thickness)


def _draw_pole_with_fixture(
    rng, canvas: Canvas, base_y: float, distance: float, road: np.ndarray, thickness: float
) -> None:
    """A pole on the sidewalk, most carrying a traffic sign or a traffic light."""
    side = canvas.side
    # Signs and lights grow with the square root of the thickness:
    # they are wide already, only the pole is a line.
    width = max(int(side * 0.028 + distance * 0.03), 3)
    carried = width * math.sqrt(thickness)
    width = max(int(width * thickness), 3)
    x = _sidewalk_x(rng, road, side, base_y)
    top, cx = draw_pole(rng, canvas, x, base_y, distance * rng.uniform(2.5, 3.8), width)
    attached = rng.random()
    if attached < 0.55:
        draw_sign(rng, canvas, cx, top + int(carried * 2.5), int(carried * rng.uniform(4.0, 5.5)))
    elif attached < 0.9:
        draw_traffic_light(rng, canvas, cx, top, int(carried * rng.uniform(2.5, 3.0)))


_MARGIN = 16.0  # RGB distance a kept blend keeps from the colour of any class not there
_PALETTE = LABEL_COLORS.astype(np.float32)
_IS_VOID = LABEL_TRAIN_IDS == 255


def _label_down(index: np.ndarray, size: int) -> np.ndarray:
    """Palette rows (2*size, 2*size) -> label colours (size, size, 3) RGB, resized bilinearly.

    A blend stays only where its nearest palette colour is one of the classes
    of the 2x2 block it came from (or void), at least ``_MARGIN`` closer than
    the colour of any other class, so that JPEG noise cannot tip it into a
    class that is not there; elsewhere the pixel keeps its unblended colour.
    """
    colors = LABEL_COLORS[index]
    blended = cv2.resize(colors, (size, size), interpolation=cv2.INTER_LINEAR)
    unblended = colors[::2, ::2]
    rows = index.reshape(size, 2, size, 2).transpose(0, 2, 1, 3).reshape(size, size, 4)
    mixed = rows.min(-1) != rows.max(-1)  # only blocks on a border blend
    if not mixed.any():
        return blended
    candidates = blended[mixed].astype(np.float32)  # (M, 3)
    distance = np.sqrt(((candidates[:, None, :] - _PALETTE) ** 2).sum(-1))  # (M, 29)
    block_ids = LABEL_TRAIN_IDS[rows[mixed]]  # (M, 4)
    allowed = _IS_VOID[None, :] | (LABEL_TRAIN_IDS[None, :, None] == block_ids[:, None, :]).any(-1)
    nearest_allowed = np.where(allowed, distance, np.inf).min(-1)
    nearest_other = np.where(allowed, np.inf, distance).min(-1)
    honest = nearest_allowed + _MARGIN <= nearest_other
    label = blended.copy()
    label[mixed] = np.where(honest[:, None], candidates, unblended[mixed]).astype(np.uint8)
    return label


def render(rng: np.random.Generator, size: int, thickness: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo, label_rgb, palette rows at twice the size) of one scene."""
    canvas = draw_scene(rng, 2 * size, thickness)
    photo = cv2.resize(canvas.photo, (size, size), interpolation=cv2.INTER_AREA)
    photo += rng.standard_normal(photo.shape, dtype=np.float32)  # sensor noise, sigma 1
    photo = np.clip(np.rint(photo), 0, 255).astype(np.uint8)
    return photo, _label_down(canvas.index, size), canvas.index


def render_scene(seed, size: int = 256, thickness: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws one street scene.

    Args:
        seed: an int, a sequence of ints, or a ``np.random.Generator``.
        size: side of the output in pixels (the scene is drawn at twice that).
        thickness: width factor of poles, persons and grass strips (signs
            and lights grow with its square root); 1 draws them in street
            proportions.

    Returns:
        ``(photo, label_rgb, train_ids)``: photo uint8 (size, size, 3) RGB,
        label_rgb uint8 (size, size, 3) palette colours (blended at borders),
        train_ids uint8 (size, size), the drawn classes (255 void), before
        blending and compression.
    """
    size = check_size(size)
    photo, label_rgb, index = render(as_generator(seed), size, check_thickness(thickness))
    return photo, label_rgb, LABEL_TRAIN_IDS[index[::2, ::2]]


def check_size(size) -> int:
    if int(size) < 8 or int(size) % 8:
        raise ConfigError(f"size must be a multiple of 8, at least 8 pixels, got {size}")
    return int(size)


def check_thickness(thickness) -> float:
    if not 1.0 <= float(thickness) <= 4.0:
        raise ConfigError(f"thickness must lie in [1, 4], got {thickness}")
    return float(thickness)


def as_generator(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def make_composite(seed, size: int = 256) -> np.ndarray:
    """One composite, photo left and label right: uint8 (size, 2*size, 3) RGB (before JPEG)."""
    photo, label_rgb, _ = render_scene(seed, size)
    return np.concatenate([photo, label_rgb], axis=1)
