"""Seeded scene sampling and PIL rendering for the toy world.

Scenes have co-occurrence structure: each picks a palette of two colours and two shapes and
most of its objects come from that palette, so some categories appear together far more
often than others (what POPE's "adversarial" negatives exploit). Every random choice comes
from the numpy Generator passed in; nothing reads a global RNG.
"""
import io

import numpy as np
from PIL import Image, ImageDraw

from llava_ln.toy.world import (
    BACKGROUND_RGB,
    CELL,
    COLOR_NAMES,
    COLOR_WEIGHTS,
    COLORS,
    GRID,
    IMAGE_SIZE,
    MAX_OBJECTS,
    MIN_OBJECTS,
    SHAPE_WEIGHTS,
    SHAPES,
    Scene,
    ShapeObject,
)

PALETTE_STICKINESS = 0.8  # chance that an object's colour (and, separately, shape) comes from the palette
RADII = (5, 6, 7)


def _weighted_choice(rng: np.random.Generator, names, weights, size=None, replace=True):
    probs = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(names), size=size, replace=replace, p=probs / probs.sum())


def _pick(rng, names, weights, palette) -> str:
    if rng.random() < PALETTE_STICKINESS:
        sub_weights = [weights[i] for i in palette]
        return names[palette[_weighted_choice(rng, palette, sub_weights)]]
    return names[_weighted_choice(rng, names, weights)]


def sample_scene(rng: np.random.Generator, min_objects: int = MIN_OBJECTS, max_objects: int = MAX_OBJECTS,
                 min_categories: int = 1) -> Scene:
    """Draw one scene; resamples (from the same generator) until it has min_categories kinds."""
    while True:
        count = int(rng.integers(min_objects, max_objects + 1))
        color_palette = [int(i) for i in _weighted_choice(rng, COLOR_NAMES, COLOR_WEIGHTS, size=2, replace=False)]
        shape_palette = [int(i) for i in _weighted_choice(rng, SHAPES, SHAPE_WEIGHTS, size=2, replace=False)]
        cells = sorted(int(c) for c in rng.choice(GRID * GRID, size=count, replace=False))
        objects = []
        for cell in cells:
            color = _pick(rng, COLOR_NAMES, COLOR_WEIGHTS, color_palette)
            shape = _pick(rng, SHAPES, SHAPE_WEIGHTS, shape_palette)
            radius = int(rng.choice(RADII))
            slack = CELL // 2 - radius - 1  # keeps every shape inside its own cell
            dx, dy = (int(v) for v in rng.integers(-slack, slack + 1, size=2))
            objects.append(ShapeObject(shape, color, cell // GRID, cell % GRID, radius, dx, dy))
        scene = Scene(tuple(objects))
        if len(scene.categories()) >= min_categories:
            return scene


def _outline(obj: ShapeObject) -> tuple[str, list]:
    cx = obj.col * CELL + CELL // 2 + obj.dx
    cy = obj.row * CELL + CELL // 2 + obj.dy
    r = obj.radius
    if obj.shape == "circle":
        return "ellipse", [cx - r, cy - r, cx + r, cy + r]
    if obj.shape == "square":
        half = max(1, round(r * 0.85))  # similar area to the circle of the same radius
        return "rectangle", [cx - half, cy - half, cx + half, cy + half]
    if obj.shape == "triangle":
        return "polygon", [(cx, cy - r), (cx + r, cy + r - 1), (cx - r, cy + r - 1)]
    if obj.shape == "diamond":
        return "polygon", [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    raise ValueError(f"unknown shape {obj.shape!r}")


def render_scene(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND_RGB)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        kind, geometry = _outline(obj)
        getattr(draw, kind)(geometry, fill=COLORS[obj.color])
    return image


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding with fixed settings and no metadata, so equal images give equal bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    """JPEG as the real benchmarks ship images (quality 95, no chroma subsampling, no metadata)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, subsampling=0, optimize=False)
    return buffer.getvalue()
