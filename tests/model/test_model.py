"""The composed model: composition, connectors, vision features, attention choice, mixed batches."""
import pytest
import torch
from model_helpers import build, mixed_batch
from transformers import LlavaForConditionalGeneration

from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer, resolve_attn_implementation
from llava_ln.model.builder import build_mllm
from llava_ln.model.connector import MLPConnector, projector_depth
from llava_ln.model.forward import multimodal_forward
from llava_ln.model.parts import connector_of


def make(tiny_llm, tiny_vision, family="llama", vision="clip", **kwargs):
    path = tiny_llm(family)
    tokenizer = load_tokenizer(path)
    args = ModelArguments(model_name_or_path=path, vision_tower=tiny_vision(vision), **kwargs)
    return build_mllm(args, tokenizer), tokenizer


def test_result_is_the_native_llava_class_with_image_token_in_vocab(tiny_llm, tiny_vision):
    (model, spec), tokenizer = make(tiny_llm, tiny_vision)
    assert type(model) is LlavaForConditionalGeneration
    assert tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == spec.image_token_id == model.config.image_token_id
    assert model.get_input_embeddings().weight.shape[0] > spec.image_token_id
    assert spec.num_image_tokens == 4  # 28px / 14px patches = 2x2, CLS dropped


@pytest.mark.parametrize("vision,feature,tokens", [("clip", "patch", 4), ("clip", "cls_patch", 5), ("siglip", "patch", 4)])
def test_image_token_count_follows_the_tower_and_feature_choice(tiny_llm, tiny_vision, vision, feature, tokens):
    (model, spec), _ = make(tiny_llm, tiny_vision, vision=vision, mm_vision_select_feature=feature)
    assert spec.num_image_tokens == tokens == model.config.image_seq_length
    ids = torch.full((1, tokens + 2), 7)
    ids[0, 1 : 1 + tokens] = spec.image_token_id
    out = multimodal_forward(model, ids, torch.ones_like(ids), labels=ids, pixel_values=torch.randn(1, 3, 28, 28),
                             image_counts=torch.tensor([1]))
    assert torch.isfinite(out.loss)
    # the native forward agrees with ours on the same inputs (same merge semantics)
    model.eval()
    native = model(input_ids=ids, pixel_values=torch.zeros(1, 3, 28, 28)).logits
    ours = multimodal_forward(model, ids, torch.ones_like(ids), pixel_values=torch.zeros(1, 3, 28, 28)).logits
    torch.testing.assert_close(native, ours)


def test_siglip_has_no_cls_token_to_select(tiny_llm, tiny_vision):
    with pytest.raises(LlavaLnError, match="no CLS token"):
        make(tiny_llm, tiny_vision, vision="siglip", mm_vision_select_feature="cls_patch")


@pytest.mark.parametrize("projector,depth", [("linear", 1), ("mlp2x_gelu", 2), ("mlp3x_gelu", 3)])
def test_connector_types(tiny_llm, tiny_vision, projector, depth):
    (model, _), _ = make(tiny_llm, tiny_vision, mm_projector_type=projector)
    connector = connector_of(model)
    linears = [m for m in connector.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == depth == projector_depth(projector)
    assert linears[0].in_features == 32 and linears[-1].out_features == 32
    if projector != "mlp2x_gelu":
        assert isinstance(connector, MLPConnector)


@pytest.mark.parametrize("bad", ["mlp", "conv", "mlp0x_gelu", "mlp2x_relu"])
def test_unknown_connector_is_refused(bad):
    with pytest.raises(LlavaLnError, match="mm_projector_type"):
        projector_depth(bad)


def test_mixed_text_and_image_batch_trains_connector_only_from_image_samples(tiny_llm, tiny_vision):
    model, spec = build(tiny_llm, tiny_vision, "llama", "ln")
    batch = mixed_batch(spec)
    multimodal_forward(model, **batch).loss.backward()
    assert connector_of(model).linear_1.weight.grad.abs().sum() > 0


def test_text_only_batch_still_runs_the_vision_path_with_zero_gradient(tiny_llm, tiny_vision):
    model, spec = build(tiny_llm, tiny_vision, "llama", "ln")
    calls = []
    connector_of(model).register_forward_hook(lambda *a: calls.append(1))
    ids = torch.randint(5, 250, (2, 8))
    out = multimodal_forward(model, ids, torch.ones_like(ids), labels=ids, pixel_values=None,
                             image_counts=torch.tensor([0, 0]))
    out.loss.backward()
    assert calls == [1]  # under ZeRO-3 every rank must gather the connector every step
    grad = connector_of(model).linear_1.weight.grad
    assert grad is not None and grad.abs().sum() == 0


def test_image_token_mismatch_names_the_sample(tiny_llm, tiny_vision):
    model, spec = build(tiny_llm, tiny_vision, "llama", "ln")
    batch = mixed_batch(spec)
    batch["input_ids"][0, 1] = 9  # one placeholder fewer than the image yields
    with pytest.raises(LlavaLnError, match=r"sample img-sample: 3 image placeholder positions .* yield 4 features"):
        multimodal_forward(model, **batch)


def test_attention_auto_is_sdpa_without_flash_and_flash_request_is_an_error():
    assert resolve_attn_implementation("auto") in ("sdpa", "flash_attention_2")
    if not torch.cuda.is_available():
        assert resolve_attn_implementation("auto") == "sdpa"
        with pytest.raises(LlavaLnError, match="flash_attention_2 cannot run here"):
            resolve_attn_implementation("flash_attention_2")
    with pytest.raises(LlavaLnError, match="attn_implementation"):
        resolve_attn_implementation("xformers")
    assert resolve_attn_implementation("eager") == "eager"
