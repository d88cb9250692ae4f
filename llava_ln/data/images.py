"""Images: read, make RGB, make square (pad / resize / crop), then the vision tower's own processor.

Squaring happens before the processor so that pad / resize / crop mean the same thing for
every processor (CLIP's resizes the short side and centre-crops, SigLIP's stretches): after
squaring, the processor only rescales and normalises. `square` (LLaVA's name for its default)
squares nothing and leaves the shape to the processor's own resize and crop.

Reading is defensive, because image files and the paths to them come from data we do not control:
  * size first: every image the pipeline will build from the file must stay within
    --max_image_pixels (default 64 MP), checked on the header before a pixel is decoded: the decoded
    image (width x height), and what squaring or the processor's resize makes of it (`pad` turns a
    1 x 100000 strip into a 100000 x 100000 square, a shortest-edge resize makes it 336 x 33.6M).
    So a decompression bomb, or a tiny file of extreme shape, is refused with one line naming the
    file and the step (Pillow's own global limit, a warning below 179 MP, is replaced by this one);
  * every Pillow mode becomes RGB with its values kept: 16-bit grayscale (I;16, I;16B, I;16L) is
    scaled from 0..65535 (plain `convert` would clip it to white); 32-bit integer (I) and float
    (F) images are scaled from the smallest of the ranges 0..1 (F only), 0..255, 0..65535 that
    holds every value, else stretched from their own min..max; anything transparent (RGBA, LA,
    La, RGBa, PA, P or L/RGB with a transparency key) is shown on white; CMYK, YCbCr, LAB, HSV,
    1-bit and palettes go through Pillow's conversions. Colour profiles and EXIF orientation are
    ignored, as in LLaVA;
  * a path from a record or a question file must stay inside its image folder (resolve_image_path):
    `..` that climbs out is an error, and so is an absolute path unless the caller allows it
    (training without --image_folder). Symlinks inside the folder are followed: the folder is the
    user's, the record naming a path is not.
"""
import os
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.paths import relative_inside
from llava_ln.core.pretrained import load_pretrained
from llava_ln.data.args import DEFAULT_MAX_IMAGE_PIXELS

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_TRANSPARENT = ("RGBA", "LA", "PA", "RGBa")


class ImageError(ValueError):
    """An image file that is missing, cannot be decoded, is too large, or lies outside its folder."""


def load_image_processor(path: str):
    """The image processor saved with the vision tower (AutoImageProcessor); clear error if absent."""
    from transformers import AutoImageProcessor

    try:
        return load_pretrained(AutoImageProcessor, path)
    except (OSError, ValueError, TypeError) as err:
        raise LlavaLnError(f"--vision_tower {path!r}: cannot load its image processor ({err})") from None


def resolve_image_path(folder: str, name: str, allow_absolute: bool = False) -> str:
    """folder/name for an image path taken from a file; ImageError when it would leave the folder."""
    if os.path.isabs(name):
        if allow_absolute:
            return name
        raise ImageError(f"image path {name!r} is absolute; image paths must be relative to the image folder {folder}")
    if not relative_inside(name):
        raise ImageError(f"image path {name!r} leads outside the image folder {folder}")
    return os.path.join(folder, name)


@contextmanager
def _own_pixel_limit():
    """Switch Pillow's global decompression-bomb limit off while we apply --max_image_pixels ourselves."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _scaled_to_bytes(values: np.ndarray, mode: str) -> np.ndarray:
    """uint8 levels of a 16/32-bit integer or float grayscale array (see the module docstring)."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode in _SIXTEEN_BIT:
        top = 65535.0
    elif mode == "F" and low >= 0 and high <= 1:
        top = 1.0
    elif low >= 0 and high <= 255:
        top = 255.0
    elif low >= 0 and high <= 65535:
        top = 65535.0
    else:
        values, top = values - low, max(high - low, 1e-12)
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy of an image of any Pillow mode, with its values kept (see the module docstring)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return Image.fromarray(_scaled_to_bytes(np.asarray(image), mode)).convert("RGB")
    if mode == "La":  # premultiplied: over white, a pixel is its level plus the white its alpha lets through
        level, alpha = (np.asarray(band, dtype=np.int32) for band in image.split())
        return Image.fromarray(np.clip(level + 255 - alpha, 0, 255).astype(np.uint8)).convert("RGB")
    if mode in _TRANSPARENT or "transparency" in image.info:
        # Transparent pixels would otherwise keep whatever colour they hide; show them on white.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decoded_size(width: int, height: int) -> tuple[int, str]:
    """What decoding a width x height file builds: (pixels, description)."""
    return width * height, f"= {width * height / 1e6:.1f} megapixels"


def open_rgb(path: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, planned=decoded_size) -> Image.Image:
    """Decode the whole file (so a truncated image fails here) and return it as RGB.

    max_pixels: the largest image, in pixels, that reading it may build (0: no limit), checked on the
    header before decoding; planned(width, height) -> (pixels, description) is the largest one the
    caller's pipeline builds from the file (by default just the decoded image).
    """
    try:
        with _own_pixel_limit(), Image.open(path) as image:
            width, height = image.size
            pixels, what = planned(width, height)
            if max_pixels and pixels > max_pixels:
                raise ImageError(f"image {path} is {width} x {height} {what}, more than --max_image_pixels "
                                 f"{max_pixels} (a decompression bomb or an extreme shape?)")
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, TypeError, MemoryError, Image.DecompressionBombError) as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(f"cannot read image {path} ({type(err).__name__}: {err})") from None


def pad_to_square(image: Image.Image, fill: tuple) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new("RGB", (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def crop_to_square(image: Image.Image) -> Image.Image:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def processor_side(processor) -> int | None:
    """The square side the processor outputs, when its config says so."""
    crop = getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and crop:
        return crop.get("height")
    size = getattr(processor, "size", None) or {}
    return size.get("height") or size.get("shortest_edge")


class ImageLoader:
    """Callable: list of image paths -> FloatTensor[n, 3, H, W], ready for the vision tower."""

    def __init__(self, image_processor, aspect_ratio: str = "pad", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        self.processor = image_processor
        self.aspect_ratio = aspect_ratio
        self.max_pixels = max_pixels
        mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        # LLaVA-1.5 (and transformers' LlavaImageProcessor) pad with the mean colour truncated,
        # not rounded: int(255 * m). One grey level matters for exact export verification.
        self.fill = tuple(int(255 * m) for m in mean)
        self.side = processor_side(image_processor)
        size = getattr(image_processor, "size", None) or {}
        self.keeps_ratio = "shortest_edge" in size and "height" not in size  # CLIP-style: short side to `side`

    def planned_pixels(self, width: int, height: int) -> tuple[int, str]:
        """The largest image this loader builds from a width x height file: (pixels, what builds it)."""
        steps = [decoded_size(width, height)]
        long, short = max(width, height), max(min(width, height), 1)
        if self.aspect_ratio == "pad" and width != height:
            steps.append((long * long, f"and padded to a square {long} x {long} = {long * long / 1e6:.1f} megapixels"))
        if self.aspect_ratio == "square" and self.side and self.keeps_ratio:
            resized = -(-self.side * long // short)
            steps.append((self.side * resized, f"and resized to a short side of {self.side} {self.side} x {resized} = "
                                               f"{self.side * resized / 1e6:.1f} megapixels"))
        return max(steps)

    def square(self, image: Image.Image) -> Image.Image:
        if self.aspect_ratio == "pad":
            return pad_to_square(image, self.fill)
        if self.aspect_ratio == "crop":
            return crop_to_square(image)
        return image  # resize: the processor stretches (see processor_overrides); square: the processor decides

    def processor_overrides(self) -> dict:
        """For resize, let the processor itself stretch to side x side.

        Stretching with PIL first and then running a processor that may use torchvision
        gives slightly different pixels than an exported LlavaImageProcessor would; one
        resize, done by the processor's own backend, keeps both sides identical.
        """
        if self.aspect_ratio != "resize" or not self.side:
            return {}
        overrides = {"size": {"height": self.side, "width": self.side}}
        if hasattr(self.processor, "do_center_crop"):
            overrides["do_center_crop"] = False
        return overrides

    def __call__(self, paths: list) -> torch.Tensor:
        images = [self.square(open_rgb(path, self.max_pixels, self.planned_pixels)) for path in paths]
        pixel_values = self.processor(images=images, return_tensors="pt", **self.processor_overrides())["pixel_values"]
        return pixel_values.to(torch.float32)
