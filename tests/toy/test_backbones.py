"""The committed toy backbones: plain-transformers loading, a round-tripping sentencepiece
tokenizer, a language model that really learned the toy text, and a CLIP tower whose image
processor feeds it exactly what its pretraining fed it."""
import os

import numpy as np
import pytest
import torch

from llava_ln.core.errors import LlavaLnError
from llava_ln.toy.backbones.spec import LLM_ASSET, LLM_FILES, VISION_ASSET, VISION_FILES, install_backbones
from llava_ln.toy.train_data import text_corpus
from llava_ln.toy.world import render_scene, sample_scene


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(LLM_ASSET)


def test_llm_folder_is_a_vicuna_style_sentencepiece_checkpoint(tokenizer):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    assert sorted(os.listdir(LLM_ASSET)) == sorted(LLM_FILES)  # tokenizer.model only, no tokenizer.json
    model = AutoModelForCausalLM.from_pretrained(LLM_ASSET)
    assert isinstance(model, LlamaForCausalLM)
    assert type(tokenizer).__name__ == "LlamaTokenizer"
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (1, 2, 0)
    assert len(tokenizer) == model.config.vocab_size
    assert tokenizer("Is there a red circle?").input_ids[0] == tokenizer.bos_token_id


@pytest.mark.parametrize("text", [
    "Is there a red circle in the image?\nAnswer the question using a single word or phrase.",
    "USER: How many shapes are there? ASSISTANT: 3",
    "Words the toy world never uses: naïve café, 😀, tabs\tand  double  spaces.",
])
def test_tokenizer_round_trips_text(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.unk_token_id not in ids  # byte fallback covers everything
    assert tokenizer.decode(ids) == text


def test_toy_words_are_single_tokens(tokenizer):
    for word in ("circle", "triangle", "purple", "ASSISTANT"):
        assert len(tokenizer(" " + word, add_special_tokens=False).input_ids) == 1, word


def _mean_loss(model, tokenizer, documents) -> float:
    losses = []
    with torch.no_grad():
        for document in documents:
            ids = tokenizer(document, return_tensors="pt").input_ids
            losses.append(model(input_ids=ids, labels=ids).loss.item())
    return float(np.mean(losses))


def test_llm_was_pretrained_on_toy_text(tokenizer):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    held_out = text_corpus(seed=987654, count=12)  # the pretraining corpus used other seeds
    pretrained = AutoModelForCausalLM.from_pretrained(LLM_ASSET).eval()
    torch.manual_seed(0)
    untrained = LlamaForCausalLM(pretrained.config).eval()
    trained_loss, untrained_loss = _mean_loss(pretrained, tokenizer, held_out), _mean_loss(untrained, tokenizer, held_out)
    assert untrained_loss > 5.0
    assert trained_loss < 1.0


def test_vision_tower_and_processor_load_and_match_the_pretraining_input():
    from transformers import AutoImageProcessor, CLIPVisionModel

    from llava_ln.toy.backbones.pretrain_vision import pixels

    assert sorted(os.listdir(VISION_ASSET)) == sorted(VISION_FILES)
    model = CLIPVisionModel.from_pretrained(VISION_ASSET).eval()
    processor = AutoImageProcessor.from_pretrained(VISION_ASSET)
    images = [render_scene(sample_scene(np.random.default_rng(i))) for i in range(3)]
    processed = processor(images=images, return_tensors="pt")["pixel_values"]
    assert processed.shape == (3, 3, 64, 64)
    torch.testing.assert_close(processed, pixels(images), atol=1e-5, rtol=0)
    with torch.no_grad():
        hidden = model(pixel_values=processed, output_hidden_states=True).hidden_states
    assert hidden[-2].shape == (3, 17, model.config.hidden_size)  # CLS + 16 patches


def test_toy_backbones_compose_into_llava_with_16_image_tokens(tokenizer):
    from llava_ln.model.args import ModelArguments
    from llava_ln.model.backbones import load_tokenizer
    from llava_ln.model.builder import build_mllm

    prepared = load_tokenizer(LLM_ASSET)
    model, spec = build_mllm(ModelArguments(model_name_or_path=LLM_ASSET, vision_tower=VISION_ASSET), prepared)
    assert spec.num_image_tokens == 16
    assert spec.image_token_id == len(tokenizer)  # <image> is the one new row


def test_install_copies_the_committed_files_and_names_missing_ones(tmp_path):
    llm_dir, vision_dir = install_backbones(str(tmp_path / "world"))
    for folder, source, names in ((llm_dir, LLM_ASSET, LLM_FILES), (vision_dir, VISION_ASSET, VISION_FILES)):
        for name in names:
            with open(os.path.join(folder, name), "rb") as copy, open(os.path.join(source, name), "rb") as original:
                assert copy.read() == original.read()
    broken = tmp_path / "assets"
    (broken / "llm").mkdir(parents=True)
    (broken / "vision").mkdir()
    (broken / "llm" / "config.json").write_text("{}")
    with pytest.raises(LlavaLnError, match="model.safetensors"):
        install_backbones(str(tmp_path / "other"), assets_dir=str(broken))
