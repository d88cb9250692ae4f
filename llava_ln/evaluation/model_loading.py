"""Load any model `llava-ln eval` can evaluate, with the template and image pipeline it was trained with.

  * a run folder or merged folder (manifest.json): llava_ln.checkpoint.load_checkpoint; the
    conversation template and --image_aspect_ratio come from the manifest;
  * a transformers-native LLaVA folder without a manifest (an export, or any llava-hf model):
    LlavaForConditionalGeneration.from_pretrained; the template must then be named with
    --conv_template (default "auto": the tokenizer's own chat template) and squaring is "pad"
    unless --image_aspect_ratio says otherwise.
Explicit --conv_template / --image_aspect_ratio flags override the manifest (e.g. to ask a
stage-1 "plain" model questions in a chat format). --bits 4|8 quantizes the LLM's block linears at
load (model/quantize.py), before a run's tensors and LoRA adapter are applied: a --bits run evaluated
as it trained, where the default evaluates what merge and export ship (the unquantized base).
"""
import os
from dataclasses import dataclass

import torch

from llava_ln.core.constants import DTYPES
from llava_ln.core.errors import LlavaLnError, short_reason
from llava_ln.core.pretrained import load_pretrained
from llava_ln.data.args import ASPECT_RATIOS, DEFAULT_MAX_IMAGE_PIXELS
from llava_ln.data.images import ImageLoader, load_image_processor
from llava_ln.data.templates import get_template
from llava_ln.model.llava_checkpoints import model_json
from llava_ln.model.parts import unwrap
from llava_ln.model.quantize import quant_settings, quantize_llm_linears, settings_from_dict


@dataclass
class EvalModel:
    model: object  # LlavaForConditionalGeneration (LoRA already merged in)
    tokenizer: object
    template: object
    image_loader: ImageLoader
    conv_template: str
    image_aspect_ratio: str

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    @property
    def num_image_tokens(self) -> int:
        return self.model.config.image_seq_length


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 on a GPU that supports it, else float32."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise LlavaLnError(f"--dtype {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def _is_native_llava(path: str) -> bool:
    config = model_json(path, "config.json")
    return config is not None and config.get("model_type") == "llava"


def _load_native(path: str, dtype, device, attn_implementation):
    from transformers import LlavaForConditionalGeneration

    from llava_ln.model.backbones import WEIGHT_LOAD_ERRORS, load_tokenizer

    try:
        model = load_pretrained(LlavaForConditionalGeneration, path, dtype=dtype,
                                                              attn_implementation=attn_implementation or "sdpa")
    except WEIGHT_LOAD_ERRORS as err:
        raise LlavaLnError(f"--model_path {path}: cannot load a LLaVA model ({short_reason(err)})") from None
    tokenizer = load_tokenizer(path)
    if tokenizer.convert_tokens_to_ids("<image>") != model.config.image_token_id:
        raise LlavaLnError(f"--model_path {path}: the tokenizer's <image> id differs from config.json's image token")
    return model.to(device).eval(), tokenizer


def _checkpoint_hint(path: str) -> str:
    """A training OUTPUT_DIR stopped before its final save holds only checkpoint-<step>/: name the newest."""
    from llava_ln.training.checkpointing import list_checkpoints

    saved = [folder for _, folder in list_checkpoints(path) if os.path.isfile(os.path.join(folder, "manifest.json"))]
    return f"; it holds {len(saved)} checkpoint(s), the newest is {saved[-1]}" if saved else ""


def resolve_format(path: str, conv_template: str | None, image_aspect_ratio: str | None) -> tuple[str, str]:
    """(template name, aspect ratio) the model is evaluated with: the flags, else the manifest, else defaults.

    Reads only the manifest, so a finished run can be checked without loading any weights.
    """
    if not os.path.isdir(path):
        raise LlavaLnError(f"--model_path {path}: folder not found")
    manifest = None
    if os.path.isfile(os.path.join(path, "manifest.json")):
        from llava_ln.checkpoint.manifest import read_manifest

        manifest = read_manifest(path)
    elif not _is_native_llava(path):
        raise LlavaLnError(f"--model_path {path}: neither a llava-ln checkpoint (manifest.json) nor a LLaVA model "
                           f"folder{_checkpoint_hint(path)}")
    conv_template = conv_template or (manifest.conv_template if manifest else "auto")
    image_aspect_ratio = image_aspect_ratio or (manifest.image_aspect_ratio if manifest else "pad")
    if image_aspect_ratio not in ASPECT_RATIOS:
        raise LlavaLnError(f"--image_aspect_ratio {image_aspect_ratio!r} is not one of {', '.join(ASPECT_RATIOS)}")
    return conv_template, image_aspect_ratio


def load_eval_model(path: str, device, dtype=torch.float32, conv_template: str | None = None,
                    image_aspect_ratio: str | None = None, attn_implementation: str | None = None,
                    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, bits: int = 16) -> EvalModel:
    """bits 4|8: the LLM's block linears quantized at load (see EvalArguments.bits)."""
    conv_template, image_aspect_ratio = resolve_format(path, conv_template, image_aspect_ratio)
    quantization = _eval_quantization(path, bits)
    manifest = None
    if os.path.isfile(os.path.join(path, "manifest.json")):
        from llava_ln.checkpoint.loading import load_checkpoint

        loaded = load_checkpoint(path, dtype=dtype, device=device, attn_implementation=attn_implementation,
                                 quantization=quantization)
        model, tokenizer, manifest = loaded.model, loaded.tokenizer, loaded.manifest
        if model is not unwrap(model) and quantization is None:
            model = model.merge_and_unload()  # LoRA folded in once: faster generation, same function
    else:
        model, tokenizer = _load_native(path, dtype, device, attn_implementation)
        quantize_llm_linears(model, quantization, device)
    processor = load_image_processor(_processor_path(path, manifest))
    return EvalModel(model=model, tokenizer=tokenizer, template=get_template(conv_template, tokenizer),
                     image_loader=ImageLoader(processor, image_aspect_ratio, max_image_pixels),
                     conv_template=conv_template,
                     image_aspect_ratio=image_aspect_ratio)


def _eval_quantization(path: str, bits: int):
    """The QuantSettings --bits asks for: the run's own 4-bit flavour when it trained at these bits."""
    settings = quant_settings(bits)
    if settings is None or not os.path.isfile(os.path.join(path, "manifest.json")):
        return settings
    from llava_ln.checkpoint.manifest import read_manifest

    trained = settings_from_dict(read_manifest(path).quantization)
    return trained if trained is not None and trained.bits == bits else settings


def _processor_path(path: str, manifest) -> str:
    """Where the image processor is saved: the folder itself unless it is a run folder (then the tower's)."""
    if manifest is None or os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        return path
    tower = manifest.vision_tower
    relative = os.path.join(path, tower)
    return relative if not os.path.isabs(tower) and os.path.isdir(relative) else tower
