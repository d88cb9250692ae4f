"""Tokens and labels: encode one rendered conversation, and stack samples into THE batch contract.

The whole text is tokenized in one call, exactly as the model will see it; a token is supervised
when its character span overlaps a reply span given by the template. No piece is re-tokenized and
no token count is assumed, so no tokenizer quirk (sentencepiece's leading space, merges across a
boundary, added special tokens) can shift the mask. Each `<image>` token then becomes
num_image_tokens copies of itself (never supervised). Special-token text inside data stays plain
text (plain_text: the caller protects the messages before rendering, tokenize tells the two apart).

Text is bounded before it is tokenized: a 20 MB reply would otherwise be tokenized whole (gigabytes,
minutes) only to be cut to --model_max_length tokens. No token of a tokenizer covers more characters
than its longest vocabulary entry, so any text of text_budget(tokenizer, max_length) characters
makes at least 2 * max_length + 64 tokens; cut_to_budget cuts the messages there, and what it cuts
lies beyond every token that truncation keeps (the margin absorbs a merge that changes at the cut),
so the kept tokens and their labels are exactly those of the whole text.

The batch contract consumed by llava_ln.model.forward.multimodal_forward:
    input_ids       LongTensor[B, T]   right-padded with tokenizer.pad_token_id
    attention_mask  LongTensor[B, T]   1 on real tokens, 0 on padding
    labels          LongTensor[B, T]   -100 where not supervised and on padding
    pixel_values    FloatTensor[N, 3, H, W] every image of the batch in sample order, or None
    image_counts    LongTensor[B]      images per sample
    sample_ids      list[str]
A packed batch (--packing, data.packing) is one row: B above is 1 for the token tensors, the samples
lie side by side with no padding (attention_mask all ones), image_counts and sample_ids still have one
entry per sample, and one more tensor says where each sample starts:
    position_ids    LongTensor[1, T]   0, 1, ... restarting at 0 at the first token of each sample
"""
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.plain_text import tokenize

MAX_PROMPT_CHARS = 2**20  # an evaluation question longer than this is refused, not tokenized
_LONGEST_TOKEN = weakref.WeakKeyDictionary()


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


def longest_token_chars(tokenizer) -> int:
    """An upper bound on the characters one token covers: its longest vocabulary string (byte-level BPE
    spells a byte as one character, sentencepiece a space as one; byte-fallback pieces overcount)."""
    longest = _LONGEST_TOKEN.get(tokenizer)
    if longest is None:
        longest = _LONGEST_TOKEN[tokenizer] = max(map(len, tokenizer.get_vocab()), default=1)
    return max(longest, 1)


def text_budget(tokenizer, max_length: int) -> int:
    """Characters of message text that are sure to make more tokens than truncation keeps (module docstring)."""
    return (2 * max_length + 64) * longest_token_chars(tokenizer)


def cut_to_budget(messages, budget: int) -> tuple:
    """messages with their text cut after `budget` characters in all (later messages kept, empty, so the
    conversation keeps its shape); the same tuple when nothing is cut."""
    if sum(len(text) for _, text in messages) <= budget:
        return tuple(messages)
    cut, left = [], budget
    for role, text in messages:
        cut.append((role, text[:left]))
        left = max(left - len(text), 0)
    return tuple(cut)


def encode(rendered, tokenizer, image_token_id: int, num_image_tokens: int, prefix_ids: list) -> Encoded:
    ids, offsets = tokenize(rendered.text, tokenizer)
    mask = supervised_mask(offsets, rendered.reply_spans)
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


class DataCollator:
    def __init__(self, tokenizer):
        if tokenizer.pad_token_id is None:
            raise LlavaLnError("the tokenizer has no pad token; pass it through prepare_tokenizer first")
        self.pad_token_id = tokenizer.pad_token_id

    def __call__(self, samples: list) -> dict:
        width = max(len(s["input_ids"]) for s in samples)
        batch_size = len(samples)
        input_ids = torch.full((batch_size, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
        for row, sample in enumerate(samples):
            length = len(sample["input_ids"])
            input_ids[row, :length] = sample["input_ids"]
            labels[row, :length] = sample["labels"]
            attention_mask[row, :length] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, **image_fields(samples)}


def image_fields(samples: list) -> dict:
    """pixel_values (every image, in sample order, or None), image_counts and sample_ids of a batch's samples."""
    images = [s["pixel_values"] for s in samples if s["pixel_values"] is not None]
    return {
        "pixel_values": torch.cat(images) if images else None,
        "image_counts": torch.tensor(
            [0 if s["pixel_values"] is None else s["pixel_values"].shape[0] for s in samples], dtype=torch.long
        ),
        "sample_ids": [s["id"] for s in samples],
    }
