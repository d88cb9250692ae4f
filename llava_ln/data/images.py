"""Images: read, make RGB, make square (pad / resize / crop), then the vision tower's own processor.

Squaring happens before the processor so that pad / resize / crop mean the same thing for
every processor (CLIP's resizes the short side and centre-crops, SigLIP's stretches): after
squaring, the processor only rescales and normalises. `square` (LLaVA's name for its default)
squares nothing and leaves the shape to the processor's own resize and crop.
"""
import torch
from PIL import Image

from llava_ln.core.errors import LlavaLnError


class ImageError(ValueError):
    """An image file that is missing or cannot be decoded."""


def load_image_processor(path: str):
    """The image processor saved with the vision tower (AutoImageProcessor); clear error if absent."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError) as err:
        raise LlavaLnError(f"--vision_tower {path!r}: cannot load its image processor ({err})") from None


def open_rgb(path: str) -> Image.Image:
    """Decode the whole file (so a truncated image fails here) and return it as RGB."""
    try:
        with Image.open(path) as image:
            image.load()
            has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
            if not has_alpha:
                return image.convert("RGB")
            # Transparent pixels would otherwise keep whatever colour they hide; show them on white.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
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

    def __init__(self, image_processor, aspect_ratio: str = "pad"):
        self.processor = image_processor
        self.aspect_ratio = aspect_ratio
        mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        # LLaVA-1.5 (and transformers' LlavaImageProcessor) pad with the mean colour truncated,
        # not rounded: int(255 * m). One grey level matters for exact export verification.
        self.fill = tuple(int(255 * m) for m in mean)
        self.side = processor_side(image_processor)

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
        images = [self.square(open_rgb(path)) for path in paths]
        pixel_values = self.processor(images=images, return_tensors="pt", **self.processor_overrides())["pixel_values"]
        return pixel_values.to(torch.float32)
