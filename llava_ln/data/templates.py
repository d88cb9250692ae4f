"""Conversation templates: how a list of messages becomes one string, and which characters are replies.

A template is an immutable object handed to the dataset (and to generation code); nothing
here is a mutable module global. `render` returns the full text plus the character span of
every assistant reply *including its end-of-turn token*; the labels are then derived from the
tokenizer's own offsets for those spans (see encode.py), never from re-tokenized pieces.

`get_template(name, tokenizer)` binds a template to a tokenizer: end-of-turn tokens that
depend on the tokenizer (`</s>` is really its eos token) are filled in, and a tokenizer that
lacks a token the template needs is a clear error rather than a silently split string.
"""
from dataclasses import dataclass

from llava_ln.core.errors import LlavaLnError
from llava_ln.model.tokens import IMAGE_TOKEN

TEMPLATE_NAMES = ("plain", "vicuna_v1", "llama_2", "mistral", "chatml", "llama_3", "auto")

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
ASSISTANT_SYSTEM = "You are a helpful assistant. You can see the images the user shares and answer questions about them."


@dataclass(frozen=True)
class Rendered:
    text: str
    reply_spans: tuple  # ((start, end), ...) character spans: each reply (with the space before it) + end of turn


@dataclass(frozen=True)
class FormatTemplate:
    """A chat format given by the literal text around each message.

    One exchange renders as  user_prefix + user + user_suffix + reply_prefix + [reply + reply_end] + after_reply
    where the bracketed part is supervised. The first exchange uses first_user_prefix, in which
    "{system}" is replaced by system_format (itself holding "{system}") or by "" when there is
    no system prompt. reply_prefix is the space before a reply: supervised, as in LLaVA, because
    sentencepiece merges it into the reply's first token ("▁It") while byte-level BPE may keep it
    apart; either way the model learns to produce it, and a generation prompt ends before it.
    """

    name: str
    end_of_turn: str
    system: str = ""
    system_format: str = "{system}"
    first_user_prefix: str = "{system}"
    user_prefix: str = ""
    user_suffix: str = ""
    reply_prefix: str = ""
    reply_end: str = ""
    after_reply: str = ""

    def _user_turn(self, number: int, text: str) -> str:
        if number > 0:
            return self.user_prefix + text + self.user_suffix
        system = self.system_format.replace("{system}", self.system) if self.system else ""
        return self.first_user_prefix.replace("{system}", system) + text + self.user_suffix

    def render(self, messages) -> Rendered:
        """messages: alternating ("user", text), ("assistant", text), ..., ending with a reply."""
        pieces, spans, length = [], [], 0
        for number, (user, reply) in enumerate(exchanges(messages)):
            pieces.append(self._user_turn(number, user))
            length += len(pieces[-1])
            pieces.append(self.reply_prefix + reply + self.reply_end)
            spans.append((length, length + len(pieces[-1])))
            length += len(pieces[-1])
            pieces.append(self.after_reply)
            length += len(self.after_reply)
        return Rendered("".join(pieces), tuple(spans))

    def render_prompt(self, messages) -> str:
        """Text to generate the next reply from; messages end with a user turn."""
        history, last_user = split_prompt(messages)
        done = self.render(history).text if history else ""
        return done + self._user_turn(len(history) // 2, last_user)


@dataclass(frozen=True)
class PlainTemplate:
    """Stage 1 (LLaVA's "plain"): the image tags alone, then the caption and a newline.

    The human text ("Describe the image.") is dropped on purpose: stage 1 only aligns image
    features with caption text.
    """

    name: str = "plain"
    end_of_turn: str = "\n"

    def render(self, messages) -> Rendered:
        text, spans = "", []
        for user, reply in exchanges(messages):
            text += IMAGE_TOKEN * user.count(IMAGE_TOKEN)
            spans.append((len(text), len(text) + len(reply) + len(self.end_of_turn)))
            text += reply + self.end_of_turn
        return Rendered(text, tuple(spans))

    def render_prompt(self, messages) -> str:
        history, last_user = split_prompt(messages)
        done = self.render(history).text if history else ""
        return done + IMAGE_TOKEN * last_user.count(IMAGE_TOKEN)


def exchanges(messages):
    roles = [role for role, _ in messages]
    if len(messages) % 2 or roles != ["user", "assistant"] * (len(messages) // 2):
        raise LlavaLnError(f"a conversation must alternate user and assistant messages, got roles {roles}")
    return [(messages[k][1], messages[k + 1][1]) for k in range(0, len(messages), 2)]


def split_prompt(messages):
    if not messages or messages[-1][0] != "user":
        raise LlavaLnError("a generation prompt must end with a user message")
    return list(messages[:-1]), messages[-1][1]


def _single_token(tokenizer, token: str, template: str) -> str:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise LlavaLnError(
            f"--conv_template {template} needs {token!r} as one token, but this tokenizer splits it into {len(ids)}; "
            "use a tokenizer trained for this format or another --conv_template"
        )
    return token


def _eos(tokenizer, template: str) -> str:
    if not tokenizer.eos_token:
        raise LlavaLnError(f"--conv_template {template} ends replies with the eos token, but the tokenizer has none")
    return _single_token(tokenizer, tokenizer.eos_token, template)


def _format_template(name: str, tokenizer) -> FormatTemplate:
    if name == "vicuna_v1":
        eos = _eos(tokenizer, name)
        return FormatTemplate(name, eos, system=VICUNA_SYSTEM, system_format="{system} ",
                              first_user_prefix="{system}USER: ", user_prefix="USER: ", user_suffix=" ASSISTANT:",
                              reply_prefix=" ", reply_end=eos)
    if name == "llama_2":
        eos = _eos(tokenizer, name)
        bos = tokenizer.bos_token or ""  # Meta's format restarts every exchange with bos
        return FormatTemplate(name, eos, system=ASSISTANT_SYSTEM, system_format="<<SYS>>\n{system}\n<</SYS>>\n\n",
                              first_user_prefix="[INST] {system}", user_prefix=f"{bos}[INST] ",
                              user_suffix=" [/INST]", reply_prefix=" ", reply_end=f" {eos}")
    if name == "mistral":
        eos = _eos(tokenizer, name)
        return FormatTemplate(name, eos, first_user_prefix="[INST] ", user_prefix="[INST] ",
                              user_suffix=" [/INST]", reply_prefix=" ", reply_end=eos)
    if name == "chatml":
        start, end = (_single_token(tokenizer, t, name) for t in ("<|im_start|>", "<|im_end|>"))
        return FormatTemplate(name, end, system=ASSISTANT_SYSTEM, system_format=f"{start}system\n{{system}}{end}\n",
                              first_user_prefix=f"{{system}}{start}user\n", user_prefix=f"{start}user\n",
                              user_suffix=f"{end}\n{start}assistant\n", reply_end=end, after_reply="\n")
    if name == "llama_3":
        start, stop, eot = (_single_token(tokenizer, t, name)
                            for t in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
        header = f"{start}{{role}}{stop}\n\n"
        return FormatTemplate(name, eot, system=ASSISTANT_SYSTEM,
                              system_format=header.replace("{role}", "system") + "{system}" + eot,
                              first_user_prefix="{system}" + header.replace("{role}", "user"),
                              user_prefix=header.replace("{role}", "user"),
                              user_suffix=eot + header.replace("{role}", "assistant"), reply_end=eot)
    raise AssertionError(name)


def get_template(name: str, tokenizer):
    """The template called `name`, bound to `tokenizer` (checked to hold the tokens it needs)."""
    if name not in TEMPLATE_NAMES:
        raise LlavaLnError(f"--conv_template {name!r} is not one of {', '.join(TEMPLATE_NAMES)}")
    if name == "plain":
        return PlainTemplate()
    if name == "auto":
        from llava_ln.data.template_auto import AutoTemplate

        return AutoTemplate.for_tokenizer(tokenizer)
    return _format_template(name, tokenizer)
