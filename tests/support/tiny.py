"""Tiny randomly initialised backbones and tokenizers, built in-process (nothing downloaded).

Every LLM family the core must support has a config here that keeps its structural quirks
(Qwen2: tied embeddings and q/k/v biases; Phi: LayerNorm with bias; GPT-NeoX: fused qkv).
"""
import os

import torch
from transformers import (
    AutoModelForCausalLM,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PhiConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)

VOCAB = 300
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, max_position_embeddings=512)

LLM_CONFIGS = {
    "llama": lambda: LlamaConfig(**_COMMON, num_key_value_heads=2),
    "mistral": lambda: MistralConfig(**_COMMON, num_key_value_heads=2, sliding_window=None),
    "qwen2": lambda: Qwen2Config(**_COMMON, num_key_value_heads=2, tie_word_embeddings=True),
    "phi": lambda: PhiConfig(**_COMMON, partial_rotary_factor=0.5),
    "gpt_neox": lambda: GPTNeoXConfig(**_COMMON),
}

VISION = {
    "clip": (CLIPVisionConfig, CLIPVisionModel, CLIPImageProcessor),
    "siglip": (SiglipVisionConfig, SiglipVisionModel, SiglipImageProcessor),
}

CORPUS = [
    "a red circle is left of a blue square", "how many shapes are in the image ?",
    "there are two green triangles and one yellow circle", "USER: ASSISTANT: </s> <s>",
    "describe the scene in detail please", "the answer is yes", "no there is not",
] * 20


def make_bpe_tokenizer(vocab_size: int = 260) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences, with LLaMA-like special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def make_llm_dir(root: str, family: str, seed: int = 0) -> str:
    """Save a tiny random causal LM of `family` plus a tokenizer into root/<family>."""
    path = os.path.join(root, family)
    torch.manual_seed(seed)
    config = LLM_CONFIGS[family]()
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    make_bpe_tokenizer().save_pretrained(path)
    return path


def make_vision_dir(root: str, family: str = "clip", image_size: int = 28, patch_size: int = 14,
                    seed: int = 0) -> str:
    """Save a tiny random vision tower (and its image processor) into root/<family>_vision."""
    config_cls, model_cls, processor_cls = VISION[family]
    path = os.path.join(root, f"{family}_vision")
    torch.manual_seed(seed)
    config = config_cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        image_size=image_size, patch_size=patch_size)
    model_cls(config).save_pretrained(path)
    size = {"height": image_size, "width": image_size}
    if family == "clip":
        processor = processor_cls(size={"shortest_edge": image_size}, crop_size=size)
    else:
        processor = processor_cls(size=size)
    processor.save_pretrained(path)
    return path
