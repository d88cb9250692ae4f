"""Where `<image>` stands in a turn: LLaVA's training moves it to the front, and so does llava-ln by default.

LLaVA (llava/train/train.py, preprocess_multimodal) rewrites every turn that mentions an image as
`<image>` + newline + the rest of the text, stripped: "What is this? <image>" is trained as
"<image>\\nWhat is this?". Evaluation prompts are written the same way (evaluation.generation), so
moving the tag keeps training and evaluation alike. --keep_image_placement true trains on the
record's text as written instead. Several tags in one turn all move, each on its own line, in order.
"""
from llava_ln.core.constants import IMAGE_TOKEN


def images_first(messages) -> tuple:
    """messages ((role, text), ...) with each user turn's <image> tags moved to its front."""
    placed = []
    for role, text in messages:
        count = text.count(IMAGE_TOKEN)
        if role == "user" and count:
            text = ((IMAGE_TOKEN + "\n") * count + text.replace(IMAGE_TOKEN, "").strip()).strip()
        placed.append((role, text))
    return tuple(placed)
