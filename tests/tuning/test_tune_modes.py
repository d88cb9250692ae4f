"""Every tune mode on every LLM family trains exactly the table's tensors."""
import os
import re

import pytest
import torch
from model_helpers import FAMILIES, build, mixed_batch

from llava_ln.core.errors import LlavaLnError
from llava_ln.model.forward import multimodal_forward
from llava_ln.model.parts import unwrap
from llava_ln.tuning.modes import TUNE_MODES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Expected trainable tensors, written from each family's known parameter names (independent of
# the implementation's class-based detection), relative to the Llava model.
LLM = r"model\.language_model\."
NORMS = {
    "llama": LLM + r"(layers\.\d+\.(input_layernorm|post_attention_layernorm)|norm)\.weight",
    "mistral": LLM + r"(layers\.\d+\.(input_layernorm|post_attention_layernorm)|norm)\.weight",
    "qwen2": LLM + r"(layers\.\d+\.(input_layernorm|post_attention_layernorm)|norm)\.weight",
    "phi": LLM + r"(layers\.\d+\.input_layernorm|final_layernorm)\.(weight|bias)",
    "gpt_neox": LLM + r"(layers\.\d+\.(input_layernorm|post_attention_layernorm)|final_layer_norm)\.(weight|bias)",
}
EMBED = {"gpt_neox": LLM + r"embed_in\.weight"}
QV = LLM + r"layers\.\d+\.self_attn\.(q_proj|v_proj)\.(weight|bias)"
MLP = LLM + r"layers\.\d+\.mlp\..+"
CONNECTOR = r"model\.multi_modal_projector\..+"
HEAD = r"lm_head\.(weight|bias)"
LORA = LLM + r"layers\.\d+\..+\.lora_[AB]\.default\.weight"
ALL_LLM = LLM + r".+"


def expected_pattern(family: str, mode: str) -> str:
    embed = EMBED.get(family, LLM + r"embed_tokens\.weight")
    head = [] if family == "qwen2" else [HEAD]  # qwen2's head is tied: counted under embeddings
    emb = [embed, *head]
    parts = {
        "connector": [CONNECTOR],
        "full": [ALL_LLM, CONNECTOR, *head],
        "lora": [LORA, CONNECTOR],
        "ln": [NORMS[family], CONNECTOR, *emb],
        "ln_simple": [NORMS[family]],
        "attn_qv": [QV, CONNECTOR, *emb],
        "attn_mlp": [MLP, CONNECTOR, *emb],
    }[mode]
    return "|".join(f"(?:{p})" for p in parts)


CASES = [(f, m) for f in FAMILIES for m in TUNE_MODES if not (f == "gpt_neox" and m == "attn_qv")]


@pytest.mark.parametrize("family,mode", CASES)
def test_trainable_set_matches_table_and_receives_gradients(tiny_llm, tiny_vision, family, mode):
    model, spec = build(tiny_llm, tiny_vision, family, mode)
    llava = unwrap(model)
    names = {n for n, p in llava.named_parameters() if p.requires_grad}
    pattern = re.compile(expected_pattern(family, mode))
    all_names = [n for n, _ in llava.named_parameters()]
    expected = {n for n in all_names if pattern.fullmatch(n) and "base_layer" not in n}
    assert names == expected
    assert not any(n.startswith("model.vision_tower.") for n in names)

    if mode == "lora":  # B starts at zero, which would zero A's gradient; make both non-trivial
        with torch.no_grad():
            for n, p in llava.named_parameters():
                if ".lora_B." in n:
                    p.normal_(0, 0.02)
    multimodal_forward(model, **mixed_batch(spec)).loss.backward()
    with_grad = {n for n, p in llava.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == names


def test_gpt_neox_attn_qv_is_refused_with_reason(tiny_llm, tiny_vision):
    with pytest.raises(LlavaLnError, match="q_proj/v_proj"):
        build(tiny_llm, tiny_vision, "gpt_neox", "attn_qv")


def test_tied_embeddings_counted_once_and_stay_tied(tiny_llm, tiny_vision):
    model, _ = build(tiny_llm, tiny_vision, "qwen2", "ln")
    llava = unwrap(model)
    assert llava.lm_head.weight is llava.get_input_embeddings().weight
    assert "lm_head.weight" not in dict(llava.named_parameters())


@pytest.mark.parametrize("mode,override,expect_embeddings", [("lora", True, True), ("ln", False, False)])
def test_tune_embeddings_overrides_the_mode_default(tiny_llm, tiny_vision, mode, override, expect_embeddings):
    model, _ = build(tiny_llm, tiny_vision, "llama", mode, tune_embeddings=override)
    params = dict(unwrap(model).named_parameters())
    assert params["model.language_model.embed_tokens.weight"].requires_grad is expect_embeddings
    assert params["lm_head.weight"].requires_grad is expect_embeddings


def test_unknown_mode_is_a_clear_error(tiny_llm, tiny_vision):
    with pytest.raises(LlavaLnError, match="--tune_mode 'layernorm'"):
        build(tiny_llm, tiny_vision, "llama", "layernorm")


def test_the_readme_table_lists_every_mode_in_the_registry_order():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    table = readme[readme.index("| mode | trainable |"):]
    rows = re.findall(r"^  \| `(\w+)` \|", table[:table.index("\n\n")], flags=re.MULTILINE)
    assert rows == list(TUNE_MODES)
