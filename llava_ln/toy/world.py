"""The toy world itself: its fixed facts, the scene model, seeded scene sampling and rendering.

The constants (shapes, colours, the grid, how often each appears) are shared by the image
renderer, the text generators and the backbone pretraining, so that the vision tower, the
LLM and the datasets all describe one world. Changing a constant changes the world: the
committed backbones must then be re-pretrained (`python -m llava_ln.toy.backbones.pretrain`).

Scenes have co-occurrence structure: each picks a palette of two colours and two shapes and
most of its objects come from that palette, so some categories appear together far more
often than others (what POPE's "adversarial" negatives exploit). Every random choice comes
from the numpy Generator passed in; nothing reads a global RNG.
"""
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# 64 px images cut by 16 px patches give a 4 x 4 patch grid: 16 image tokens per image,
# one per grid cell, which keeps the LLM sequences short enough for CPU training.
IMAGE_SIZE = 64
GRID = 4
CELL = IMAGE_SIZE // GRID
PATCH_SIZE = CELL

BACKGROUND_RGB = (28, 28, 32)

# Frequencies are deliberately uneven (as object frequencies in COCO are), so that POPE's
# "popular" negatives differ from its "random" ones.
COLORS = {
    "red": (220, 45, 45),
    "blue": (55, 100, 235),
    "green": (45, 175, 70),
    "yellow": (235, 205, 50),
    "purple": (155, 70, 205),
    "white": (235, 235, 235),
}
COLOR_WEIGHTS = (0.26, 0.22, 0.18, 0.14, 0.11, 0.09)

SHAPES = ("circle", "square", "triangle", "diamond")
SHAPE_WEIGHTS = (0.36, 0.28, 0.21, 0.15)

COLOR_NAMES = tuple(COLORS)
CATEGORIES = tuple(f"{color} {shape}" for color in COLOR_NAMES for shape in SHAPES)

MIN_OBJECTS = 1
MAX_OBJECTS = 6
PALETTE_STICKINESS = 0.8  # chance that an object's colour (and, separately, shape) comes from the palette
RADII = (5, 6, 7)

QUADRANTS = ("top left", "top right", "bottom left", "bottom right")

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class ShapeObject:
    """One shape on the grid. row/col index the 4 x 4 cells; radius and offsets are pixels."""

    shape: str
    color: str
    row: int
    col: int
    radius: int
    dx: int
    dy: int

    @property
    def category(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def quadrant(self) -> str:
        vertical = "top" if self.row < GRID // 2 else "bottom"
        horizontal = "left" if self.col < GRID // 2 else "right"
        return f"{vertical} {horizontal}"

    @property
    def side(self) -> str:
        return "left" if self.col < GRID // 2 else "right"


@dataclass(frozen=True)
class Scene:
    """A picture: its objects in reading order (row by row, left to right)."""

    objects: tuple

    def count(self, color: str | None = None, shape: str | None = None) -> int:
        return sum(1 for o in self.objects if (color is None or o.color == color) and (shape is None or o.shape == shape))

    def categories(self) -> list[str]:
        """Distinct categories present, in order of first appearance."""
        seen = []
        for obj in self.objects:
            if obj.category not in seen:
                seen.append(obj.category)
        return seen

    def colors(self) -> list[str]:
        return [c for c in COLOR_NAMES if self.count(color=c)]

    def shapes(self) -> list[str]:
        return [s for s in SHAPES if self.count(shape=s)]

    def with_category(self, category: str) -> list[ShapeObject]:
        return [o for o in self.objects if o.category == category]


# ------------------------------------------------------------------ sampling and rendering
def choose(rng: np.random.Generator, items):
    """One of `items`, uniformly (the draw every text generator uses for its phrasings)."""
    return items[int(rng.integers(len(items)))]


def _weighted_choice(rng: np.random.Generator, names, weights, size=None, replace=True):
    probs = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(names), size=size, replace=replace, p=probs / probs.sum())


def _palette_choice(rng, names, weights, palette) -> str:
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
            color = _palette_choice(rng, COLOR_NAMES, COLOR_WEIGHTS, color_palette)
            shape = _palette_choice(rng, SHAPES, SHAPE_WEIGHTS, shape_palette)
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
