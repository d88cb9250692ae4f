"""`--conv_template auto`: the tokenizer's own chat template, with reply spans found by rendering prefixes.

The chat template is a Jinja program, so reply positions cannot be read off format strings.
Instead the conversation is rendered up to each reply (with the generation prompt) and up
to the end of that reply; the reply starts inside the difference, and its span runs to the
first special token after it (the end-of-turn token, e.g. <|im_end|>, <|eot_id|>, </s>).
This needs a prefix-stable template (rendering fewer messages gives a prefix of the full
text), which is true of the common chat templates; other templates get a clear error.
"""
from dataclasses import dataclass

from llava_ln.core.errors import LlavaLnError
from llava_ln.data.templates import Rendered, exchanges, split_prompt
from llava_ln.model.tokens import IMAGE_TOKEN


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
        return cls(tokenizer, _special_token_strings(tokenizer))

    def _apply(self, messages, generation_prompt: bool = False) -> str:
        chat = [{"role": role, "content": text} for role, text in messages]
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation_prompt)

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
