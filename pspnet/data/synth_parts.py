"""The parts of a synthetic street scene, each drawn with its own texture onto a ``Canvas``.

Street: sky (with clouds), buildings (with windows), sidewalk paving, the road
(with lane marks), terrain strips, trees and hedges. Objects: poles with a
traffic sign or light, cars seen from behind, persons, and the void bonnet of
the recording car. Photo colours are not the label colours, and car and
clothing colours vary, so a model must use texture, shape and context.
Every part draws from the scene's generator ``rng`` in a fixed order: the
scenes (and the files and caches made from them) depend on it.
"""

from __future__ import annotations

import cv2
import numpy as np

from pspnet.data.synth_canvas import (
    VOID_ROW,
    Canvas,
    box_mask,
    ellipse_mask,
    fine_noise,
    jitter_color,
    polygon_mask,
    smooth_noise,
    tint,
)
from pspnet.palette import CLASS_NAMES

__all__ = [
    "CLASS_ROWS",
    "SYNTH_CLASSES",
    "draw_building",
    "draw_car",
    "draw_ego_vehicle",
    "draw_hedge",
    "draw_person",
    "draw_pole",
    "draw_road",
    "draw_sidewalk",
    "draw_sign",
    "draw_sky",
    "draw_terrain",
    "draw_traffic_light",
    "draw_tree",
]

SYNTH_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "car",
)
CLASS_ROWS = {name: CLASS_NAMES.index(name) for name in SYNTH_CLASSES}  # train id == palette row


# --- street -----------------------------------------------------------------


def draw_sky(rng, canvas: Canvas, horizon: int) -> None:
    side = canvas.side
    kind = rng.integers(3)
    if kind == 0:  # clear
        top, bottom = jitter_color(rng, (95, 145, 215)), jitter_color(rng, (190, 210, 235))
    elif kind == 1:  # hazy
        top, bottom = jitter_color(rng, (150, 175, 205)), jitter_color(rng, (215, 220, 225))
    else:  # overcast
        grey = rng.uniform(170, 215)
        top, bottom = jitter_color(rng, (grey - 15,) * 3, 6), jitter_color(rng, (grey + 15,) * 3, 6)
    height = max(horizon + side // 8, 2)
    # Smooth: drawn at a quarter of the resolution, then enlarged.
    small_h, small_w = max(height // 4, 2), max(side // 4, 2)
    ramp = np.linspace(0.0, 1.0, small_h, dtype=np.float32)[:, None, None]
    texture = np.broadcast_to(top + (bottom - top) * ramp, (small_h, small_w, 3))
    clouds = smooth_noise(rng, small_h, small_w, small_w / 6) + 0.5 * smooth_noise(rng, small_h, small_w, small_w / 18)
    cover = np.clip((clouds - rng.uniform(0.3, 1.2)) * 1.5, 0, 1)[..., None]
    texture = texture * (1 - cover) + jitter_color(rng, (238, 238, 242), 8) * cover
    texture = cv2.resize(texture.astype(np.float32), (side, height), interpolation=cv2.INTER_LINEAR)
    texture += fine_noise(rng, height, side, 1.5)
    canvas.paint(0, 0, box_mask(height, side), texture, CLASS_ROWS["sky"])


_FACADES = ((205, 185, 150), (160, 85, 65), (140, 140, 148), (222, 220, 212), (212, 190, 125), (120, 110, 100))


def draw_building(rng, canvas: Canvas, left: int, right: int, top: int, ground: int) -> None:
    height, width = ground - top, right - left
    if height < 4 or width < 4:
        return
    base = jitter_color(rng, _FACADES[rng.integers(len(_FACADES))], 15)
    texture = tint(base, height, width)
    texture += 8 * smooth_noise(rng, height, width, width / 3)[..., None] + fine_noise(rng, height, width, 3.5)
    # Storeys: a darker line under each floor, a lighter cornice on top.
    floor = max(int(rng.uniform(0.05, 0.1) * canvas.side), 6)
    for y in range(floor, height, floor):
        texture[y : y + max(floor // 10, 1)] *= 0.85
    texture[: max(floor // 4, 2)] = base * 1.12
    # Windows: a grid of dark glass panes with a lighter frame, some lit.
    columns = max(1, int(width / (floor * rng.uniform(0.7, 1.3))))
    pitch = width / columns
    pane_w, pane_h = pitch * rng.uniform(0.35, 0.65), floor * rng.uniform(0.4, 0.65)
    glass = jitter_color(rng, (45, 55, 75), 12)
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
    canvas.paint(top, left, box_mask(height, width), texture, CLASS_ROWS["building"])


def draw_road(rng, canvas: Canvas, ground: int, vanish_x: float) -> tuple[np.ndarray, list]:
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
    texture = tint(jitter_color(rng, (grey, grey, grey + 4), 5), height, side)
    texture += 7 * smooth_noise(rng, height, side, side / 10)[..., None] + fine_noise(rng, height, side, 6)
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
            cv2.fillPoly(texture, [np.round(points).astype(np.int32)], jitter_color(rng, (225, 225, 215), 8).tolist())
    mask = polygon_mask(polygon, ground, 0, height, side)
    canvas.paint(ground, 0, mask, texture, CLASS_ROWS["road"])
    return polygon, lanes


def draw_sidewalk(rng, canvas: Canvas, ground: int) -> None:
    """Sidewalk paving over the whole ground (the road is drawn on top)."""
    side = canvas.side
    height = side - ground
    if rng.random() < 0.5:
        base = jitter_color(rng, (165, 160, 155), 18)
    else:
        base = jitter_color(rng, (175, 125, 110), 12)
    texture = tint(base, height, side) + 5 * smooth_noise(rng, height, side, side / 12)[..., None]
    texture += fine_noise(rng, height, side, 5)
    tile = max(int(side * rng.uniform(0.025, 0.05)), 3)
    texture[::tile] *= 0.78
    texture[:, ::tile] *= 0.78
    canvas.paint(ground, 0, box_mask(height, side), texture, CLASS_ROWS["sidewalk"])


def draw_terrain(rng, canvas: Canvas, points) -> None:
    xs, ys = points[:, 0], points[:, 1]
    left, top = int(np.floor(xs.min())), int(np.floor(ys.min()))
    width, height = int(np.ceil(xs.max())) - left + 1, int(np.ceil(ys.max())) - top + 1
    if rng.random() < 0.8:  # grass
        base = jitter_color(rng, (125, 150, 70), 15)
    else:  # dry earth
        base = jitter_color(rng, (150, 130, 95), 12)
    # The noise comes from its own generator, so that the scene's stream (and
    # everything drawn after) does not depend on the strip's size (``thickness``).
    noise = np.random.default_rng(rng.integers(1 << 62))
    texture = tint(base, height, width) + 10 * smooth_noise(noise, height, width, 6)[..., None]
    streaks = cv2.blur(noise.normal(0, 14, (height, width)).astype(np.float32), (1, 5))
    texture += streaks[..., None]
    canvas.paint(top, left, polygon_mask(points, top, left, height, width), texture, CLASS_ROWS["terrain"])


def _foliage(rng, height: int, width: int) -> np.ndarray:
    base = jitter_color(rng, (60, 100, 40), 15)
    texture = tint(base, height, width)
    leaves = smooth_noise(rng, height, width, 3) + 0.8 * smooth_noise(rng, height, width, 9)
    texture += 22 * leaves[..., None] * np.array([0.7, 1.0, 0.5], np.float32)
    return texture + fine_noise(rng, height, width, 6)


def draw_tree(rng, canvas: Canvas, x: float, base_y: float, size: float) -> None:
    trunk_w, trunk_h = max(int(size * 0.12), 2), max(int(size * rng.uniform(0.6, 1.0)), 2)
    trunk = tint(jitter_color(rng, (85, 70, 55), 10), trunk_h, trunk_w) + fine_noise(rng, trunk_h, trunk_w, 6)
    trunk_mask = box_mask(trunk_h, trunk_w)
    canvas.paint(int(base_y - trunk_h), int(x - trunk_w / 2), trunk_mask, trunk, CLASS_ROWS["vegetation"])
    crown_w, crown_h = max(int(size * rng.uniform(0.9, 1.3)), 3), max(int(size * rng.uniform(0.8, 1.1)), 3)
    mask = np.zeros((crown_h, crown_w), np.uint8)
    for _ in range(6):  # a crown as a union of blobs
        cx, cy = rng.uniform(0.25, 0.75) * crown_w, rng.uniform(0.3, 0.7) * crown_h
        axes = (int(crown_w * rng.uniform(0.2, 0.3)), int(crown_h * rng.uniform(0.2, 0.32)))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, 0, 0, 360, 1, -1)
    top = int(base_y - trunk_h - crown_h * 0.8)
    canvas.paint(top, int(x - crown_w / 2), mask, _foliage(rng, crown_h, crown_w), CLASS_ROWS["vegetation"])


def draw_hedge(rng, canvas: Canvas, left: int, width: int, base_y: int, height: int) -> None:
    height, width = max(height, 2), max(width, 2)
    mask = box_mask(height, width)
    mask[: max(height // 4, 1)] = ellipse_mask(max(height // 2, 1), width)[: max(height // 4, 1)]
    canvas.paint(base_y - height, left, mask, _foliage(rng, height, width), CLASS_ROWS["vegetation"])


# --- objects ----------------------------------------------------------------


def draw_pole(rng, canvas: Canvas, x: float, base_y: float, height: float, width: int) -> tuple[int, int]:
    """A vertical pole; returns (top y, x centre)."""
    height = int(height)
    shade = np.abs(np.linspace(-1, 1, width, dtype=np.float32))
    paint = jitter_color(rng, (130, 132, 135) if rng.random() < 0.7 else (50, 70, 55), 15)
    texture = paint * (1.2 - 0.5 * shade)[None, :, None] * np.ones((height, 1, 1), np.float32)
    texture += fine_noise(rng, height, width, 3)
    top = int(base_y - height)
    canvas.paint(top, int(x - width / 2), box_mask(height, width), texture, CLASS_ROWS["pole"])
    return top, int(x)


def draw_sign(rng, canvas: Canvas, cx: int, cy: int, size: int) -> None:
    kind = rng.integers(4)
    size = max(size, 4)
    if kind == 0:  # round prohibition sign: red ring, white face
        mask = ellipse_mask(size, size)
        texture = tint(jitter_color(rng, (200, 30, 35), 15), size, size)
        inner = ellipse_mask(size, size)
        cv2.circle(inner, (size // 2, size // 2), max(size // 2 - max(size // 6, 1), 1), 2, -1)
        texture[inner == 2] = jitter_color(rng, (235, 235, 230), 8)
    elif kind == 1:  # round blue mandatory sign with a white arrow
        mask = ellipse_mask(size, size)
        texture = tint(jitter_color(rng, (30, 80, 190), 15), size, size)
        texture[size // 2 - max(size // 10, 1) : size // 2 + max(size // 10, 1), size // 4 : 3 * size // 4] = 240
    elif kind == 2:  # warning triangle
        mask = polygon_mask([(size / 2, 0), (size - 1, size - 1), (0, size - 1)], 0, 0, size, size)
        texture = tint(jitter_color(rng, (210, 35, 40), 12), size, size)
        corners = [(size / 2, size * 0.3), (size * 0.8, size * 0.85), (size * 0.2, size * 0.85)]
        inner = polygon_mask(corners, 0, 0, size, size)
        texture[inner > 0] = jitter_color(rng, (240, 235, 225), 8)
    else:  # rectangular direction sign
        mask = box_mask(int(size * 0.7), int(size * 1.3))
        texture = tint(jitter_color(rng, (30, 120, 70) if rng.random() < 0.5 else (35, 75, 180), 12), *mask.shape)
        texture[mask.shape[0] // 3 : mask.shape[0] // 3 + max(size // 10, 1), size // 5 : -size // 5] = 235
    texture += fine_noise(rng, *mask.shape, 3)
    canvas.paint(cy - mask.shape[0] // 2, cx - mask.shape[1] // 2, mask, texture, CLASS_ROWS["traffic sign"])


def draw_traffic_light(rng, canvas: Canvas, cx: int, top: int, width: int) -> None:
    width = max(width, 4)
    height = int(width * 2.6)
    texture = tint(jitter_color(rng, (40, 40, 38), 8), height, width) + fine_noise(rng, height, width, 3)
    lit = rng.integers(3)
    for lamp, color in enumerate(((230, 40, 30), (240, 170, 20), (40, 210, 90))):
        centre = (width // 2, int(height * (lamp + 0.5) / 3))
        shade = color if lamp == lit else tuple(c * 0.3 for c in color)
        cv2.circle(texture, centre, max(int(width * 0.32), 1), shade, -1)
    canvas.paint(top, cx - width // 2, box_mask(height, width), texture, CLASS_ROWS["traffic light"])


_CAR_COLORS = (
    (235, 235, 235),
    (190, 192, 195),
    (30, 30, 35),
    (25, 45, 110),
    (165, 25, 30),
    (60, 110, 70),
    (120, 115, 105),
    (200, 170, 40),
    (90, 90, 95),
)


def draw_car(rng, canvas: Canvas, cx: float, base_y: float, height: float) -> None:
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
    color = jitter_color(rng, _CAR_COLORS[rng.integers(len(_CAR_COLORS))], 12)
    texture = tint(color, height, width)
    gloss = np.linspace(1.15, 0.8, height, dtype=np.float32)[:, None, None]
    texture = texture * gloss + fine_noise(rng, height, width, 3)
    # Rear window, lights, number plate, tyres.
    glass = jitter_color(rng, (40, 50, 60), 10)
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
    canvas.paint(int(base_y - height), int(cx - width / 2), mask, texture, CLASS_ROWS["car"])


_CLOTHES = (
    (30, 35, 60),
    (25, 25, 28),
    (110, 110, 115),
    (170, 150, 110),
    (150, 30, 40),
    (40, 90, 150),
    (220, 220, 215),
    (90, 60, 110),
)
_SKIN = ((235, 200, 170), (200, 150, 110), (140, 95, 65), (95, 65, 45))


def draw_person(rng, canvas: Canvas, cx: float, base_y: float, height: float, thickness: float = 1.0) -> None:
    """A pedestrian: legs, torso with arms, head (``thickness`` widens it)."""
    height = int(height)
    width = max(int(height * rng.uniform(0.3, 0.38) * thickness), 3)
    if height < 6:
        return
    mask = np.zeros((height, width), np.uint8)
    texture = np.zeros((height, width, 3), np.float32)
    head = max(int(height * 0.13), 2)
    torso_top, leg_top = head, int(height * 0.5)
    shirt = jitter_color(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 15)
    trousers = jitter_color(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 10)
    skin = jitter_color(rng, _SKIN[rng.integers(len(_SKIN))], 8)
    # Head (skin, dark hair on top), torso (with arms), two legs.
    head_w = max(int(width * 0.42), 2)
    cv2.ellipse(mask, (width // 2, head // 2), (max(head_w // 2, 1), max(head // 2, 1)), 0, 0, 360, 1, -1)
    texture[:head] = skin
    texture[: max(head // 3, 1)] = jitter_color(rng, (40, 30, 25), 10)
    mask[torso_top:leg_top, int(width * 0.1) : int(width * 0.9)] = 1
    texture[torso_top:leg_top] = shirt
    stride = rng.uniform(0.0, 0.2) * width
    leg_w = max(int(width * 0.28), 1)
    for offset in (-1, 1):
        x0 = int(width / 2 + offset * (width * 0.16 + stride / 2) - leg_w / 2)
        mask[leg_top:, max(x0, 0) : max(x0, 0) + leg_w] = 1
    texture[leg_top:] = trousers
    texture[-max(height // 20, 1) :] = (30, 28, 26)  # shoes
    texture += fine_noise(rng, height, width, 4)
    canvas.paint(int(base_y - height), int(cx - width / 2), mask, texture, CLASS_ROWS["person"])


def draw_ego_vehicle(rng, canvas: Canvas) -> None:
    """The bonnet of the recording car at the bottom (void, as in Cityscapes)."""
    side = canvas.side
    height = max(int(side * rng.uniform(0.05, 0.09)), 1)
    mask = np.zeros((height, side), np.uint8)
    cv2.ellipse(mask, (side // 2, height), (int(side * 0.75), height), 0, 180, 360, 1, -1)
    texture = tint(jitter_color(rng, (35, 38, 45), 10), height, side) + fine_noise(rng, height, side, 3)
    canvas.paint(side - height, 0, mask, texture, VOID_ROW)
