"""Tokenize a rendered conversation once and derive labels from the tokenizer's own offsets.

The whole text is tokenized in one call, exactly as the model will see it; a token is
supervised when its character span overlaps a reply span given by the template. No piece
is re-tokenized and no token count is assumed, so no tokenizer quirk (sentencepiece's
leading space, merges across a boundary, added special tokens) can shift the mask.
Each `<image>` token then becomes num_image_tokens copies of itself (never supervised).
"""
from dataclasses import dataclass

import numpy as np

from llava_ln.core.errors import LlavaLnError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list
    labels: list
    image_starts: list  # position of the first placeholder of each image

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def supervised_count(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def check_tokenizer(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise LlavaLnError(
            f"labels are built from character offsets, which need a tokenizers-backed (fast) tokenizer; "
            f"{type(tokenizer).__name__} is not one"
        )


def special_prefix_ids(tokenizer) -> list:
    """The special tokens the tokenizer puts in front of a text (bos for LLaMA-style ones, often none)."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start]
    return []


def supervised_mask(offsets, reply_spans) -> np.ndarray:
    """True for tokens whose characters overlap a reply span (a token may also hold the space before it)."""
    if not offsets:
        return np.zeros(0, dtype=bool)
    bounds = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = bounds[:, 0], bounds[:, 1]
    mask = np.zeros(len(bounds), dtype=bool)
    for span_start, span_end in reply_spans:
        mask |= (starts < span_end) & (ends > span_start) & (ends > starts)
    return mask


def encode(rendered, tokenizer, image_token_id: int, num_image_tokens: int, prefix_ids: list) -> Encoded:
    encoding = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    mask = supervised_mask(encoding["offset_mapping"], rendered.reply_spans)
    # Chat templates may render the bos text themselves; add the tokenizer's prefix only once.
    prefix = [] if ids[:len(prefix_ids)] == list(prefix_ids) else list(prefix_ids)
    input_ids, labels, image_starts = list(prefix), [IGNORE_INDEX] * len(prefix), []
    for token_id, supervised in zip(ids, mask.tolist()):
        if token_id == image_token_id:
            image_starts.append(len(input_ids))
            input_ids.extend([token_id] * num_image_tokens)
            labels.extend([IGNORE_INDEX] * num_image_tokens)
        else:
            input_ids.append(token_id)
            labels.append(token_id if supervised else IGNORE_INDEX)
    return Encoded(input_ids, labels, image_starts)


def truncate(encoded: Encoded, max_length: int, num_image_tokens: int) -> Encoded:
    """Cut to max_length tokens; an image whose placeholders would be cut is dropped whole."""
    if len(encoded) <= max_length:
        return encoded
    cut = max_length
    for start in encoded.image_starts:
        if start < cut < start + num_image_tokens:
            cut = start
    kept = [start for start in encoded.image_starts if start + num_image_tokens <= cut]
    return Encoded(encoded.input_ids[:cut], encoded.labels[:cut], kept)

