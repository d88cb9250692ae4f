"""A tuned vision tower in the memory plan (its saved activations, recomputed under checkpointing) and on a
quantized base (--bits: the tower stays unquantized and trains)."""
import pytest
import torch
from model_helpers import mixed_batch

from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.model.forward import multimodal_forward
from llava_ln.model.parts import unwrap, vision_tower_of
from llava_ln.model.quantize import QuantSettings, quantize_llm_linears
from llava_ln.training.memory.recompute import decide_for_model_args
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode


def step_memory_for(tiny_llm, tiny_vision, vision_tune_mode: str):
    args = ModelArguments(model_name_or_path=tiny_llm("llama"), vision_tower=tiny_vision("clip"))
    _, memory = decide_for_model_args("on", args, TuningArguments(tune_mode="ln", vision_tune_mode=vision_tune_mode),
                                      kernels_backend="torch", dtype=torch.float32, batch_size=2, seq=16,
                                      budget_gib=None, tokenizer=load_tokenizer(tiny_llm("llama")))
    return memory


def test_the_recompute_plan_counts_a_training_towers_activations(tiny_llm, tiny_vision):
    frozen = step_memory_for(tiny_llm, tiny_vision, "frozen")
    tower = step_memory_for(tiny_llm, tiny_vision, "full")
    # A frozen tower runs without autograd: checkpointing changes nothing outside the blocks.
    assert frozen.other_checkpointed == frozen.other
    # A tower that trains keeps its layers' activations, and recomputes them once checkpointing is on.
    assert tower.other > frozen.other
    assert frozen.other <= tower.other_checkpointed < tower.other
    assert tower.peak(tower.blocks) - frozen.peak(frozen.blocks) < tower.peak(0) - frozen.peak(0)


def test_a_quantized_base_keeps_the_tower_unquantized_and_training(tiny_llm, tiny_vision):
    pytest.importorskip("bitsandbytes")
    path = tiny_llm("llama")
    model, spec = build_mllm(ModelArguments(model_name_or_path=path, vision_tower=tiny_vision("clip")),
                             load_tokenizer(path))
    quantize_llm_linears(model, QuantSettings(4, "nf4", True))
    model, plan = apply_tune_mode(model, TuningArguments(tune_mode="lora", lora_r=4, lora_alpha=8,
                                                         vision_tune_mode="lora", vision_lora_r=2, vision_lora_alpha=4))
    tower = vision_tower_of(model)
    assert not any(type(m).__module__.startswith("bitsandbytes") for m in tower.modules())
    assert all(p.dtype == torch.float32 for p in tower.parameters())
    assert any(type(m).__module__.startswith("bitsandbytes") for m in unwrap(model).model.language_model.modules())
    with torch.no_grad():
        for name, param in unwrap(model).named_parameters():
            if ".lora_B." in name:
                param.normal_(0, 0.02)
    multimodal_forward(model, **mixed_batch(spec)).loss.backward()
    tower_grads = {n for n, p in unwrap(model).named_parameters()
                   if n.startswith("model.vision_tower.") and p.grad is not None and p.grad.abs().sum() > 0}
    assert tower_grads == {n for n in plan.lora_names if plan.group_of[n] == "vision_lora"} != set()
