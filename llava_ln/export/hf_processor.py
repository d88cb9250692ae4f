"""The LlavaProcessor of an exported folder: image settings, `<image>` expansion, chat template.

llava-ln's image pipeline squares an image (--image_aspect_ratio) and then runs the vision
tower's own image processor. transformers' LlavaImageProcessor expresses the same steps:
`do_pad` is LLaVA-1.5's pad-to-square with the mean colour, followed by the CLIP-style
resize / centre-crop / normalise copied from the tower's processor; `resize` (stretch to a
square) is a height x width resize. `crop` (centre square first, then resize) has no
equivalent, since LlavaImageProcessor resizes before it crops, and is refused.

The processor expands each `<image>` into as many tokens as the tower yields features,
computed from patch_size, num_additional_image_tokens (1 for a CLS token) and
vision_feature_select_strategy ("default" drops the CLS position).

The preprocessor config is written as JSON and loaded back through AutoImageProcessor, so
the exported file names the class ("LlavaImageProcessor") and transformers picks its
torchvision or PIL backend itself, as it will for every user of the folder.
"""
import json
import os

from llava_ln.core.errors import LlavaLnError
from llava_ln.data.images import processor_side

BICUBIC = 3
_COPIED = ("do_resize", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")


def llava_image_processor_config(tower_processor, aspect_ratio: str) -> dict:
    """preprocessor_config.json for LlavaImageProcessor reproducing llava-ln's image pipeline."""
    tower = tower_processor.to_dict()
    side = processor_side(tower_processor)
    if not side:
        raise LlavaLnError(f"cannot tell the output size of the vision tower's image processor ({tower})")
    config = {key: tower[key] for key in _COPIED if key in tower}
    config.update(image_processor_type="LlavaImageProcessor", do_convert_rgb=True, do_pad=aspect_ratio == "pad",
                  crop_size={"height": side, "width": side})
    if aspect_ratio == "pad":
        config.update(size=tower.get("size"), do_center_crop=bool(tower.get("do_center_crop", False)))
    elif aspect_ratio == "resize":
        # llava-ln stretches to a square with a bicubic resize; the tower's own resize is then a no-op.
        config.update(size={"height": side, "width": side}, do_center_crop=False, resample=BICUBIC, do_resize=True)
    else:
        raise LlavaLnError(unexpressible_aspect_ratio(aspect_ratio))
    for key in ("image_mean", "image_std"):
        if key in config:
            config[key] = [float(v) for v in config[key]]
    return config


def unexpressible_aspect_ratio(aspect_ratio: str) -> str | None:
    """Why LlavaImageProcessor cannot reproduce this --image_aspect_ratio (None: it can)."""
    if aspect_ratio in ("pad", "resize"):
        return None
    if aspect_ratio == "crop":
        # Measured: on a 30x44 image the two orders differ by up to 1.6 in normalised pixel units.
        return ("cannot export an --image_aspect_ratio crop model to the transformers-native format: "
                "llava-ln crops the centre square and then resizes, but LlavaImageProcessor can only resize and "
                "then crop, which samples other pixels; use `llava-ln merge` for a standalone llava-ln checkpoint")
    return f"--image_aspect_ratio {aspect_ratio!r} has no LlavaImageProcessor equivalent"


def num_additional_image_tokens(vision_config) -> int:
    """Positions the tower outputs besides patches: the CLS token of CLIP-like towers."""
    from llava_ln.model.vision_tower import vision_family_of

    return 1 if vision_family_of(vision_config).has_cls_token else 0


def write_processor(directory: str, tokenizer, tower_processor, aspect_ratio: str, llava_config,
                    chat_template: str) -> None:
    """Write preprocessor_config.json, processor_config.json, the chat template and the tokenizer."""
    from transformers import AutoImageProcessor, LlavaProcessor

    with open(os.path.join(directory, "preprocessor_config.json"), "w", encoding="utf-8") as handle:
        json.dump(llava_image_processor_config(tower_processor, aspect_ratio), handle, indent=2, sort_keys=True)
    image_processor = AutoImageProcessor.from_pretrained(directory)
    tokenizer.chat_template = chat_template
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=llava_config.vision_config.patch_size,
        vision_feature_select_strategy=llava_config.vision_feature_select_strategy,
        chat_template=chat_template,
        image_token="<image>",
        num_additional_image_tokens=num_additional_image_tokens(llava_config.vision_config),
    )
    processor.save_pretrained(directory)
