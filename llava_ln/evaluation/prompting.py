"""Benchmark prompt -> input ids, tokenized exactly as training tokenizes a conversation.

The user turn is `<image>` + newline + prompt (LLaVA's convention, and what training data
holds); the conversation template renders it with the assistant header, and the text goes
through the training encoder (one tokenizer call, the tokenizer's own prefix tokens once,
each `<image>` expanded to the model's image positions). So a prompt here is token for
token the prefix the model saw before every reply during training.
"""
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.encode import check_tokenizer, encode, special_prefix_ids
from llava_ln.data.templates import Rendered
from llava_ln.model.tokens import IMAGE_TOKEN


class PromptEncoder:
    def __init__(self, tokenizer, template, image_token_id: int, num_image_tokens: int):
        check_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.template = template
        self.image_token_id = image_token_id
        self.num_image_tokens = num_image_tokens
        self._prefix_ids = special_prefix_ids(tokenizer)

    def text(self, prompt: str) -> str:
        """The rendered prompt (for inspection): template around `<image>\\n` + prompt."""
        return self.template.render_prompt([("user", f"{IMAGE_TOKEN}\n{prompt}")])

    def encode(self, prompt: str, where: str = "prompt") -> list:
        if IMAGE_TOKEN in prompt:
            raise LlavaLnError(f"{where}: the question text itself contains {IMAGE_TOKEN}")
        encoded = encode(Rendered(self.text(prompt), ()), self.tokenizer, self.image_token_id,
                         self.num_image_tokens, self._prefix_ids)
        if len(encoded.image_starts) != 1:
            raise LlavaLnError(f"{where}: the rendered prompt holds {len(encoded.image_starts)} {IMAGE_TOKEN} tokens, "
                               "expected 1 (is the tokenizer prepared for <image>?)")
        return encoded.input_ids
