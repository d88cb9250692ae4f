"""Helpers for the merge/export tests: run folders written directly with save_run (no trainer)."""
import os

import torch

from llava_ln.checkpoint.manifest import Manifest
from llava_ln.checkpoint.run_folder import save_run, trainable_tensors
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.model.parts import unwrap
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
VISION_LORA = {"r": 2, "alpha": 4, "dropout": 0.0}


def make_run(directory: str, llm: str, vision: str, mode: str, projector: str = "mlp2x_gelu",
             aspect_ratio: str = "resize", template: str = "vicuna_v1", seed: int = 0,
             vision_tune_mode: str = "frozen") -> str:
    """A stage-2 run folder whose trainable tensors (the tower's too, with vision_tune_mode) are visibly moved
    away from the base.

    The perturbation is large (0.3 std) so that a merge or export that dropped any trained
    tensor would change the outputs, not hide inside the tolerances.
    """
    tokenizer = load_tokenizer(llm)
    torch.manual_seed(seed)
    model, spec = build_mllm(ModelArguments(model_name_or_path=llm, vision_tower=vision,
                                            mm_projector_type=projector), tokenizer)
    model, plan = apply_tune_mode(model, TuningArguments(tune_mode=mode, lora_r=LORA["r"], lora_alpha=LORA["alpha"],
                                                   lora_dropout=LORA["dropout"], vision_tune_mode=vision_tune_mode,
                                                   vision_lora_r=VISION_LORA["r"],
                                                   vision_lora_alpha=VISION_LORA["alpha"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in unwrap(model).named_parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    stage1 = None
    if not plan.trains_connector:  # ln_simple: the run keeps the stage-1 connector
        stage1 = {n: p.detach().clone() for n, p in unwrap(model).named_parameters() if "multi_modal_projector" in n}
    manifest = Manifest(kind="trained", llm=llm, tokenizer=llm, vision_tower=vision, mm_projector_type=projector,
                        mm_vision_select_layer=-2, mm_vision_select_feature="patch", tune_mode=mode,
                        conv_template=template, image_aspect_ratio=aspect_ratio,
                        lora=dict(LORA) if mode == "lora" else None, tune_embeddings=plan.tune_embeddings,
                        image_token_id=spec.image_token_id, num_image_tokens=spec.num_image_tokens,
                        vision_tune_mode=vision_tune_mode,
                        vision_lora=dict(VISION_LORA) if plan.vision_lora else None,
                        vision_model_type=spec.vision_model_type)
    save_run(directory, model, manifest, tensors=trainable_tensors(model, plan), stage1_connector=stage1)
    return directory


def save_wide_llama(root: str) -> str:
    """A LLaMA base with another hidden size (for 'checkpoint from another model' errors)."""
    from tiny import make_bpe_tokenizer
    from transformers import AutoModelForCausalLM, LlamaConfig

    path = os.path.join(root, "llama_wide")
    if not os.path.isdir(path):
        config = LlamaConfig(vocab_size=300, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
        AutoModelForCausalLM.from_config(config).save_pretrained(path)
        make_bpe_tokenizer().save_pretrained(path)
    return path


def multimodal_logits(model):
    """Logits of a fixed image + text input through the native forward (for in-process comparisons)."""
    llava = unwrap(model)
    config = llava.config
    ids = torch.arange(5, 17).unsqueeze(0)
    ids[0, 1: 1 + config.image_seq_length] = config.image_token_id
    size = config.vision_config.image_size
    pixels = torch.linspace(-1, 1, 3 * size * size).reshape(1, 3, size, size)
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits.float()
