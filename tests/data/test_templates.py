"""Conversation templates: golden strings for each, and exact labels with sentencepiece and BPE tokenizers."""
import os

import pytest
from data_helpers import CHATML_JINJA, LLAMA2_JINJA, load_test_tokenizer, make_dataset, save_image, write_json

from llava_ln.core.constants import IGNORE_INDEX, IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.encode import encode, special_prefix_ids
from llava_ln.data.templates import TEMPLATE_NAMES, Rendered, get_template

REPLY_1 = "A red circle."
REPLY_2 = "No, it is small.\nAbout 3 cm,  café-sized."
MESSAGES = (("user", "<image>\nWhat is in the picture?"), ("assistant", REPLY_1),
            ("user", "Is it big?"), ("assistant", REPLY_2))
VICUNA_SYS = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
              "helpful, detailed, and polite answers to the user's questions.")
ASSISTANT_SYS = "You are a helpful assistant. You can see the images the user shares and answer questions about them."

GOLDEN = {
    "plain": f"<image>{REPLY_1}\n{REPLY_2}\n",
    "vicuna_v1": (f"{VICUNA_SYS} USER: <image>\nWhat is in the picture? ASSISTANT: {REPLY_1}</s>"
                  f"USER: Is it big? ASSISTANT: {REPLY_2}</s>"),
    "llama_2": (f"[INST] <<SYS>>\n{ASSISTANT_SYS}\n<</SYS>>\n\n<image>\nWhat is in the picture? [/INST] {REPLY_1} </s>"
                f"<s>[INST] Is it big? [/INST] {REPLY_2} </s>"),
    "mistral": f"[INST] <image>\nWhat is in the picture? [/INST] {REPLY_1}</s>[INST] Is it big? [/INST] {REPLY_2}</s>",
    "chatml": (f"<|im_start|>system\n{ASSISTANT_SYS}<|im_end|>\n<|im_start|>user\n<image>\nWhat is in the picture?"
               f"<|im_end|>\n<|im_start|>assistant\n{REPLY_1}<|im_end|>\n<|im_start|>user\nIs it big?<|im_end|>\n"
               f"<|im_start|>assistant\n{REPLY_2}<|im_end|>\n"),
    "llama_3": (f"<|start_header_id|>system<|end_header_id|>\n\n{ASSISTANT_SYS}<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is in the picture?<|eot_id|>"
                f"<|start_header_id|>assistant<|end_header_id|>\n\n{REPLY_1}<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nIs it big?<|eot_id|>"
                f"<|start_header_id|>assistant<|end_header_id|>\n\n{REPLY_2}<|eot_id|>"),
}
GOLDEN_AUTO = {
    "bpe": (f"<|im_start|>user\n<image>\nWhat is in the picture?<|im_end|>\n<|im_start|>assistant\n{REPLY_1}"
            f"<|im_end|>\n<|im_start|>user\nIs it big?<|im_end|>\n<|im_start|>assistant\n{REPLY_2}<|im_end|>\n"),
    "sp": f"<s>[INST] <image>\nWhat is in the picture? [/INST] {REPLY_1} </s>[INST] Is it big? [/INST] {REPLY_2} </s>",
}
# What each supervised span must decode to after the reply: its end-of-turn token (with the
# template's own spacing: LLaMA-2's " </s>"); plain ends captions with a newline as LLaVA does.
REPLY_END = {"plain": "\n", "vicuna_v1": "</s>", "llama_2": " </s>", "mistral": "</s>", "chatml": "<|im_end|>",
             "llama_3": "<|eot_id|>"}
REPLY_END_AUTO = {"bpe": "<|im_end|>", "sp": " </s>"}
# The space before a reply is supervised with it (sentencepiece merges it into the first reply token).
REPLY_SPACE = {"vicuna_v1": " ", "llama_2": " ", "mistral": " "}
REPLY_SPACE_AUTO = {"bpe": "", "sp": " "}
KINDS = ("sp", "bpe")


@pytest.fixture(scope="module")
def tokenizers(sp_tokenizer_dir, bpe_tokenizer_dir):
    return {"sp": load_test_tokenizer(sp_tokenizer_dir, LLAMA2_JINJA),
            "bpe": load_test_tokenizer(bpe_tokenizer_dir, CHATML_JINJA)}


@pytest.mark.parametrize("name", [n for n in TEMPLATE_NAMES if n != "auto"])
def test_golden_strings(tokenizers, name):
    rendered = get_template(name, tokenizers["bpe"]).render(MESSAGES)
    assert rendered.text == GOLDEN[name]
    replies = [rendered.text[start:end] for start, end in rendered.reply_spans]
    space = REPLY_SPACE.get(name, "")
    assert replies == [space + REPLY_1 + REPLY_END[name], space + REPLY_2 + REPLY_END[name]]


@pytest.mark.parametrize("kind", KINDS)
def test_golden_strings_auto(tokenizers, kind):
    rendered = get_template("auto", tokenizers[kind]).render(MESSAGES)
    assert rendered.text == GOLDEN_AUTO[kind]
    space, end = REPLY_SPACE_AUTO[kind], REPLY_END_AUTO[kind]
    assert [rendered.text[s:e] for s, e in rendered.reply_spans] == [space + REPLY_1 + end, space + REPLY_2 + end]


def test_generation_prompts(tokenizers):
    history = MESSAGES[:3]
    assert get_template("vicuna_v1", tokenizers["bpe"]).render_prompt(history) == GOLDEN["vicuna_v1"].split(
        " " + REPLY_2)[0]
    assert get_template("chatml", tokenizers["bpe"]).render_prompt(MESSAGES[:1]) == (
        f"<|im_start|>system\n{ASSISTANT_SYS}<|im_end|>\n<|im_start|>user\n<image>\nWhat is in the picture?"
        "<|im_end|>\n<|im_start|>assistant\n")
    assert get_template("plain", tokenizers["bpe"]).render_prompt(MESSAGES[:1]) == "<image>"


def _runs(labels):
    """Contiguous runs of supervised positions."""
    runs, start = [], None
    for position, label in enumerate(list(labels) + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = position
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, position))
            start = None
    return runs


@pytest.fixture(scope="module")
def conversation_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("template_data")
    save_image(os.path.join(root, "img.png"))
    record = {"id": "conv-1", "image": "img.png",
              "conversations": [{"from": "human" if role == "user" else "gpt", "value": text}
                                for role, text in MESSAGES]}
    return write_json(os.path.join(root, "data.json"), [record])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_labels_are_exactly_the_replies(tokenizers, tiny_vision, conversation_file, kind, name):
    tokenizer = tokenizers[kind]
    dataset = make_dataset(conversation_file, tokenizer, tiny_vision("clip"), template=name)
    sample = dataset.process(0)
    ids, labels = sample.encoded.input_ids, sample.encoded.labels
    image_id, n_image = dataset.image_token_id, dataset.num_image_tokens
    expected_text = (GOLDEN_AUTO[kind] if name == "auto" else GOLDEN[name]).replace(IMAGE_TOKEN, IMAGE_TOKEN * n_image)

    # Decoding input_ids gives the rendered conversation (after the bos the tokenizer itself adds).
    body = ids
    if not expected_text.startswith(tokenizer.bos_token or "\0") and special_prefix_ids(tokenizer):
        assert ids[0] == tokenizer.bos_token_id
        body = ids[1:]
    assert tokenizer.decode(body) == expected_text

    # One supervised span per reply, decoding to the reply and its end-of-turn token; nothing else.
    end = REPLY_END_AUTO[kind] if name == "auto" else REPLY_END[name]
    runs = _runs(labels)
    replies = (REPLY_1, REPLY_2)
    if name == "plain":  # no user text between plain exchanges, so the two spans touch
        replies = (REPLY_1 + end + REPLY_2,)
    assert len(runs) == len(replies)
    for (start, stop), reply in zip(runs, replies):
        assert labels[start:stop] == ids[start:stop]
        assert tokenizer.decode(ids[start:stop]).lstrip(" ") == reply + end
        assert labels[start - 1] == IGNORE_INDEX and ids[start - 1] != tokenizer.eos_token_id
    assert ids.count(image_id) == n_image
    assert all(label == IGNORE_INDEX for token, label in zip(ids, labels) if token == image_id)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_generation_prompt_is_the_training_context(tokenizers, kind, name):
    """Tokenizing render_prompt(history) gives exactly the tokens training saw before the next reply."""
    tokenizer = tokenizers[kind]
    template = get_template(name, tokenizer)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    prefix = special_prefix_ids(tokenizer)
    trained = encode(template.render(MESSAGES), tokenizer, image_id, 3, prefix)
    prompt = encode(Rendered(template.render_prompt(MESSAGES[:3]), ()), tokenizer, image_id, 3, prefix)
    next_reply_start = _runs(trained.labels)[-1][0] if name != "plain" else len(prompt.input_ids)
    assert prompt.input_ids == trained.input_ids[:next_reply_start]


@pytest.mark.parametrize("name", ["chatml", "llama_3"])
def test_template_needs_its_special_tokens(bpe_tokenizer_dir, name):
    from llava_ln.model.backbones import load_tokenizer

    with pytest.raises(LlavaLnError, match=f"--conv_template {name} needs"):
        get_template(name, load_tokenizer(bpe_tokenizer_dir))


def test_unknown_template_and_missing_chat_template(bpe_tokenizer_dir):
    from llava_ln.model.backbones import load_tokenizer

    tokenizer = load_tokenizer(bpe_tokenizer_dir)
    with pytest.raises(LlavaLnError, match="not one of plain, vicuna_v1"):
        get_template("vicuna", tokenizer)
    with pytest.raises(LlavaLnError, match="no chat template"):
        get_template("auto", tokenizer)


def test_templates_are_immutable(tokenizers):
    template = get_template("vicuna_v1", tokenizers["bpe"])
    with pytest.raises(AttributeError):
        template.system = "changed"
