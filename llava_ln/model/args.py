"""Flags that choose the backbones and how they are joined (LLaVA's flag names), and the quantized base.

  BackboneArguments      --model_name_or_path, --tokenizer_name_or_path, --vision_tower (train, describe,
                         inspect-data, compare; merge and export as BaseOverrides)
  BitsArguments          --bits (train, describe, eval, export)
  QuantizationArguments  --bits with --quant_type and --double_quant (train, describe, inspect-data)
  ModelArguments         everything that composes the model
"""
from dataclasses import dataclass, field
from typing import Optional

from llava_ln.core.flag_domains import Domain

BITS = (4, 8, 16)  # 16: not quantized (LLaVA's default for --bits)
QUANT_TYPES = ("nf4", "fp4")


@dataclass(kw_only=True)
class BackboneArguments:
    model_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "The LLM: any AutoModelForCausalLM folder or hub id, or a multimodal checkpoint (a transformers "
                "LLaVA folder, an original LLaVA checkpoint, a llava-ln run); for merge and export, the base to "
                "use instead of the one the run's manifest records."})
    tokenizer_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "Tokenizer folder (default: the LLM's); for merge and export, instead of the recorded one."})
    vision_tower: Optional[str] = field(default=None, metadata={
        "help": "A CLIP or SigLIP checkpoint (full model or vision-only); for merge and export, instead of the "
                "recorded one."})


@dataclass(kw_only=True)
class BaseOverrides(BackboneArguments):
    """The backbone flags of merge and export: they relocate the bases a run folder's manifest points at."""

    def any(self) -> bool:
        return any((self.model_name_or_path, self.tokenizer_name_or_path, self.vision_tower))


@dataclass(kw_only=True)
class BitsArguments:
    bits: int = field(default=16, metadata={
        "help": f"{' | '.join(map(str, BITS))}: 4 or 8 store the linear layers of the LLM's blocks quantized "
                "(bitsandbytes) and frozen, so modes that train them are refused; eval loads a --bits run's base "
                "as it trained (its 4-bit type from the manifest, LoRA unmerged on top); export --format hf 4 "
                "stores them in 4 bits. 16: as stored, unquantized.", "domain": Domain(choices=BITS)})


@dataclass(kw_only=True)
class QuantizationArguments(BitsArguments):
    quant_type: str = field(default="nf4", metadata={"help": f"--bits 4: {' | '.join(QUANT_TYPES)}."})
    double_quant: bool = field(
        default=True, metadata={"help": "--bits 4: also quantize the per-block statistics (about 0.4 bits per weight)."}
    )


@dataclass(kw_only=True)
class ModelArguments(BackboneArguments, QuantizationArguments):
    mm_vision_select_layer: int = field(
        default=-2, metadata={"help": "Vision hidden state used as image features (-2 = penultimate).",
                              "domain": Domain(note="negative counts back from the last layer")}
    )
    mm_vision_select_feature: str = field(
        default="patch", metadata={"help": "patch (patch tokens only) or cls_patch (CLS token + patches)."}
    )
    mm_projector_type: str = field(
        default="mlp2x_gelu", metadata={"help": "Connector: linear, mlp2x_gelu (LLaVA-1.5) or mlp{N}x_gelu."}
    )
    attn_implementation: str = field(
        default="auto", metadata={"help": "auto | flash_attention_2 | sdpa | eager."}
    )
