"""Probe inputs for verification: a few deterministic images and conversations.

The images are drawn, not shipped: one wide and one tall picture (so pad-to-square and
centre-crop really act), with shapes and colours. The same probes are fed through llava-ln's
own pipeline (template + tokenizer + image loader) and through an exported folder's
processor; a difference anywhere shows up in the comparison.
"""
import os
from dataclasses import dataclass

from PIL import Image, ImageDraw

from llava_ln.model.tokens import IMAGE_TOKEN


@dataclass(frozen=True)
class Probe:
    name: str
    messages: tuple  # (("user", text), ("assistant", text), ..., ("user", text)); <image> written in the text
    images: tuple  # image file names, one per <image>


def draw_probe_images(directory: str) -> dict:
    """Write the probe images as PNG (lossless) into directory; returns name -> path."""
    os.makedirs(directory, exist_ok=True)
    wide = Image.new("RGB", (48, 30), (30, 140, 200))
    draw = ImageDraw.Draw(wide)
    draw.rectangle((4, 6, 20, 24), fill=(220, 40, 40))
    draw.ellipse((26, 4, 44, 22), fill=(250, 230, 60))
    tall = Image.new("RGB", (30, 44), (240, 240, 235))
    draw = ImageDraw.Draw(tall)
    draw.polygon([(15, 4), (27, 26), (3, 26)], fill=(40, 170, 60))
    draw.rectangle((8, 30, 22, 40), fill=(90, 40, 160))
    paths = {}
    for name, image in (("wide.png", wide), ("tall.png", tall)):
        paths[name] = os.path.join(directory, name)
        image.save(paths[name])
    return paths


def default_probes(template_name: str) -> list:
    """Image questions, a follow-up turn and a text-only prompt (stage-1 `plain` gets images only)."""
    image_probes = [
        Probe("wide_image", (("user", f"{IMAGE_TOKEN}\nWhat is in the image?"),), ("wide.png",)),
        Probe("tall_image", (("user", f"{IMAGE_TOKEN}\nDescribe the shapes and their colors."),), ("tall.png",)),
    ]
    if template_name == "plain":
        return image_probes
    follow_up = Probe("follow_up", (
        ("user", f"{IMAGE_TOKEN}\nWhat is in the image?"),
        ("assistant", "A red square and a yellow circle."),
        ("user", "What color is the background?"),
    ), ("wide.png",))
    text_only = Probe("text_only", (("user", "How many sides does a triangle have?"),), ())
    return image_probes + [follow_up, text_only]


def hf_messages(probe: Probe, as_parts: bool = True) -> list:
    """The probe in transformers' chat format: content parts ({"type": "image"} / text) or plain strings."""
    messages = []
    for role, text in probe.messages:
        if not as_parts:
            messages.append({"role": role, "content": text})
            continue
        parts = []
        for index, piece in enumerate(text.split(f"{IMAGE_TOKEN}\n")):
            if index > 0:
                parts.append({"type": "image"})
            if piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": role, "content": parts})
    return messages
