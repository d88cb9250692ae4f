"""The fixed facts of the toy world: shapes, colours, the grid, and how often each appears.

Everything here is a constant shared by the image renderer, the text generators and the
backbone pretraining, so that the vision tower, the LLM and the datasets all describe one
world. Changing a constant changes the world: the committed backbones must then be
re-pretrained (`python -m llava_ln.toy.pretrain`).
"""
from dataclasses import dataclass

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
