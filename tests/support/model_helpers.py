"""Build a tiny composed model in a tuning mode, and a mixed image / text-only batch for it."""
import torch
from tiny import LLM_CONFIGS

from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.model.parts import unwrap
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.groups import classify_parameters
from llava_ln.tuning.plan import apply_tune_mode

FAMILIES = tuple(LLM_CONFIGS)


def trained_tensors(model) -> dict:
    """The trainable tensors a run folder stores (LoRA factors go to the adapter instead)."""
    adapters = {n for n, group in classify_parameters(model).items() if group == "lora"}
    return {n: p for n, p in unwrap(model).named_parameters() if p.requires_grad and n not in adapters}


def build(tiny_llm, tiny_vision, family, mode, **tuning):
    path = tiny_llm(family)
    tokenizer = load_tokenizer(path)
    model, spec = build_mllm(ModelArguments(model_name_or_path=path, vision_tower=tiny_vision("clip")), tokenizer)
    model, _ = apply_tune_mode(model, TuningArguments(tune_mode=mode, lora_r=4, lora_alpha=8, **tuning))
    return model, spec


def mixed_batch(spec, seed=0):
    """Two samples: one with an image, one text-only."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 250, (2, 12), generator=gen)
    ids[0, 1 : 1 + spec.num_image_tokens] = spec.image_token_id
    labels = ids.clone()
    labels[0, : 1 + spec.num_image_tokens] = -100
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                pixel_values=torch.randn(1, 3, 28, 28, generator=gen), image_counts=torch.tensor([1, 0]),
                sample_ids=["img-sample", "text-sample"])
