"""Data flags, named as in LLaVA so that a LLaVA launch script ports by changing a few lines.

  ImageFileArguments  --image_folder, --max_image_pixels (train, inspect-data, eval, analyze)
  DataArguments       the training data: files, templates, lengths, image squaring
"""
import os
from dataclasses import dataclass, field
from typing import Optional

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import Domain

ASPECT_RATIOS = ("pad", "resize", "crop", "square")
# A decompression bomb declares billions of pixels in a few bytes; 64 MP is far above any training image.
DEFAULT_MAX_IMAGE_PIXELS = 64 * 2**20


@dataclass(kw_only=True)
class ImageFileArguments:
    image_folder: Optional[str] = field(default=None, metadata={
        "help": "Folder image paths start from; a path may not leave it. Train, inspect-data, analyze: default the "
                "data file's folder, and absolute paths are accepted only without this flag. Eval: default the "
                "benchmark layout's."})
    max_image_pixels: int = field(default=DEFAULT_MAX_IMAGE_PIXELS, metadata={
        "help": "Largest image, in pixels, that reading a file may build (decoded, padded to a square, resized); "
                "a file that would exceed it is refused from its header, before decoding, as a decompression bomb "
                "would be.", "domain": Domain(ge=1, special={0: "no limit"})})


@dataclass(kw_only=True)
class DataArguments(ImageFileArguments):
    data_path: Optional[str] = field(
        default=None,
        metadata={"help": "LLaVA-format JSON or JSONL file(s), comma separated; `file:N` keeps a deterministic "
                  "random subset of N records of that file (drawn from --seed)."},
    )
    image_aspect_ratio: str = field(
        default="pad",
        metadata={"help": "pad (LLaVA-1.5: pad to a square with the image processor's mean colour), resize "
                  "(stretch to a square), crop (centre square) or square (LLaVA's name: no squaring first, the "
                  "image processor's own resize and centre crop)."},
    )
    conv_template: str = field(
        default="vicuna_v1",
        metadata={"help": "plain | vicuna_v1 | llama_2 | mistral | chatml | llama_3 | auto (the tokenizer's own "
                  "chat template). Stage 1 uses plain."},
    )
    model_max_length: int = field(
        default=2048, metadata={"help": "Longest sequence in tokens, image positions included; longer ones are cut.",
                                "domain": Domain(ge=2)}
    )
    group_by_modality_length: bool = field(
        default=False,
        metadata={"help": "Batch image and text-only samples separately, each grouped by length."},
    )
    skip_bad_samples: bool = field(
        default=False,
        metadata={"help": "Log and skip malformed records and unreadable images instead of stopping."},
    )
    # ---- where <image> goes (data/image_placement.py) ----
    keep_image_placement: bool = field(
        default=False,
        metadata={"help": "Keep each record's <image> where it is written; by default it moves to the front of its "
                  "turn, followed by a newline, as LLaVA's training does."},
    )


def check_data_args(args: DataArguments) -> None:
    """Reject impossible values before anything is read."""
    if not args.data_path:
        raise LlavaLnError("--data_path is required")
    if args.image_aspect_ratio not in ASPECT_RATIOS:
        raise LlavaLnError(
            f"--image_aspect_ratio {args.image_aspect_ratio!r} is not one of {', '.join(ASPECT_RATIOS)}"
        )
    if args.image_folder is not None and not os.path.isdir(args.image_folder):
        raise LlavaLnError(f"--image_folder {args.image_folder!r} is not a folder")
