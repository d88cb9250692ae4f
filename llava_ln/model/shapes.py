"""Reference model shapes as configs only (no weights): what the benchmarks, `describe` checks and tests size against.

  7b    LLaVA-1.5-7B: Vicuna-7B's LLaMA (4096 wide, 32 blocks, 32000 tokens) + CLIP ViT-L/14 at 336 px
  13b   LLaVA-1.5-13B: Vicuna-13B's LLaMA (5120 wide, 40 blocks) + the same tower
  1b    a 1.1B LLaMA with grouped-query attention (TinyLlama's shape) + the same tower
  tiny  a 2-block LLaMA and a 2-layer CLIP tower at 56 px (16 image tokens): the shapes above, CPU-sized

The vision tower gives (336 / 14)^2 = 576 image tokens per image at the LLaVA-1.5 sizes. write_shape puts a
shape's two configs in folders that --model_name_or_path and --vision_tower accept; building from them on
the meta device (build_mllm(..., on_meta=True)) costs no memory at any size.
"""
import os

CLIP_VIT_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=336, patch_size=14, projection_dim=768)

# name -> (LlamaConfig keyword arguments, CLIPVisionConfig keyword arguments)
SHAPES = {
    "7b": (dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096), CLIP_VIT_L_336),
    "13b": (dict(vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                 num_attention_heads=40, num_key_value_heads=40, max_position_embeddings=4096), CLIP_VIT_L_336),
    "1b": (dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=4096), CLIP_VIT_L_336),
    "tiny": (dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=512),
             dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56,
                  patch_size=14)),
}


def llm_config(name: str, **overrides):
    """The shape's LlamaConfig (overrides: e.g. num_hidden_layers for a shorter stack of the same blocks)."""
    from transformers import LlamaConfig

    return LlamaConfig(**{**SHAPES[name][0], **overrides})


def vision_config(name: str):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**SHAPES[name][1])


def write_shape(root: str, name: str) -> tuple[str, str]:
    """(llm folder, vision folder) under root holding the shape's configs alone."""
    llm, vision = os.path.join(root, "llm"), os.path.join(root, "vision")
    llm_config(name).save_pretrained(llm)
    vision_config(name).save_pretrained(vision)
    return llm, vision
