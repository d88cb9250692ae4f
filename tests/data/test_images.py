"""Image reading: every Pillow mode to the right RGB values, the pixel limit, paths kept inside their folder."""
import os

import numpy as np
import pytest
from PIL import Image

from llava_ln.data.images import ImageError, open_rgb, resolve_image_path, to_rgb


def _grey(mode: str, values, size=(2, 1)) -> Image.Image:
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I;16L": "<u2", "I": "<i4", "F": "<f4"}[mode]
    data = np.asarray(values, dtype=dtype).reshape(size[1], size[0])
    return Image.frombytes(mode, size, data.tobytes())


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_16_bit_grayscale_is_scaled_not_clipped_to_white(mode):
    rgb = to_rgb(_grey(mode, [0, 32768]))
    assert rgb.mode == "RGB" and [rgb.getpixel((x, 0)) for x in (0, 1)] == [(0, 0, 0), (128, 128, 128)]


def test_16_bit_png_round_trip(tmp_path):
    Image.fromarray(np.array([[65535, 257 * 64]], dtype=np.uint16)).save(tmp_path / "g16.png")
    rgb = open_rgb(str(tmp_path / "g16.png"))
    assert [rgb.getpixel((x, 0)) for x in (0, 1)] == [(255, 255, 255), (64, 64, 64)]


@pytest.mark.parametrize("mode,values,expected", [
    ("I", [0, 255], [0, 255]),  # 8-bit levels stay levels
    ("I", [0, 65535], [0, 255]),  # 16-bit range
    ("I", [-10, 10], [0, 255]),  # neither: stretched from min..max
    ("F", [0.0, 0.5], [0, 128]),  # 0..1 floats
    ("F", [0.0, 200.0], [0, 200]),
    ("F", [float("nan"), 1.0], [0, 255]),
])
def test_32_bit_modes_take_the_smallest_range_that_holds_them(mode, values, expected):
    rgb = to_rgb(_grey(mode, values))
    assert [rgb.getpixel((x, 0))[0] for x in (0, 1)] == expected


@pytest.mark.parametrize("image,expected", [
    (Image.new("RGBA", (1, 1), (255, 0, 0, 0)), (255, 255, 255)),  # fully transparent: white
    (Image.new("RGBA", (1, 1), (255, 0, 0, 255)), (255, 0, 0)),
    (Image.new("LA", (1, 1), (0, 128)), (127, 127, 127)),
    (Image.new("La", (1, 1), (0, 0)), (255, 255, 255)),  # premultiplied, transparent
    (Image.new("La", (1, 1), (100, 255)), (100, 100, 100)),
    (Image.new("RGBa", (1, 1), (0, 0, 0, 0)), (255, 255, 255)),
    (Image.new("CMYK", (1, 1), (255, 0, 0, 0)), (0, 255, 255)),  # cyan
    (Image.new("1", (1, 1), 1), (255, 255, 255)),
    (Image.new("YCbCr", (1, 1), (128, 128, 128)), (128, 128, 128)),
    (Image.new("HSV", (1, 1), (0, 255, 255)), (255, 0, 0)),
])
def test_other_modes(image, expected):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == expected


def test_palette_and_colour_key_transparency_are_shown_on_white():
    palette = Image.new("P", (1, 1), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.info["transparency"] = 0
    keyed = Image.new("RGB", (1, 1), (5, 6, 7))
    keyed.info["transparency"] = (5, 6, 7)
    assert to_rgb(palette).getpixel((0, 0)) == to_rgb(keyed).getpixel((0, 0)) == (255, 255, 255)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    path = str(tmp_path / "bomb.png")
    Image.new("1", (12000, 9000)).save(path)  # 108 MP, a few kB on disk
    assert os.path.getsize(path) < 100_000
    with pytest.raises(ImageError, match=r"bomb\.png is 12000 x 9000 = 108\.0 megapixels, more than "
                                         r"--max_image_pixels 67108864"):
        open_rgb(path)
    with pytest.raises(ImageError, match="--max_image_pixels 1000"):
        open_rgb(path, max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own limit is back in place afterwards


def test_pixel_limit_zero_means_no_limit_and_pillow_does_not_interfere(tmp_path):
    path = str(tmp_path / "wide.png")
    Image.new("L", (200, 100)).save(path)
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1000  # a stricter global Pillow setting does not override ours
    try:
        assert open_rgb(path, max_pixels=0).size == (200, 100)
    finally:
        Image.MAX_IMAGE_PIXELS = previous


@pytest.mark.parametrize("name", ["../x.png", "a/../../x.png", "./../x.png", "a/b/../../../x.png"])
def test_relative_paths_may_not_leave_the_folder(name):
    with pytest.raises(ImageError, match="leads outside the image folder"):
        resolve_image_path("/data/images", name)


def test_absolute_paths_only_when_allowed():
    with pytest.raises(ImageError, match="is absolute"):
        resolve_image_path("/data/images", "/etc/passwd")
    assert resolve_image_path("/data", "/data/images/a.png", allow_absolute=True) == "/data/images/a.png"
    assert resolve_image_path("/data", "coco/../coco/a.png") == "/data/coco/../coco/a.png"
