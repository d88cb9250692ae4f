"""--vision_tune_mode: each tower mode trains exactly the expected tower tensors, only reachable ones,
at --mm_vision_tower_lr, and one optimizer step leaves every other tensor bit-identical."""
import logging
import os
import re

import pytest
import torch
from model_helpers import mixed_batch

from llava_ln.core.errors import LlavaLnError
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.model.forward import multimodal_forward
from llava_ln.model.parts import unwrap
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode
from llava_ln.tuning.vision_modes import VISION_TUNE_MODES

# Written from the tiny towers' known parameter names (2 encoder layers), independent of the class-based
# detection. At the default feature layer -2 only layer 0 reaches the features; at -1 both layers do.
# Neither the final norm (post_layernorm) nor SigLIP's pooling head ever does: LLaVA reads
# hidden_states, which are taken before them.
TOWER = r"model\.vision_tower\."
BEFORE = {"clip": TOWER + r"(embeddings\..+|pre_layrnorm\.(weight|bias))", "siglip": TOWER + r"embeddings\..+"}
CLIP_PRE_NORM = TOWER + r"pre_layrnorm\.(weight|bias)"


def layer_pattern(layers: str, part: str) -> str:
    return TOWER + rf"encoder\.layers\.{layers}\.{part}"


def expected_tower(family: str, mode: str, layers: str, before: bool = True) -> str | None:
    norms = layer_pattern(layers, r"layer_norm[12]\.(weight|bias)")
    parts = {
        "frozen": [],
        "ln": [norms] + ([CLIP_PRE_NORM] if family == "clip" and before else []),
        "lora": [layer_pattern(layers, r"(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])\.lora_[AB]\.default\.weight")],
        "full": [layer_pattern(layers, r"(?!.*(lora_|base_layer)).+")] + ([BEFORE[family]] if before else []),
    }[mode]
    return "|".join(f"(?:{p})" for p in parts) or None


def build(tiny_llm, tiny_vision, family="clip", layer=-2, **tuning):
    path = tiny_llm("llama")
    args = ModelArguments(model_name_or_path=path, vision_tower=tiny_vision(family), mm_vision_select_layer=layer)
    model, spec = build_mllm(args, load_tokenizer(path))
    tuning = {"tune_mode": "connector", "vision_lora_r": 2, "vision_lora_alpha": 4, **tuning}
    model, plan = apply_tune_mode(model, TuningArguments(**tuning))
    return model, spec, plan


def tower_trainable(model) -> set:
    return {n for n, p in unwrap(model).named_parameters() if p.requires_grad and n.startswith("model.vision_tower.")}


def matching(model, pattern: str | None) -> set:
    regex = re.compile(pattern) if pattern else None
    return {n for n, _ in unwrap(model).named_parameters() if regex and regex.fullmatch(n)}


@pytest.mark.parametrize("family", ["clip", "siglip"])
@pytest.mark.parametrize("mode", list(VISION_TUNE_MODES))
def test_each_tower_mode_trains_exactly_its_tensors_and_nothing_else_moves(tiny_llm, tiny_vision, family, mode):
    model, spec, plan = build(tiny_llm, tiny_vision, family, tune_mode="ln", vision_tune_mode=mode)
    llava = unwrap(model)
    expected = matching(model, expected_tower(family, mode, "0"))
    assert tower_trainable(model) == expected
    assert {n for n in plan.trainable if n.startswith("model.vision_tower.")} == expected
    if mode == "lora":  # B starts at zero, which would zero A's gradient; make both non-trivial
        with torch.no_grad():
            for n, p in llava.named_parameters():
                if ".lora_B." in n:
                    p.normal_(0, 0.02)
    before = {n: p.detach().clone() for n, p in llava.named_parameters()}
    optimizer = torch.optim.AdamW(plan.param_groups(model, 1e-2, 0.1))
    multimodal_forward(model, **mixed_batch(spec)).loss.backward()
    moved_grad = {n for n, p in llava.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved_grad == set(plan.trainable)  # every trained tensor gets a gradient: none is unreachable
    optimizer.step()
    changed = {n for n, p in llava.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == set(plan.trainable)
    assert expected <= changed


@pytest.mark.parametrize("family", ["clip", "siglip"])
@pytest.mark.parametrize("layer", [-2, -1])
def test_the_scope_is_exactly_what_receives_a_gradient(tiny_llm, tiny_vision, family, layer):
    """Every tower tensor made trainable by hand: those that get a gradient are the full mode's scope."""
    model, spec, plan = build(tiny_llm, tiny_vision, family, layer, vision_tune_mode="full")
    llava = unwrap(model)
    for name, param in llava.named_parameters():
        param.requires_grad_(name.startswith("model.vision_tower."))
    multimodal_forward(model, **mixed_batch(spec)).loss.backward()
    reached = {n for n, p in llava.named_parameters() if p.grad is not None}
    layers = "0" if layer == -2 else "[01]"
    assert reached == {n for n in plan.trainable if n.startswith("model.vision_tower.")}
    assert reached == matching(model, expected_tower(family, "full", layers))
    unreachable = {n for n, _ in llava.named_parameters() if n.startswith("model.vision_tower.")} - reached
    assert any("post_layernorm" in n for n in unreachable)
    assert any(".layers.1." in n for n in unreachable) == (layer == -2)


def test_last_layers_keeps_the_last_reachable_layers_only(tiny_llm, tiny_vision):
    model, _, plan = build(tiny_llm, tiny_vision, "clip", -1, vision_tune_mode="full", vision_tune_last_layers=1)
    assert tower_trainable(model) == matching(model, expected_tower("clip", "full", "1", before=False))
    model, _, _ = build(tiny_llm, tiny_vision, "clip", -2, vision_tune_mode="ln", vision_tune_last_layers=1)
    assert tower_trainable(model) == matching(model, expected_tower("clip", "ln", "0", before=False))
    with pytest.raises(LlavaLnError, match="--vision_tune_last_layers 2: the feature layer -2 reaches only 1"):
        build(tiny_llm, tiny_vision, "clip", -2, vision_tune_mode="ln", vision_tune_last_layers=2)
    with pytest.raises(LlavaLnError, match="--vision_tune_last_layers 1 needs a --vision_tune_mode"):
        build(tiny_llm, tiny_vision, "clip", -2, vision_tune_last_layers=1)


def test_tower_groups_get_the_tower_rate_and_norms_no_decay(tiny_llm, tiny_vision):
    model, _, plan = build(tiny_llm, tiny_vision, "siglip", tune_mode="ln", vision_tune_mode="full",
                           mm_vision_tower_lr=2e-6, norm_lr=1e-3)
    groups = {g["name"]: g for g in plan.param_groups(model, 2e-5, 0.1)}
    names = {g.name: set(g.parameters) for g in plan.optimizer_groups}
    assert {k: (g["lr"], g["weight_decay"]) for k, g in groups.items() if k.startswith("vision")} == {
        "vision_norms_no_decay": (2e-6, 0.0), "vision_other_decay": (2e-6, 0.1), "vision_other_no_decay": (2e-6, 0.0)}
    assert groups["norms_no_decay"]["lr"] == 1e-3 and groups["other_decay"]["lr"] == 2e-5
    assert names["vision_norms_no_decay"] == matching(model, expected_tower("siglip", "ln", "0"))
    assert all(n.endswith(".bias") or "position_embedding" not in n for n in names["vision_other_no_decay"])
    assert "model.vision_tower.embeddings.patch_embedding.weight" in names["vision_other_decay"]
    # Without --mm_vision_tower_lr the tower trains at --learning_rate.
    model, _, plan = build(tiny_llm, tiny_vision, "clip", vision_tune_mode="ln")
    assert {g["name"]: g["lr"] for g in plan.param_groups(model, 3e-4, 0.0)}["vision_norms_no_decay"] == 3e-4


def test_llm_lora_and_tower_lora_share_one_adapter_with_their_own_ranks(tiny_llm, tiny_vision):
    model, _, plan = build(tiny_llm, tiny_vision, "clip", tune_mode="lora", lora_r=4, lora_alpha=8,
                           vision_tune_mode="lora")
    params = dict(unwrap(model).named_parameters())
    tower_a = params["model.vision_tower.encoder.layers.0.self_attn.q_proj.lora_A.default.weight"]
    llm_a = params["model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    assert (tower_a.shape[0], llm_a.shape[0]) == (2, 4)
    assert {plan.group_of[n] for n in plan.lora_names} == {"lora", "vision_lora"}
    assert plan.counts()["vision_lora"]["trainable"] == sum(params[n].numel() for n in plan.lora_names
                                                             if plan.group_of[n] == "vision_lora")


def test_bad_tower_flags_are_one_line(tiny_llm, tiny_vision):
    with pytest.raises(LlavaLnError, match="--vision_tune_mode 'norms' is not one of frozen, ln, lora, full"):
        build(tiny_llm, tiny_vision, vision_tune_mode="norms")
    with pytest.raises(LlavaLnError, match="--mm_vision_tower_lr inf: must be a finite number >= 0"):
        build(tiny_llm, tiny_vision, vision_tune_mode="ln", mm_vision_tower_lr=float("inf"))
    with pytest.raises(LlavaLnError, match="--vision_lora_r 0: must be >= 1"):
        build(tiny_llm, tiny_vision, vision_tune_mode="lora", vision_lora_r=0)
    # Feature layer 0 is the embeddings' output: no encoder layer, so no linear for the tower's LoRA (nor,
    # in SigLIP, any norm) can reach it; refused before PEFT would fail on an empty target list.
    for family, mode in (("clip", "lora"), ("siglip", "ln")):
        with pytest.raises(LlavaLnError, match=f"--vision_tune_mode {mode}: nothing of the tower can train"):
            build(tiny_llm, tiny_vision, family, 0, vision_tune_mode=mode)


def test_a_lora_rank_above_every_adapted_layer_is_a_warning(tiny_llm, tiny_vision, caplog):
    """The tiny tower's linears are 32x32, 32x64 and 64x32: no update of any of them has rank above 32."""
    with caplog.at_level(logging.WARNING, logger="llava_ln.tuning.plan"):
        build(tiny_llm, tiny_vision, vision_tune_mode="lora", vision_lora_r=32)
        assert "above the rank" not in caplog.text
        build(tiny_llm, tiny_vision, tune_mode="lora", lora_r=4, vision_tune_mode="lora", vision_lora_r=33)
    assert "--vision_lora_r 33 is above the rank any layer it adapts can have (32 at most)" in caplog.text
    assert "--lora_r" not in caplog.text


def test_the_readme_tower_table_lists_every_tower_mode_in_the_registry_order():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md"), encoding="utf-8").read()
    table = readme[readme.index("| tower mode | trainable |"):]
    rows = re.findall(r"^  \| `(\w+)` \|", table[:table.index("\n\n")], flags=re.MULTILINE)
    assert rows == list(VISION_TUNE_MODES)
