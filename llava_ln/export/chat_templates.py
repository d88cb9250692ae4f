"""Jinja chat templates equivalent to llava-ln's conversation templates (for exported processors).

A run's conversation template (llava_ln.data.templates) decides the exact text the model was
trained on. Exported folders carry the same format as a Jinja `chat_template`, so that
`processor.apply_chat_template(...)` in plain transformers (and vLLM, lmms-eval) produces the
very string llava-ln would have rendered. The Jinja source is generated from the bound
template's literal pieces, so it cannot drift from the Python rendering; tests check the
two renderings against each other on sample conversations.

Message content may be a string (with `<image>` written in it, as in LLaVA data) or a list
of parts in the transformers multimodal format ({"type": "image"} / {"type": "text", ...}),
which renders as the parts joined by newlines: [image, text] -> "<image>\\n" + text, the
LLaVA convention. A leading {"role": "system"} message replaces the default system prompt.
The assistant header is part of each user turn in these formats, so the rendering is the
same with or without add_generation_prompt.
"""
import json

from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError


def _literal(text: str) -> str:
    # A JSON string is a valid Jinja string literal (Jinja decodes the same escapes).
    return json.dumps(text)


def _content_macro() -> str:
    image = _literal(IMAGE_TOKEN)
    return (
        "{%- macro render_content(content) -%}"
        "{%- if content is string -%}{{ content }}"
        "{%- else -%}{%- for part in content -%}"
        "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}"
        "{%- if part['type'] == 'image' -%}{{ " + image + " }}"
        "{%- elif 'text' in part -%}{{ part['text'] }}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}\n"
    )


def _format_template_jinja(template) -> str:
    """Jinja for a FormatTemplate: the same pieces around each message as its render()."""
    before_system, _, after_system = template.first_user_prefix.partition("{system}")
    system_before, _, system_after = template.system_format.partition("{system}")
    lit = _literal
    return (
        _content_macro()
        + "{%- set ns = namespace(system=" + lit(template.system) + ", first=true) -%}\n"
        "{%- for message in messages -%}\n"
        "{%- if message['role'] == 'system' -%}\n"
        "{%- set ns.system = render_content(message['content']) -%}\n"
        "{%- elif message['role'] == 'user' -%}\n"
        "{%- if ns.first -%}\n"
        "{{ " + lit(before_system) + " }}"
        "{%- if ns.system -%}{{ " + lit(system_before) + " }}{{ ns.system }}{{ " + lit(system_after) + " }}{%- endif -%}"
        "{{ " + lit(after_system) + " }}\n"
        "{%- set ns.first = false -%}\n"
        "{%- else -%}{{ " + lit(template.user_prefix) + " }}{%- endif -%}\n"
        "{{ render_content(message['content']) }}{{ " + lit(template.user_suffix) + " }}\n"
        "{%- elif message['role'] == 'assistant' -%}\n"
        "{{ " + lit(template.reply_prefix) + " }}{{ render_content(message['content']) }}"
        "{{ " + lit(template.reply_end) + " }}{{ " + lit(template.after_reply) + " }}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
    )


def _plain_template_jinja(template) -> str:
    """Jinja for the stage-1 plain template: image tags alone, then the caption and end_of_turn."""
    image = _literal(IMAGE_TOKEN)
    return (
        _content_macro()
        + "{%- for message in messages -%}\n"
        "{%- if message['role'] == 'user' -%}\n"
        "{%- set text = render_content(message['content']) -%}\n"
        "{{ " + image + " * (text.count(" + image + ")) }}\n"
        "{%- elif message['role'] == 'assistant' -%}\n"
        "{{ render_content(message['content']) }}{{ " + _literal(template.end_of_turn) + " }}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
    )


def chat_template_for(template) -> str:
    """The Jinja chat template equivalent to a bound llava-ln template (see data.templates.get_template)."""
    name = getattr(template, "name", "?")
    if name == "auto":
        # The run used the tokenizer's own chat template: it is already Jinja.
        return template.tokenizer.chat_template
    if name == "plain":
        return _plain_template_jinja(template)
    if hasattr(template, "first_user_prefix"):
        return _format_template_jinja(template)
    raise LlavaLnError(f"conversation template {name!r} has no Jinja equivalent in llava-ln's exporter")


def render_with_jinja(chat_template: str, messages: list, add_generation_prompt: bool = True) -> str:
    """Render messages ([{"role", "content"}]) with transformers' own Jinja machinery."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages], chat_template=chat_template, add_generation_prompt=add_generation_prompt
    )
    return rendered[0]
