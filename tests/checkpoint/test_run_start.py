"""A multimodal --model_name_or_path: the model built from it computes exactly what the source model computes.

Sources are tiny checkpoints in other projects' layouts (tests/support/llava_layouts.py). The
reference for a transformers LLaVA folder is plain transformers; for original LLaVA it is LLaVA's
own forward (tower features spliced at the -200 placeholder), written independently in the helper.
"""
import json
import os

import pytest
import torch
from llava_layouts import (
    LLAVA_IMAGE_TOKEN_INDEX,
    make_hf_llava,
    make_original_llava,
    original_llava_logits,
    with_image_tokens,
)
from tiny import make_vision_dir

from llava_ln.checkpoint.run_start import build_start_model, resolve_start
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.args import DataArguments
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer

IDS = torch.tensor([[5, 17, 33, LLAVA_IMAGE_TOKEN_INDEX, 40, 41, 90, 7]])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("run_start"))


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(5))


def start(path: str, explicit: dict | None = None):
    """What train.py does before the first step: resolve the flags, load the tokenizer, build the model."""
    explicit = explicit or {}
    model_args = ModelArguments(model_name_or_path=path, **{k: v for k, v in explicit.items()
                                                            if k in ModelArguments.__dataclass_fields__})
    data_args = DataArguments(**{k: v for k, v in explicit.items() if k in DataArguments.__dataclass_fields__})
    source = resolve_start(model_args, data_args, set(explicit))
    tokenizer = load_tokenizer(model_args.tokenizer_name_or_path)
    model, spec = build_start_model(model_args, tokenizer, torch.float32)
    return model.eval(), spec, source, data_args


@torch.no_grad()
def our_logits(model, spec, pixels):
    return model(input_ids=with_image_tokens(IDS, spec.image_token_id, spec.num_image_tokens),
                 pixel_values=pixels).logits


@pytest.mark.parametrize("layer,strategy,feature,tokens", [(-2, "default", "patch", 4), (-1, "full", "cls_patch", 5)])
def test_transformers_llava_folder_starts_exactly_where_it_is(root, pixels, layer, strategy, feature, tokens):
    from transformers import LlavaForConditionalGeneration

    path = make_hf_llava(os.path.join(root, f"hf{layer}"), select_layer=layer, strategy=strategy)
    model, spec, source, data_args = start(path)
    assert source.kind == "hf_llava" and spec.source == {"kind": "hf_llava", "path": os.path.abspath(path)}
    assert (spec.mm_vision_select_layer, spec.mm_vision_select_feature, spec.num_image_tokens) == (layer, feature, tokens)
    assert data_args.conv_template == "auto" and data_args.image_aspect_ratio == "square"
    reference = LlavaForConditionalGeneration.from_pretrained(path).eval()
    with torch.no_grad():
        expected = reference(input_ids=with_image_tokens(IDS, spec.image_token_id, tokens), pixel_values=pixels).logits
    assert torch.equal(our_logits(model, spec, pixels), expected)


@pytest.mark.parametrize("family,fmt,projector", [("llama", "safetensors", "mlp2x_gelu"), ("mistral", "bin", "mlp2x_gelu"),
                                                  ("llama", "bin", "linear")])
def test_original_llava_checkpoint_starts_exactly_where_llava_is(root, tiny_vision, pixels, family, fmt, projector):
    vision = tiny_vision("clip")
    path = make_original_llava(root, vision, family=family, fmt=fmt, projector=projector)
    model, spec, source, data_args = start(path)
    assert source.kind == "llava" and spec.mm_projector_type == projector and spec.vision_tower == os.path.abspath(vision)
    assert data_args.conv_template == "vicuna_v1" and data_args.image_aspect_ratio == "pad"
    expected = original_llava_logits(path, vision, IDS, pixels)
    ours = our_logits(model, spec, pixels)
    # LLaVA's vocabulary has no <image>: llava-ln adds one row; every logit over LLaVA's vocabulary is identical.
    assert ours.shape[-1] == expected.shape[-1] + 1 == spec.image_token_id + 1
    assert torch.equal(ours[..., :expected.shape[-1]], expected)


def test_original_llava_tower_is_overridable_like_llavas_vision_tower_flag(root, tiny_vision, pixels):
    other = make_vision_dir(os.path.join(root, "other_tower"), "clip", seed=9)
    path = make_original_llava(root, tiny_vision("clip"))
    model, spec, _, _ = start(path, {"vision_tower": other})
    expected = original_llava_logits(path, other, IDS, pixels)
    assert torch.equal(our_logits(model, spec, pixels)[..., :expected.shape[-1]], expected)


def test_flags_that_contradict_the_checkpoint_are_refused(root, tiny_vision):
    path = make_original_llava(root, tiny_vision("clip"))
    with pytest.raises(LlavaLnError, match="--mm_projector_type linear: .* was built with mm_projector_type mlp2x_gelu"):
        start(path, {"mm_projector_type": "linear"})
    _, spec, _, data_args = start(path, {"mm_vision_select_layer": -2, "conv_template": "plain"})
    assert spec.mm_vision_select_layer == -2 and data_args.conv_template == "plain"  # agreeing / free flags are kept


def _edit_config(path: str, **changes) -> None:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    config.update(changes)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle)


def test_what_cannot_be_reproduced_is_refused_in_one_line(root, tiny_vision):
    path = make_original_llava(os.path.join(root, "start_end"), tiny_vision("clip"))
    _edit_config(path, mm_use_im_start_end=True)
    with pytest.raises(LlavaLnError, match="mm_use_im_start_end") as err:
        start(path)
    assert "\n" not in str(err.value)
    _edit_config(path, mm_use_im_start_end=False, mm_patch_merge_type="spatial_unpad")
    with pytest.raises(LlavaLnError, match="any-resolution"):
        start(path)
    lora = make_original_llava(os.path.join(root, "lora_output"), tiny_vision("clip"))
    torch.save({}, os.path.join(lora, "non_lora_trainables.bin"))
    with pytest.raises(LlavaLnError, match="merge_lora_weights.py"):
        start(lora)


def test_a_chat_template_that_drops_text_content_is_not_used_silently(root):
    path = make_hf_llava(os.path.join(root, "parts_template"))
    tokenizer_config = os.path.join(path, "tokenizer_config.json")
    with open(tokenizer_config, encoding="utf-8") as handle:
        config = json.load(handle)
    # llava-hf's style: iterates content parts, so plain-string content renders as nothing.
    config["chat_template"] = ("{% for m in messages %}{{ m['role'] }}: {% for part in m['content'] %}"
                               "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endfor %}")
    with open(tokenizer_config, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    for stray in ("chat_template.jinja", "chat_template.json"):
        if os.path.exists(os.path.join(path, stray)):
            os.remove(os.path.join(path, stray))
    with pytest.raises(LlavaLnError, match="drops plain-text message content.*--conv_template"):
        start(path)
    _, _, _, data_args = start(path, {"conv_template": "vicuna_v1"})
    assert data_args.conv_template == "vicuna_v1"
