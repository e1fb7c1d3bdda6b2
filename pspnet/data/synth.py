"""Synthetic street scenes in exactly the real on-disk format, for the demo and the tests.

Each file is a (size, 2*size) JPEG composite like the Kaggle Cityscapes pairs:
a photo-like street scene on the left, its palette-coloured label on the right.
Scenes are drawn at twice the size, then the photo is area-downsampled and the
label resized bilinearly (so class borders blend, as in the real files) and
the composite is saved as JPEG at quality 95 (the real files' quantisation
tables), with full-resolution chroma (see ``_encode``).

Classes drawn: road (with lane marks), sidewalk, building (with windows),
vegetation (trees, hedges), terrain, sky (with clouds), pole, traffic sign,
traffic light, car, person, and void (an ego-vehicle bonnet, sometimes). Each
has its own texture; photo colours are not the label colours, car and
clothing colours vary, so a model must use texture, shape and context.

Labels stay honest: where a bilinear blend of two classes' colours would
snap to a third class that is not there (the midpoint of building grey and
sky blue is nearest to *wall*), or come close enough to one that JPEG noise
could tip it over, the pixel keeps an unblended colour instead; each file is
decoded once more to check that no label pixel lands on a class that is not
in the scene. Blends that snap to one of the classes present, or to void,
are kept.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from pspnet.errors import ConfigError, DataError
from pspnet.fileio import TEMPORARY_MARK, temporary_name
from pspnet.palette import CLASS_NAMES, LABEL_COLORS, LABEL_TRAIN_IDS

__all__ = [
    "DEMO_SIZE",
    "DEMO_THICKNESS",
    "DEMO_TRAIN",
    "DEMO_VAL",
    "JPEG_QUALITY",
    "SYNTH_CLASSES",
    "SYNTH_VERSION",
    "demo_data",
    "ensure_demo_set",
    "make_composite",
    "render_scene",
    "write_pairs",
    "write_synthetic_set",
]

SYNTH_VERSION = 2  # bump when scenes change: demo folders are keyed by it

# The demo set (``pspnet-train --data demo``): small enough to train on a
# 2-core CPU in minutes. At 64 px a pole in street proportions is a pixel or
# two wide, below what the network's 1/4-resolution features resolve, so the
# demo draws poles, persons and grass strips twice as wide.
DEMO_TRAIN = 1440  # training pairs
DEMO_VAL = 100  # validation pairs
DEMO_SIZE = 64  # side in pixels (pairs are DEMO_SIZE x 2*DEMO_SIZE)
DEMO_THICKNESS = 2.0  # width factor of poles, persons and grass strips
JPEG_QUALITY = 95  # the real files' quantisation tables match quality ~95
SYNTH_CLASSES = (
    "road", "sidewalk", "building", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "car",
)

_ID = {name: CLASS_NAMES.index(name) for name in SYNTH_CLASSES}  # train id == palette row
_VOID = len(CLASS_NAMES)  # palette row of "unlabeled" (0, 0, 0)
_SPLIT_CODES = {"train": 0, "val": 1}


# --- textures ---------------------------------------------------------------


def _smooth(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise (height, width) float32, about unit variance, features ~cell pixels."""
    height, width = max(height, 1), max(width, 1)
    rows = max(2, int(height / max(cell, 1.0)) + 2)
    cols = max(2, int(width / max(cell, 1.0)) + 2)
    grid = rng.standard_normal((rows, cols)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _fine(rng: np.random.Generator, height: int, width: int, sigma: float) -> np.ndarray:
    """Per-pixel grey noise (height, width, 1) float32 with standard deviation sigma."""
    noise = rng.standard_normal((height, width, 1), dtype=np.float32)
    noise *= sigma
    return noise


def _tint(color, height: int, width: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(color, np.float32), (height, width, 3)).copy()


def _jitter_color(rng, color, amount: float = 12.0):
    return np.clip(np.asarray(color, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


# --- canvas -----------------------------------------------------------------


class _Canvas:
    """The photo (float RGB) and the label (palette row per pixel) drawn together."""

    def __init__(self, side: int):
        self.side = side
        self.photo = np.zeros((side, side, 3), np.float32)
        self.index = np.full((side, side), _VOID, np.uint8)

    def paint(self, top: int, left: int, mask: np.ndarray, texture: np.ndarray, row: int) -> None:
        """Paints texture where mask (local, placed at top/left) is set; clipped to the canvas."""
        height = min(mask.shape[0], texture.shape[0])
        width = min(mask.shape[1], texture.shape[1])
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + height, self.side), min(left + width, self.side)
        if y0 >= y1 or x0 >= x1:
            return
        local = mask[y0 - top : y1 - top, x0 - left : x1 - left].astype(bool)
        source = texture[y0 - top : y1 - top, x0 - left : x1 - left]
        np.copyto(self.photo[y0:y1, x0:x1], source, where=local[..., None])
        np.copyto(self.index[y0:y1, x0:x1], np.uint8(row), where=local)


def _polygon_mask(points, top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    local = np.round(np.asarray(points, np.float64) - [left, top]).astype(np.int32)
    cv2.fillPoly(mask, [local], 1)
    return mask


def _ellipse_mask(height: int, width: int) -> np.ndarray:
    height, width = max(height, 1), max(width, 1)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (max(width // 2, 1), max(height // 2, 1)), 0, 0, 360, 1, -1)
    return mask


def _box(height: int, width: int) -> np.ndarray:
    return np.ones((max(height, 1), max(width, 1)), np.uint8)


# --- scene parts ------------------------------------------------------------


def _sky(rng, canvas: _Canvas, horizon: int) -> None:
    side = canvas.side
    kind = rng.integers(3)
    if kind == 0:  # clear
        top, bottom = _jitter_color(rng, (95, 145, 215)), _jitter_color(rng, (190, 210, 235))
    elif kind == 1:  # hazy
        top, bottom = _jitter_color(rng, (150, 175, 205)), _jitter_color(rng, (215, 220, 225))
    else:  # overcast
        grey = rng.uniform(170, 215)
        top, bottom = _jitter_color(rng, (grey - 15,) * 3, 6), _jitter_color(rng, (grey + 15,) * 3, 6)
    height = max(horizon + side // 8, 2)
    # Smooth: drawn at a quarter of the resolution, then enlarged.
    small_h, small_w = max(height // 4, 2), max(side // 4, 2)
    ramp = np.linspace(0.0, 1.0, small_h, dtype=np.float32)[:, None, None]
    texture = np.broadcast_to(top + (bottom - top) * ramp, (small_h, small_w, 3))
    clouds = _smooth(rng, small_h, small_w, small_w / 6) + 0.5 * _smooth(rng, small_h, small_w, small_w / 18)
    cover = np.clip((clouds - rng.uniform(0.3, 1.2)) * 1.5, 0, 1)[..., None]
    texture = texture * (1 - cover) + _jitter_color(rng, (238, 238, 242), 8) * cover
    texture = cv2.resize(texture.astype(np.float32), (side, height), interpolation=cv2.INTER_LINEAR)
    texture += _fine(rng, height, side, 1.5)
    canvas.paint(0, 0, _box(height, side), texture, _ID["sky"])


_FACADES = ((205, 185, 150), (160, 85, 65), (140, 140, 148), (222, 220, 212), (212, 190, 125), (120, 110, 100))


def _building(rng, canvas: _Canvas, left: int, right: int, top: int, ground: int) -> None:
    height, width = ground - top, right - left
    if height < 4 or width < 4:
        return
    base = _jitter_color(rng, _FACADES[rng.integers(len(_FACADES))], 15)
    texture = _tint(base, height, width)
    texture += 8 * _smooth(rng, height, width, width / 3)[..., None] + _fine(rng, height, width, 3.5)
    # Storeys: a darker line under each floor, a lighter cornice on top.
    floor = max(int(rng.uniform(0.05, 0.1) * canvas.side), 6)
    for y in range(floor, height, floor):
        texture[y : y + max(floor // 10, 1)] *= 0.85
    texture[: max(floor // 4, 2)] = base * 1.12
    # Windows: a grid of dark glass panes with a lighter frame, some lit.
    columns = max(1, int(width / (floor * rng.uniform(0.7, 1.3))))
    pitch = width / columns
    pane_w, pane_h = pitch * rng.uniform(0.35, 0.65), floor * rng.uniform(0.4, 0.65)
    glass = _jitter_color(rng, (45, 55, 75), 12)
    # Every pane of a facade has the same height (storey tops are whole pixels),
    # so its two looks (dark, lit) are shaded once.
    shade = np.linspace(1.25, 0.8, max(int(pane_h), 1), dtype=np.float32)[:, None, None]
    looks = {lit: np.clip(glass * (1.6 if lit else 1.0) * shade, 0, 255) for lit in (False, True)}
    frame, frame_color = max(int(pane_w * 0.08), 1), base * 1.15
    for storey_top in range(floor // 3 + floor // 4, height - floor // 2, floor):
        for column in range(columns):
            x0 = int(column * pitch + (pitch - pane_w) / 2)
            y0 = int(storey_top)
            x1, y1 = int(x0 + pane_w), int(y0 + pane_h)
            if y1 >= height or x1 >= width:
                continue
            lit = rng.random() < 0.08
            texture[max(y0 - frame, 0) : y1 + frame, max(x0 - frame, 0) : x1 + frame] = frame_color
            texture[y0:y1, x0:x1] = looks[lit]
    canvas.paint(top, left, _box(height, width), texture, _ID["building"])


def _road(rng, canvas: _Canvas, ground: int, vanish_x: float) -> tuple[np.ndarray, list]:
    """Road trapezoid from the ground line to the bottom; returns its polygon and lane lines."""
    side = canvas.side
    half_top = side * rng.uniform(0.03, 0.09)
    left_bottom = vanish_x - side * rng.uniform(0.55, 1.0)
    right_bottom = vanish_x + side * rng.uniform(0.55, 1.0)
    polygon = np.array(
        [(vanish_x - half_top, ground), (vanish_x + half_top, ground), (right_bottom, side), (left_bottom, side)]
    )
    height = side - ground
    grey = rng.uniform(65, 110)
    texture = _tint(_jitter_color(rng, (grey, grey, grey + 4), 5), height, side)
    texture += 7 * _smooth(rng, height, side, side / 10)[..., None] + _fine(rng, height, side, 6)
    # Lane marks: dashes along lines through the vanishing point (photo only).
    lanes = []
    for fraction in rng.choice([0.33, 0.5, 0.67], size=rng.integers(1, 3), replace=False):
        top_x = vanish_x - half_top + 2 * half_top * fraction
        bottom_x = left_bottom + (right_bottom - left_bottom) * fraction
        lanes.append((top_x, bottom_x))
        dash = rng.uniform(0.04, 0.08) * side
        for start in np.arange(rng.uniform(0, dash), height, 2 * dash):
            y0, y1 = start, min(start + dash, height)
            width0 = 1 + (y0 / height) * side * 0.012
            width1 = 1 + (y1 / height) * side * 0.012
            x0 = top_x + (bottom_x - top_x) * y0 / height
            x1 = top_x + (bottom_x - top_x) * y1 / height
            points = np.array([(x0 - width0, y0), (x0 + width0, y0), (x1 + width1, y1), (x1 - width1, y1)])
            cv2.fillPoly(texture, [np.round(points).astype(np.int32)], _jitter_color(rng, (225, 225, 215), 8).tolist())
    mask = _polygon_mask(polygon, ground, 0, height, side)
    canvas.paint(ground, 0, mask, texture, _ID["road"])
    return polygon, lanes


def _ground(rng, canvas: _Canvas, ground: int) -> None:
    """Sidewalk paving over the whole ground (the road is drawn on top)."""
    side = canvas.side
    height = side - ground
    if rng.random() < 0.5:
        base = _jitter_color(rng, (165, 160, 155), 18)
    else:
        base = _jitter_color(rng, (175, 125, 110), 12)
    texture = _tint(base, height, side) + 5 * _smooth(rng, height, side, side / 12)[..., None]
    texture += _fine(rng, height, side, 5)
    tile = max(int(side * rng.uniform(0.025, 0.05)), 3)
    texture[::tile] *= 0.78
    texture[:, ::tile] *= 0.78
    canvas.paint(ground, 0, _box(height, side), texture, _ID["sidewalk"])


def _terrain(rng, canvas: _Canvas, points) -> None:
    xs, ys = points[:, 0], points[:, 1]
    left, top = int(np.floor(xs.min())), int(np.floor(ys.min()))
    width, height = int(np.ceil(xs.max())) - left + 1, int(np.ceil(ys.max())) - top + 1
    if rng.random() < 0.8:  # grass
        base = _jitter_color(rng, (125, 150, 70), 15)
    else:  # dry earth
        base = _jitter_color(rng, (150, 130, 95), 12)
    # The noise comes from its own generator, so that the scene's stream (and
    # everything drawn after) does not depend on the strip's size (``thickness``).
    noise = np.random.default_rng(rng.integers(1 << 62))
    texture = _tint(base, height, width) + 10 * _smooth(noise, height, width, 6)[..., None]
    streaks = cv2.blur(noise.normal(0, 14, (height, width)).astype(np.float32), (1, 5))
    texture += streaks[..., None]
    canvas.paint(top, left, _polygon_mask(points, top, left, height, width), texture, _ID["terrain"])


def _foliage(rng, height: int, width: int) -> np.ndarray:
    base = _jitter_color(rng, (60, 100, 40), 15)
    texture = _tint(base, height, width)
    leaves = _smooth(rng, height, width, 3) + 0.8 * _smooth(rng, height, width, 9)
    texture += 22 * leaves[..., None] * np.array([0.7, 1.0, 0.5], np.float32)
    return texture + _fine(rng, height, width, 6)


def _tree(rng, canvas: _Canvas, x: float, base_y: float, size: float) -> None:
    trunk_w, trunk_h = max(int(size * 0.12), 2), max(int(size * rng.uniform(0.6, 1.0)), 2)
    trunk = _tint(_jitter_color(rng, (85, 70, 55), 10), trunk_h, trunk_w) + _fine(rng, trunk_h, trunk_w, 6)
    canvas.paint(int(base_y - trunk_h), int(x - trunk_w / 2), _box(trunk_h, trunk_w), trunk, _ID["vegetation"])
    crown_w, crown_h = max(int(size * rng.uniform(0.9, 1.3)), 3), max(int(size * rng.uniform(0.8, 1.1)), 3)
    mask = np.zeros((crown_h, crown_w), np.uint8)
    for _ in range(6):  # a crown as a union of blobs
        cx, cy = rng.uniform(0.25, 0.75) * crown_w, rng.uniform(0.3, 0.7) * crown_h
        axes = (int(crown_w * rng.uniform(0.2, 0.3)), int(crown_h * rng.uniform(0.2, 0.32)))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, 0, 0, 360, 1, -1)
    top = int(base_y - trunk_h - crown_h * 0.8)
    canvas.paint(top, int(x - crown_w / 2), mask, _foliage(rng, crown_h, crown_w), _ID["vegetation"])


def _hedge(rng, canvas: _Canvas, left: int, width: int, base_y: int, height: int) -> None:
    height, width = max(height, 2), max(width, 2)
    mask = _box(height, width)
    mask[: max(height // 4, 1)] = _ellipse_mask(max(height // 2, 1), width)[: max(height // 4, 1)]
    canvas.paint(base_y - height, left, mask, _foliage(rng, height, width), _ID["vegetation"])


def _pole(rng, canvas: _Canvas, x: float, base_y: float, height: float, width: int) -> tuple[int, int]:
    """A vertical pole; returns (top y, x centre)."""
    height = int(height)
    shade = np.abs(np.linspace(-1, 1, width, dtype=np.float32))
    paint = _jitter_color(rng, (130, 132, 135) if rng.random() < 0.7 else (50, 70, 55), 15)
    texture = paint * (1.2 - 0.5 * shade)[None, :, None] * np.ones((height, 1, 1), np.float32)
    texture += _fine(rng, height, width, 3)
    top = int(base_y - height)
    canvas.paint(top, int(x - width / 2), _box(height, width), texture, _ID["pole"])
    return top, int(x)


def _sign(rng, canvas: _Canvas, cx: int, cy: int, size: int) -> None:
    kind = rng.integers(4)
    size = max(size, 4)
    if kind == 0:  # round prohibition sign: red ring, white face
        mask = _ellipse_mask(size, size)
        texture = _tint(_jitter_color(rng, (200, 30, 35), 15), size, size)
        inner = _ellipse_mask(size, size)
        cv2.circle(inner, (size // 2, size // 2), max(size // 2 - max(size // 6, 1), 1), 2, -1)
        texture[inner == 2] = _jitter_color(rng, (235, 235, 230), 8)
    elif kind == 1:  # round blue mandatory sign with a white arrow
        mask = _ellipse_mask(size, size)
        texture = _tint(_jitter_color(rng, (30, 80, 190), 15), size, size)
        texture[size // 2 - max(size // 10, 1) : size // 2 + max(size // 10, 1), size // 4 : 3 * size // 4] = 240
    elif kind == 2:  # warning triangle
        mask = _polygon_mask([(size / 2, 0), (size - 1, size - 1), (0, size - 1)], 0, 0, size, size)
        texture = _tint(_jitter_color(rng, (210, 35, 40), 12), size, size)
        corners = [(size / 2, size * 0.3), (size * 0.8, size * 0.85), (size * 0.2, size * 0.85)]
        inner = _polygon_mask(corners, 0, 0, size, size)
        texture[inner > 0] = _jitter_color(rng, (240, 235, 225), 8)
    else:  # rectangular direction sign
        mask = _box(int(size * 0.7), int(size * 1.3))
        texture = _tint(_jitter_color(rng, (30, 120, 70) if rng.random() < 0.5 else (35, 75, 180), 12), *mask.shape)
        texture[mask.shape[0] // 3 : mask.shape[0] // 3 + max(size // 10, 1), size // 5 : -size // 5] = 235
    texture += _fine(rng, *mask.shape, 3)
    canvas.paint(cy - mask.shape[0] // 2, cx - mask.shape[1] // 2, mask, texture, _ID["traffic sign"])


def _traffic_light(rng, canvas: _Canvas, cx: int, top: int, width: int) -> None:
    width = max(width, 4)
    height = int(width * 2.6)
    texture = _tint(_jitter_color(rng, (40, 40, 38), 8), height, width) + _fine(rng, height, width, 3)
    lit = rng.integers(3)
    for lamp, color in enumerate(((230, 40, 30), (240, 170, 20), (40, 210, 90))):
        centre = (width // 2, int(height * (lamp + 0.5) / 3))
        shade = color if lamp == lit else tuple(c * 0.3 for c in color)
        cv2.circle(texture, centre, max(int(width * 0.32), 1), shade, -1)
    canvas.paint(top, cx - width // 2, _box(height, width), texture, _ID["traffic light"])


_CAR_COLORS = (
    (235, 235, 235), (190, 192, 195), (30, 30, 35), (25, 45, 110), (165, 25, 30),
    (60, 110, 70), (120, 115, 105), (200, 170, 40), (90, 90, 95),
)


def _car(rng, canvas: _Canvas, cx: float, base_y: float, height: float) -> None:
    """A car seen from behind: body, rear window, lights, plate, wheels."""
    height = int(height)
    width = int(height * rng.uniform(1.15, 1.4))
    if height < 4 or width < 4:
        return
    mask = np.zeros((height, width), np.uint8)
    roof = int(height * rng.uniform(0.35, 0.45))
    inset = int(width * rng.uniform(0.12, 0.2))
    cv2.fillPoly(mask, [np.array([(inset, 0), (width - 1 - inset, 0), (width - 1, roof), (0, roof)], np.int32)], 1)
    body_bottom = int(height * 0.88)
    mask[roof:body_bottom] = 1
    wheel_w = max(int(width * 0.16), 1)
    mask[body_bottom:, int(width * 0.06) : int(width * 0.06) + wheel_w] = 1
    mask[body_bottom:, width - int(width * 0.06) - wheel_w : width - int(width * 0.06)] = 1
    color = _jitter_color(rng, _CAR_COLORS[rng.integers(len(_CAR_COLORS))], 12)
    texture = _tint(color, height, width)
    gloss = np.linspace(1.15, 0.8, height, dtype=np.float32)[:, None, None]
    texture = texture * gloss + _fine(rng, height, width, 3)
    # Rear window, lights, number plate, tyres.
    glass = _jitter_color(rng, (40, 50, 60), 10)
    window = np.array([(inset + 3, 2), (width - inset - 4, 2), (width - 4, roof - 1), (3, roof - 1)], np.int32)
    cv2.fillPoly(texture, [window], glass.tolist())
    light_h, light_w = max(int(height * 0.08), 1), max(int(width * 0.14), 1)
    light_y = roof + int(height * 0.1)
    texture[light_y : light_y + light_h, 2 : 2 + light_w] = (200, 25, 25)
    texture[light_y : light_y + light_h, width - 2 - light_w : width - 2] = (200, 25, 25)
    plate_w, plate_h = max(int(width * 0.25), 1), max(int(height * 0.08), 1)
    plate_y = int(height * 0.62)
    texture[plate_y : plate_y + plate_h, (width - plate_w) // 2 : (width + plate_w) // 2] = (235, 235, 225)
    texture[body_bottom:] = (25, 25, 25)
    texture[int(height * 0.8) : body_bottom] *= 0.6  # bumper shadow
    canvas.paint(int(base_y - height), int(cx - width / 2), mask, texture, _ID["car"])


_CLOTHES = (
    (30, 35, 60), (25, 25, 28), (110, 110, 115), (170, 150, 110),
    (150, 30, 40), (40, 90, 150), (220, 220, 215), (90, 60, 110),
)
_SKIN = ((235, 200, 170), (200, 150, 110), (140, 95, 65), (95, 65, 45))


def _person(rng, canvas: _Canvas, cx: float, base_y: float, height: float, thickness: float = 1.0) -> None:
    """A pedestrian: legs, torso with arms, head (``thickness`` widens it)."""
    height = int(height)
    width = max(int(height * rng.uniform(0.3, 0.38) * thickness), 3)
    if height < 6:
        return
    mask = np.zeros((height, width), np.uint8)
    texture = np.zeros((height, width, 3), np.float32)
    head = max(int(height * 0.13), 2)
    torso_top, leg_top = head, int(height * 0.5)
    shirt = _jitter_color(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 15)
    trousers = _jitter_color(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 10)
    skin = _jitter_color(rng, _SKIN[rng.integers(len(_SKIN))], 8)
    # Head (skin, dark hair on top), torso (with arms), two legs.
    head_w = max(int(width * 0.42), 2)
    cv2.ellipse(mask, (width // 2, head // 2), (max(head_w // 2, 1), max(head // 2, 1)), 0, 0, 360, 1, -1)
    texture[:head] = skin
    texture[: max(head // 3, 1)] = _jitter_color(rng, (40, 30, 25), 10)
    mask[torso_top:leg_top, int(width * 0.1) : int(width * 0.9)] = 1
    texture[torso_top:leg_top] = shirt
    stride = rng.uniform(0.0, 0.2) * width
    leg_w = max(int(width * 0.28), 1)
    for offset in (-1, 1):
        x0 = int(width / 2 + offset * (width * 0.16 + stride / 2) - leg_w / 2)
        mask[leg_top:, max(x0, 0) : max(x0, 0) + leg_w] = 1
    texture[leg_top:] = trousers
    texture[-max(height // 20, 1):] = (30, 28, 26)  # shoes
    texture += _fine(rng, height, width, 4)
    canvas.paint(int(base_y - height), int(cx - width / 2), mask, texture, _ID["person"])


def _ego_vehicle(rng, canvas: _Canvas) -> None:
    """The bonnet of the recording car at the bottom (void, as in Cityscapes)."""
    side = canvas.side
    height = max(int(side * rng.uniform(0.05, 0.09)), 1)
    mask = np.zeros((height, side), np.uint8)
    cv2.ellipse(mask, (side // 2, height), (int(side * 0.75), height), 0, 180, 360, 1, -1)
    texture = _tint(_jitter_color(rng, (35, 38, 45), 10), height, side) + _fine(rng, height, side, 3)
    canvas.paint(side - height, 0, mask, texture, _VOID)


# --- scenes -------------------------------------------------------------------


def _road_span(polygon: np.ndarray, y: float) -> tuple[float, float]:
    """Left and right x of the road trapezoid at height y."""
    (tl, top), (tr, _), (br, bottom), (bl, _) = polygon
    t = (y - top) / max(bottom - top, 1e-6)
    return tl + (bl - tl) * t, tr + (br - tr) * t


def _draw_scene(rng: np.random.Generator, side: int, thickness: float = 1.0) -> _Canvas:
    canvas = _Canvas(side)
    horizon = int(side * rng.uniform(0.38, 0.5))
    ground = horizon + int(side * rng.uniform(0.0, 0.05))
    vanish_x = side * rng.uniform(0.35, 0.65)
    _sky(rng, canvas, horizon)

    # Facades along the street; some gaps show the sky over a hedge.
    x = -int(side * rng.uniform(0, 0.1))
    while x < side:
        width = int(side * rng.uniform(0.12, 0.45))
        if rng.random() < 0.15:
            _hedge(rng, canvas, x, width, ground, int(side * rng.uniform(0.04, 0.1)))
        else:
            top = int(side * rng.uniform(0.03, 0.3))
            _building(rng, canvas, x, x + width, min(top, ground - 8), ground)
        x += width

    _ground(rng, canvas, ground)
    road, _ = _road(rng, canvas, ground, vanish_x)

    # A grass verge along one side of the road, and a lawn strip: ground strips
    # as thin as poles, so ``thickness`` widens them too.
    if rng.random() < 0.65:
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
        _terrain(rng, canvas, points)
    if rng.random() < 0.4:  # a lawn in front of the buildings
        left = side * rng.uniform(0, 0.7)
        width, depth = side * rng.uniform(0.15, 0.35), side * rng.uniform(0.02, 0.05) * thickness
        lawn = [(left, ground), (left + width, ground), (left + width, ground + depth), (left, ground + depth)]
        _terrain(rng, canvas, np.array(lawn))

    def sidewalk_x(y: float) -> float:
        """An x on the sidewalk at height y, left or right of the road."""
        left, right = _road_span(road, y)
        if rng.random() < 0.5 and left > side * 0.06:
            return rng.uniform(max(left - side * 0.25, 0), left - side * 0.03)
        if right < side * 0.94:
            return rng.uniform(right + side * 0.03, min(right + side * 0.25, side))
        return rng.uniform(0, max(left - side * 0.03, 1))

    # Objects standing on the ground, drawn far to near.
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
    for kind, base_y in objects:
        distance = base_y - horizon  # apparent size grows with distance below the horizon
        if kind == "tree":
            _tree(rng, canvas, sidewalk_x(base_y), base_y, distance * rng.uniform(1.2, 2.0))
        elif kind == "pole":
            # Signs and lights grow with the square root of the thickness:
            # they are wide already, only the pole is a line.
            width = max(int(side * 0.028 + distance * 0.03), 3)
            carried = width * math.sqrt(thickness)
            width = max(int(width * thickness), 3)
            top, cx = _pole(rng, canvas, sidewalk_x(base_y), base_y, distance * rng.uniform(2.5, 3.8), width)
            attached = rng.random()
            if attached < 0.55:
                _sign(rng, canvas, cx, top + int(carried * 2.5), int(carried * rng.uniform(4.0, 5.5)))
            elif attached < 0.9:
                _traffic_light(rng, canvas, cx, top, int(carried * rng.uniform(2.5, 3.0)))
        elif kind == "car":
            left, right = _road_span(road, base_y)
            height = min(distance * rng.uniform(0.8, 1.0), side * 0.42)
            low = left + height * 0.6  # keep the car on the road
            _car(rng, canvas, rng.uniform(low, max(right - height * 0.6, low)), base_y, height)
        else:
            _person(rng, canvas, sidewalk_x(base_y), base_y, max(distance * rng.uniform(1.05, 1.25), side * 0.08),
                    thickness)
    if rng.random() < 0.3:
        _ego_vehicle(rng, canvas)

    # Light and colour cast of the whole frame.
    canvas.photo *= rng.uniform(0.75, 1.15)
    canvas.photo += rng.uniform(-10, 10, 3).astype(np.float32)
    return canvas


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


def _render(rng: np.random.Generator, size: int, thickness: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo, label_rgb, palette rows at twice the size) of one scene."""
    canvas = _draw_scene(rng, 2 * size, thickness)
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
    size = _check_size(size)
    photo, label_rgb, index = _render(_generator(seed), size, _check_thickness(thickness))
    return photo, label_rgb, LABEL_TRAIN_IDS[index[::2, ::2]]


def _check_size(size) -> int:
    if int(size) < 8 or int(size) % 8:
        raise ConfigError(f"size must be a multiple of 8, at least 8 pixels, got {size}")
    return int(size)


def _check_thickness(thickness) -> float:
    if not 1.0 <= float(thickness) <= 4.0:
        raise ConfigError(f"thickness must lie in [1, 4], got {thickness}")
    return float(thickness)


def _generator(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _encode(composite_rgb: np.ndarray) -> bytes:
    """JPEG bytes at quality 95 without chroma subsampling (4:4:4).

    The real files use 4:2:0, which mixes the chroma of neighbouring pixels
    across label borders; on small synthetic images that turned some border
    pixels into classes that are not in the scene (wall between building and
    sky), which no model can predict. 4:4:4 keeps them out.
    """
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(composite_rgb, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY,
         cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
    )
    if not ok:  # pragma: no cover - cv2 fails only on invalid arrays
        raise DataError("JPEG encoding failed")
    return data.tobytes()


def _stray_pixels(label_jpeg_rgb: np.ndarray, index: np.ndarray) -> np.ndarray:
    """bool (size, size): decoded classes not drawn within one pixel (void is fine)."""
    from pspnet.data import decode_labels

    size = label_jpeg_rgb.shape[0]
    decoded = decode_labels(label_jpeg_rgb)
    drawn = LABEL_TRAIN_IDS[index]  # (2*size, 2*size)
    blocks = drawn.reshape(size, 2, size, 2).transpose(0, 2, 1, 3).reshape(size, size, 4)
    # Most pixels decode to a class of their own 2x2 block; look around only the others.
    stray = (decoded != 255) & ~(blocks == decoded[..., None]).any(-1)
    for y, x in zip(*np.nonzero(stray)):
        window = drawn[max(2 * y - 2, 0) : 2 * y + 4, max(2 * x - 2, 0) : 2 * x + 4]
        if (window == decoded[y, x]).any():
            stray[y, x] = False
    return stray


def make_composite(seed, size: int = 256) -> np.ndarray:
    """One composite, photo left and label right: uint8 (size, 2*size, 3) RGB (before JPEG)."""
    photo, label_rgb, _ = render_scene(seed, size)
    return np.concatenate([photo, label_rgb], axis=1)


def _composite_jpeg(seed, size: int, thickness: float = 1.0) -> bytes:
    """One scene as JPEG bytes, checked: no label pixel decodes to a class that is not there.

    Where JPEG noise still pushes a label pixel into an absent class (ringing
    at sharp corners reaches 20-25 levels even at quality 95), that pixel is
    unblended and its colour moved against the error, and the composite is
    encoded again (at most 4 times).
    """
    photo, label_rgb, index = _render(_generator(seed), size, thickness)
    unblended = LABEL_COLORS[index[::2, ::2]].astype(np.int16)
    target = label_rgb.astype(np.int16)  # the colours meant to come out of the JPEG
    written = label_rgb  # the colours put into it
    for _ in range(5):
        data = _encode(np.concatenate([photo, written], axis=1))
        decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        decoded_label = decoded[:, size:].astype(np.int16)
        stray = _stray_pixels(decoded[:, size:], index)
        if not stray.any():
            break
        # Stray pixels: aim at the unblended colour, and write past it by the error.
        target[stray] = unblended[stray]
        corrected = written.astype(np.int16) + (target - decoded_label)
        written = np.where(stray[..., None], np.clip(corrected, 0, 255), written).astype(np.uint8)
    return data


def write_pairs(
    folder: str | os.PathLike, count: int, seed: int = 0, size: int = 256, split: str = "train",
    thickness: float = 1.0,
) -> Path:
    """Writes ``count`` composites 1.jpg..count.jpg straight into ``folder`` (created).

    The same files as ``write_synthetic_set`` writes for that split, seed and
    thickness, without its temporary folder; for tests and quick experiments.

    Args:
        folder: the split folder.
        count: number of composites.
        seed: random seed.
        size: side of each half in pixels.
        split: "train" or "val" (part of each image's seed).
        thickness: as ``write_synthetic_set``.

    Returns:
        ``folder`` as a Path.
    """
    folder = Path(folder)
    size, thickness = _check_size(size), _check_thickness(thickness)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(1, int(count) + 1):
        data = _composite_jpeg([int(seed), _SPLIT_CODES[split], number], size, thickness)
        (folder / f"{number}.jpg").write_bytes(data)
    return folder


def _write_split(folder: Path, count: int, split: str, seed: int, size: int, workers: int, progress: bool,
                 thickness: float = 1.0) -> Path:
    """Writes count composites 1.jpg..count.jpg into a temporary sibling of folder; returns it.

    The caller renames it into place (``_put_in_place``), or removes it.
    """
    temporary = temporary_name(folder)
    temporary.mkdir(parents=True)
    try:

        def one(number: int) -> None:
            data = _composite_jpeg([seed, _SPLIT_CODES[split], number], size, thickness)
            (temporary / f"{number}.jpg").write_bytes(data)

        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max_workers=workers) as pool:
            jobs = pool.map(one, range(1, count + 1))
            bar = tqdm(
                jobs, total=count, desc=f"synth {split}", unit="img", disable=None if progress else True, leave=False
            )
            for _ in bar:
                pass
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return temporary


def _put_in_place(temporary: Path, folder: Path) -> None:
    """Replaces folder (if any) by the finished temporary folder."""
    if folder.exists():
        shutil.rmtree(folder)
    os.rename(temporary, folder)


def write_synthetic_set(
    out_dir: str | os.PathLike,
    train: int = 200,
    val: int = 40,
    seed: int = 0,
    size: int = 256,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = False,
    thickness: float = 1.0,
) -> Path:
    """Writes a synthetic data set in the real format: out_dir/train/1.jpg.., out_dir/val/1.jpg..

    Both splits are written into temporary folders and renamed into place when
    both are complete, so a failure leaves an existing set whole. Image ``n``
    of a split depends only on (seed, split, n) and size.

    Args:
        out_dir: the data folder to create.
        train: number of training composites.
        val: number of validation composites.
        seed: random seed.
        size: side of each half in pixels (composites are size x 2*size).
        thickness: width factor of poles, persons and grass strips (``render_scene``); the
            demo draws them thicker so that they stay visible at 64 px.
        overwrite: replace existing train/ and val/ folders.
        workers: drawing threads (default: the CPU count).
        progress: show a progress bar.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ConfigError: a negative count or too small a size.
        DataError: train/ or val/ already holds files (without ``overwrite``),
            or out_dir is a file.
    """
    out_dir = Path(out_dir)
    if int(train) < 0 or int(val) < 0:
        raise ConfigError(f"image counts must not be negative, got train={train}, val={val}")
    if int(seed) < 0:  # NumPy's seed sequences take no negative entries
        raise ConfigError(f"seed={seed} must be 0 or more", flags={f"seed={seed}": f"--seed {seed}"})
    _check_size(size)
    thickness = _check_thickness(thickness)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"not a folder: {out_dir}")
    for split in ("train", "val"):
        folder = out_dir / split
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise DataError(f"{folder} already holds files; pass overwrite=True or choose another folder",
                            flags={"overwrite=True": "--overwrite"})
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, int(workers or os.cpu_count() or 1))
    # Both splits are drawn before either replaces anything: a failure leaves the old set whole.
    written: list[tuple[Path, Path]] = []
    try:
        for split, count in (("train", int(train)), ("val", int(val))):
            temporary = _write_split(out_dir / split, count, split, int(seed), int(size), workers, progress, thickness)
            written.append((temporary, out_dir / split))
        for temporary, folder in written:
            _put_in_place(temporary, folder)
    except BaseException:
        for temporary, _ in written:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    info = {"synth_version": SYNTH_VERSION, "train": int(train), "val": int(val), "seed": int(seed),
            "size": int(size), "thickness": thickness, "jpeg_quality": JPEG_QUALITY, "classes": list(SYNTH_CLASSES)}
    (out_dir / "synth.json").write_text(json.dumps(info, indent=2) + "\n")
    return out_dir


def ensure_demo_set(
    root: str | os.PathLike | None = None, train: int = 200, val: int = 40, seed: int = 0, size: int = 256,
    thickness: float = 1.0,
) -> Path:
    """The demo data set, written once and then reused.

    Lives in ``root/demo-v<version>-s<size>-n<train>-<val>-seed<seed>`` (root:
    ``$PSPNET_CACHE`` or ``~/.cache/pspnet``). Written into a temporary folder
    and renamed when complete, so an interrupted run leaves nothing that a
    later call would trust.

    Args:
        root: the cache folder.
        train, val, seed, size, thickness: as ``write_synthetic_set``.

    Returns:
        The folder holding train/ and val/.
    """
    from pspnet.fileio import default_cache_dir

    root = Path(root) if root is not None else default_cache_dir()
    name = f"demo-v{SYNTH_VERSION}-s{int(size)}-n{int(train)}-{int(val)}-seed{int(seed)}"
    if _check_thickness(thickness) != 1.0:
        name += f"-t{thickness:g}"
    folder = root / name
    if (folder / "synth.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(folder)
    try:
        write_synthetic_set(temporary, train=train, val=val, seed=seed, size=size, thickness=thickness)
        if folder.exists():  # incomplete leftovers (no synth.json) or a finished twin
            if (folder / "synth.json").is_file():
                shutil.rmtree(temporary, ignore_errors=True)
                return folder
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(temporary, folder)
        except OSError:
            if not (folder / "synth.json").is_file():
                raise
            shutil.rmtree(temporary, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    # Temporary folders of runs killed outright are removed after an hour.
    now = time.time()
    for stale in root.glob(f".demo-*{TEMPORARY_MARK}*"):
        try:
            if now - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    return folder


def demo_data() -> Path:
    """Writes the demo's synthetic set once (in the cache) and returns its folder.

    Returns:
        The folder holding train/ and val/ that ``--data demo`` trains on.
    """
    return Path(ensure_demo_set(train=DEMO_TRAIN, val=DEMO_VAL, seed=0, size=DEMO_SIZE, thickness=DEMO_THICKNESS))
