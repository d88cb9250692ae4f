"""Text from data is plain text: a literal `</s>` in a reply is four characters, never the control token.

Fast tokenizers match every special token's text wherever it appears, so a record whose reply holds
`</s>` or `<|im_end|>` would be trained on a real end of turn at that point: data could forge turn
boundaries. The template's own control tokens must stay control tokens. So the two are told apart
before rendering, where it is still known which text is data:
  * protect(text) replaces, in a message, every special token's text by a placeholder of the same
    length (characters of Unicode's Supplementary Private Use Area-A, which real text does not use;
    any such character already in the data becomes U+FFFD first, so data cannot spell a placeholder);
  * the template renders the protected messages; every special token's text in its output is now
    the template's own;
  * tokenize(text) gives the exact tokens and offsets of that text: when it holds no placeholder
    (nearly always) it is the tokenizer's own call, unchanged; otherwise a copy of the tokenizer's
    backend that matches no special token by text (tokenizers' encode_special_tokens) but knows one
    stand-in token per control token tokenizes the text with the template's control tokens as
    stand-ins and the data's placeholders turned back into plain text, and the stand-ins' ids are
    mapped back. Control tokens split the text the same way as before, so every other token is the
    one the tokenizer would have produced (tests compare both paths on LLaMA and Qwen2 tokenizers).
The image tag `<image>` is data's own way of placing an image and is left as it is.
"""
import re
import weakref

from llava_ln.core.constants import IMAGE_TOKEN

_DATA_BASE = 0xF0000  # placeholder k: chr(_DATA_BASE + k) * len(special k)
_STANDIN_BASE = 0xF8000  # stand-in token k of the backend copy: chr(_STANDIN_BASE + k) * len(special k)
_RESERVED = re.compile("[\U000F0000-\U000FFFFD]")
_CACHE = weakref.WeakKeyDictionary()


class _Plan:
    """Per tokenizer: its special texts, the pattern that finds them, and (built on first need) the backend copy."""

    def __init__(self, tokenizer):
        controls = {str(t) for t in tokenizer.added_tokens_decoder.values() if t.special}
        controls |= {t for t in tokenizer.all_special_tokens if t}
        # Every special token's text is a control token where the template writes it; in data all but <image>
        # are protected (longest first, so `<|im_end|>` wins over a shorter special inside it).
        self.controls = sorted(controls, key=lambda t: (-len(t), t))
        self.specials = [text for text in self.controls if text != IMAGE_TOKEN]
        self.placeholders = {text: chr(_DATA_BASE + k) * len(text) for k, text in enumerate(self.specials)}
        self.restored = {chr(_DATA_BASE + k): text for k, text in enumerate(self.specials)}
        self.pattern = _alternatives(self.specials)
        self.control_pattern = _alternatives(self.controls)
        self.tokenizer = tokenizer
        self._backend = None

    def backend(self):
        """(backend copy, {stand-in id: control token id}, stand-in text per control token)."""
        if self._backend is None:
            from tokenizers import AddedToken, Tokenizer

            copy = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
            copy.no_truncation()
            copy.no_padding()
            copy.encode_special_tokens = True
            standins = {text: chr(_STANDIN_BASE + k) * len(text) for k, text in enumerate(self.controls)}
            copy.add_tokens([AddedToken(s, special=False, normalized=False) for s in standins.values()])
            real = {copy.token_to_id(standins[text]): self.tokenizer.convert_tokens_to_ids(text)
                    for text in self.controls}
            self._backend = (copy, real, standins)
        return self._backend


def _alternatives(texts):
    return re.compile("|".join(re.escape(t) for t in texts)) if texts else None


def _plan(tokenizer) -> _Plan:
    plan = _CACHE.get(tokenizer)
    if plan is None:
        plan = _CACHE[tokenizer] = _Plan(tokenizer)
    return plan


def protect(text: str, tokenizer) -> str:
    """text from data with every special token's text made a same-length placeholder (see the module docstring)."""
    plan = _plan(tokenizer)
    if _RESERVED.search(text):
        text = _RESERVED.sub("\ufffd", text)
    if plan.pattern is None:
        return text
    return plan.pattern.sub(lambda match: plan.placeholders[match.group(0)], text)


def protect_messages(messages, tokenizer) -> tuple:
    return tuple((role, protect(text, tokenizer)) for role, text in messages)


def _has_placeholder(text: str) -> bool:
    return _RESERVED.search(text) is not None


def restore(text: str, tokenizer) -> str:
    """A protected (and rendered) text as the data wrote it, for display."""
    if not _has_placeholder(text):
        return text
    plan = _plan(tokenizer)
    return re.sub("([\U000F0000-\U000F7FFF])\\1*", lambda m: _unfold(m.group(0), plan), text)


def _unfold(run: str, plan: _Plan) -> str:
    special = plan.restored.get(run[0])
    if special is None:
        return run
    whole, rest = divmod(len(run), len(special))
    return special * whole + run[:rest]  # a placeholder cut short (text budget) stays as it was


def tokenize(text: str, tokenizer) -> tuple[list, list]:
    """(token ids, character offsets) of a rendered text whose data was protected."""
    if not _has_placeholder(text):
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoding["input_ids"]), list(encoding["offset_mapping"])
    plan = _plan(tokenizer)
    backend, real_ids, standins = plan.backend()
    if plan.control_pattern is not None:  # the template's own control tokens become stand-ins, the same length
        text = plan.control_pattern.sub(lambda match: standins[match.group(0)], text)
    text = restore(text, tokenizer)  # the data's placeholders back to their plain text
    encoding = backend.encode(text, add_special_tokens=False)
    return [real_ids.get(token, token) for token in encoding.ids], [tuple(span) for span in encoding.offsets]
