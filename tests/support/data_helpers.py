"""Helpers for the data tests: test tokenizers (sentencepiece and byte-level BPE), images, record files."""
import io
import json
import os

from PIL import Image, ImageDraw

from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.data.args import DataArguments
from llava_ln.data.dataset import build_train_dataset
from llava_ln.data.images import load_image_processor
from llava_ln.data.templates import get_template
from llava_ln.model.backbones import load_tokenizer, load_vision_config, num_image_tokens, select_strategy

# Tokens the chatml and llama_3 templates need; real Qwen / LLaMA-3 tokenizers ship them.
CHAT_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

# Jinja chat templates for --conv_template auto: ChatML for the BPE tokenizer, a LLaMA-2-like one
# (bos rendered by the template itself, " </s>" after replies) for the sentencepiece tokenizer.
CHATML_JINJA = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA2_JINJA = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
                "{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}"
                "{% endif %}{% endfor %}")

SP_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "USER: What is in the picture? ASSISTANT: A red circle and a blue square.",
    "[INST] <<SYS>> You are a helpful assistant. <</SYS>> Is it big? [/INST] No, it is small.",
    "there are two green triangles and one yellow circle left of the square",
    "describe the scene in detail please; the answer is yes, about 3 cm.",
] * 30


def make_sentencepiece_dir(root: str) -> str:
    """Train a tiny LLaMA-style sentencepiece model and save it as a sentencepiece-only tokenizer folder.

    Settings follow LLaMA's tokenizer.model: ids 0/1/2 = <unk>/<s>/</s>, byte fallback, no
    normalisation, whitespace kept, a dummy prefix space. The folder holds only tokenizer.model
    and tokenizer_config.json, as Vicuna and LLaMA-2 checkpoints ship them.
    """
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SP_CORPUS), model_writer=model, vocab_size=420, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True, character_coverage=1.0,
        minloglevel=2,
    )
    path = os.path.join(root, "sentencepiece_tokenizer")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "tokenizer.model"), "wb") as handle:
        handle.write(model.getvalue())
    with open(os.path.join(path, "tokenizer_config.json"), "w") as handle:
        json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                   "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, handle)
    return path


def load_test_tokenizer(path: str, chat_template: str):
    """A prepared tokenizer (with <image>) plus the chat special tokens and a chat template."""
    tokenizer = load_tokenizer(path)
    tokenizer.add_special_tokens({"additional_special_tokens": CHAT_SPECIALS})
    tokenizer.chat_template = chat_template
    return tokenizer


def vision_facts(vision_path: str):
    """(image processor, num_image_tokens) of a tiny vision tower folder."""
    config, family = load_vision_config(vision_path)
    return load_image_processor(vision_path), num_image_tokens(config, select_strategy(family, "patch"))


def save_image(path: str, size=(40, 24), colour=(200, 30, 30)) -> str:
    image = Image.new("RGB", size, (250, 250, 250))
    ImageDraw.Draw(image).ellipse((4, 4, size[0] - 4, size[1] - 4), fill=colour)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)
    return path


def turn(speaker: str, value) -> dict:
    return {"from": speaker, "value": value}


def record(record_id: str, *values, image=None) -> dict:
    """A record with alternating human/gpt turns from `values`."""
    conversations = [turn("human" if k % 2 == 0 else "gpt", v) for k, v in enumerate(values)]
    result = {"id": record_id, "conversations": conversations}
    if image is not None:
        result["image"] = image
    return result


def image_record(record_id: str, image: str, question: str = "What is in the picture?", answer: str = "A circle."):
    return record(record_id, f"{IMAGE_TOKEN}\n{question}", answer, image=image)


def write_json(path: str, records: list, jsonl: bool = False) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        if jsonl:
            handle.write("".join(json.dumps(r) + "\n" for r in records))
        else:
            json.dump(records, handle)
    return path


def make_dataset(data_path: str, tokenizer, vision_path: str, template: str = "vicuna_v1", seed: int = 0,
                 **data_flags):
    processor, n_tokens = vision_facts(vision_path)
    args = DataArguments(data_path=data_path, conv_template=template, **data_flags)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    return build_train_dataset(args, tokenizer, processor, get_template(template, tokenizer), image_token_id,
                               n_tokens, seed)
