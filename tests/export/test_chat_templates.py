"""Exported Jinja chat templates render exactly what llava-ln's conversation templates render."""
import pytest
from data_helpers import CHATML_JINJA, LLAMA2_JINJA, load_test_tokenizer

from llava_ln.data.templates import TEMPLATE_NAMES, get_template
from llava_ln.export.chat_templates import chat_template_for, render_with_jinja
from llava_ln.export.probes import Probe, hf_messages

NAMES = [n for n in TEMPLATE_NAMES if n != "auto"]
CONVERSATIONS = [
    (("user", "<image>\nWhat is in the picture?"), ("assistant", "A red circle.")),
    (("user", "<image>\nWhat is in the picture?"), ("assistant", "A red circle."),
     ("user", "Is it big?"), ("assistant", "No, it is small.\nAbout 3 cm,  café-sized.")),
    (("user", "Say \"hi\" {{ not jinja }} {% raw %}"), ("assistant", "hi")),
]
PROMPTS = [
    (("user", "<image>\nWhat is in the picture?"),),
    (("user", "<image>\nWhat is in the picture?"), ("assistant", "A red circle."), ("user", "Is it big?")),
    (("user", "No image here."),),
]


@pytest.fixture(scope="module")
def tokenizers(sp_tokenizer_dir, bpe_tokenizer_dir):
    return {"sp": load_test_tokenizer(sp_tokenizer_dir, LLAMA2_JINJA),
            "bpe": load_test_tokenizer(bpe_tokenizer_dir, CHATML_JINJA)}


def as_chat(messages):
    return [{"role": role, "content": text} for role, text in messages]


@pytest.mark.parametrize("kind", ["sp", "bpe"])
@pytest.mark.parametrize("name", NAMES)
def test_jinja_renders_conversations_like_the_template(tokenizers, kind, name):
    template = get_template(name, tokenizers[kind])
    jinja = chat_template_for(template)
    for messages in CONVERSATIONS:
        assert render_with_jinja(jinja, as_chat(messages), add_generation_prompt=False) == template.render(messages).text
    for messages in PROMPTS:
        assert render_with_jinja(jinja, as_chat(messages), add_generation_prompt=True) == template.render_prompt(messages)


@pytest.mark.parametrize("name", NAMES)
def test_content_parts_render_like_image_tags_in_text(tokenizers, name):
    """transformers' multimodal message format ({"type": "image"} parts) gives LLaVA's "<image>\\n" + text."""
    template = get_template(name, tokenizers["bpe"])
    jinja = chat_template_for(template)
    for messages in PROMPTS:
        probe = Probe("p", messages, ())
        parts = hf_messages(probe, as_parts=True)
        assert any(isinstance(m["content"], list) for m in parts)
        assert render_with_jinja(jinja, parts) == template.render_prompt(messages)


def test_system_message_replaces_the_default_system_prompt(tokenizers):
    template = get_template("vicuna_v1", tokenizers["bpe"])
    rendered = render_with_jinja(chat_template_for(template),
                                 [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert rendered == "Be brief. USER: Hi ASSISTANT:"


def test_auto_template_exports_the_tokenizers_own_template(tokenizers):
    template = get_template("auto", tokenizers["bpe"])
    jinja = chat_template_for(template)
    assert jinja == CHATML_JINJA
    messages = PROMPTS[1]
    assert render_with_jinja(jinja, as_chat(messages)) == template.render_prompt(messages)
