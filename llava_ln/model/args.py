"""Flags that choose the backbones and how they are joined (LLaVA's flag names)."""
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Any AutoModelForCausalLM checkpoint folder or hub id (the LLM)."}
    )
    tokenizer_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Tokenizer folder; defaults to --model_name_or_path."}
    )
    vision_tower: Optional[str] = field(
        default=None, metadata={"help": "A CLIP or SigLIP checkpoint (full model or vision-only)."}
    )
    mm_vision_select_layer: int = field(
        default=-2, metadata={"help": "Vision hidden state used as image features (-2 = penultimate)."}
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
    # ---- quantized frozen base (LLaVA's flag names; llava_ln/model/quantize.py, docs/training.md) ----
    bits: int = field(
        default=16,
        metadata={"help": "4 or 8: store the linear layers of the LLM's blocks quantized (bitsandbytes) and frozen; "
                  "16: as loaded. Allowed with --tune_mode ln, ln_simple, lora (QLoRA) and connector."},
    )
    quant_type: str = field(default="nf4", metadata={"help": "--bits 4: nf4 | fp4."})
    double_quant: bool = field(
        default=True, metadata={"help": "--bits 4: also quantize the per-block statistics (about 0.4 bits per weight)."}
    )
