"""Conversation templates: how a list of messages becomes one string, and which characters are replies.

A template is an immutable object handed to the dataset (and to generation code); nothing here is
a mutable module global. `render` returns the full text plus the character span of every
assistant reply *including its end-of-turn token*; the labels are then derived from the
tokenizer's own offsets for those spans (see encode.py), never from re-tokenized pieces.

`get_template(name, tokenizer)` binds a template to a tokenizer: end-of-turn tokens that depend on
the tokenizer (`</s>` is really its eos token) are filled in, and a tokenizer that lacks a token
the template needs is a clear error rather than a silently split string. `stop_token_ids` says
where generation ends for a template (evaluation, merged folders and export verification agree).

`--conv_template auto` is the tokenizer's own chat template. It is a Jinja program, so reply
positions cannot be read off format strings: the conversation is rendered up to each reply (with
the generation prompt) and up to the end of that reply; the reply starts inside the difference,
and its span runs to the first special token after it (the end-of-turn token, e.g. <|im_end|>,
<|eot_id|>, </s>). This needs a prefix-stable template (rendering fewer messages gives a prefix of
the full text), which is true of the common chat templates; other templates get a clear error.
The chat template is a program from a file: every rendering is bounded (template_guard), and a
template is tried once on a short conversation when it is bound, so one that cannot run stops the
command before anything loads.
"""
from dataclasses import dataclass

from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.template_guard import bounded_render

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
        return AutoTemplate.for_tokenizer(tokenizer)
    return _format_template(name, tokenizer)


def _special_token_strings(tokenizer) -> tuple:
    specials = {tokenizer.eos_token} if tokenizer.eos_token else set()
    specials |= {str(t) for t in tokenizer.added_tokens_decoder.values() if t.special}
    specials.discard(IMAGE_TOKEN)
    return tuple(sorted(specials, key=len, reverse=True))


@dataclass(frozen=True)
class AutoTemplate:
    tokenizer: object
    end_of_turn_candidates: tuple
    name: str = "auto"

    @classmethod
    def for_tokenizer(cls, tokenizer) -> "AutoTemplate":
        if not getattr(tokenizer, "chat_template", None):
            raise LlavaLnError("--conv_template auto: this tokenizer has no chat template; pick an explicit template")
        template = cls(tokenizer, _special_token_strings(tokenizer))
        template.render_prompt([("user", "Hello.")])  # a template that cannot run at all stops us here
        return template

    def _apply(self, messages, generation_prompt: bool = False) -> str:
        chat = [{"role": role, "content": text} for role, text in messages]
        return bounded_render(lambda: self.tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=generation_prompt), messages)

    def _end_of_turn(self, text: str, start: int, stop: int) -> int:
        """End of the first special token in text[start:stop], which may follow only whitespace."""
        found = [(text.find(tok, start, stop), tok) for tok in self.end_of_turn_candidates]
        found = [(pos, tok) for pos, tok in found if pos >= 0 and not text[start:pos].strip()]
        if not found:
            raise LlavaLnError(
                "--conv_template auto: the tokenizer's chat template puts no special end-of-turn token right "
                f"after an assistant reply (text after it: {text[start:stop]!r}); pick an explicit template"
            )
        pos, token = min(found)
        return pos + len(token)

    def render(self, messages) -> Rendered:
        exchanges(messages)  # same role checks as the other templates
        full = self._apply(messages)
        spans = []
        for number in range(1, len(messages), 2):
            before = self._apply(messages[:number], generation_prompt=True)
            upto = self._apply(messages[:number + 1])
            if not (upto.startswith(before) and full.startswith(upto)):
                raise LlavaLnError("--conv_template auto: the tokenizer's chat template is not prefix-stable "
                                   "(it rewrites earlier turns); pick an explicit template")
            reply = messages[number][1]
            offset = upto.find(reply, len(before))
            if offset < 0:
                reply = reply.strip()
                offset = upto.find(reply, len(before))
            if offset < 0:
                raise LlavaLnError("--conv_template auto: the chat template changes the assistant reply text; "
                                   "pick an explicit template")
            # Whitespace between the generation prompt and the reply is supervised with the reply, as in
            # the other templates, so that the generation prompt is exactly the training context.
            start = len(before) if not upto[len(before):offset].strip() else offset
            spans.append((start, self._end_of_turn(full, offset + len(reply), len(upto))))
        return Rendered(full, tuple(spans))

    def render_prompt(self, messages) -> str:
        split_prompt(messages)
        return self._apply(messages, generation_prompt=True)


def end_of_turn_text(template) -> str | None:
    """The literal that ends a reply in this template (None when the template does not say)."""
    return getattr(template, "end_of_turn", None)


def stop_token_ids(tokenizer, template) -> list:
    """eos, plus the template's end-of-turn token when it is a single token of its own."""
    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    candidates = [end_of_turn_text(template)] + list(getattr(template, "end_of_turn_candidates", ()))
    for text in candidates:
        if not text or not text.strip():
            continue  # whitespace ends (plain's "\n") are cut from the text instead
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == 1 and ids[0] not in stops:
            stops.append(ids[0])
    return stops
