"""The training dataset: lazy LLaVA samples with exact labels, skipping (and counting) unusable ones.

Indexing (index.py) validates every record up front without tokenizing; a sample is
rendered, tokenized and its images decoded only when read. A sample that turns out
unusable when read (all supervised tokens truncated away; an unreadable image under
--skip_bad_samples) is flagged once and replaced by the next usable sample of the same
modality, so every index still yields a real sample and none is trained with zero loss.
"""
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from llava_ln.core.errors import LlavaLnError
from llava_ln.data.encode import Encoded, check_tokenizer, encode, special_prefix_ids, truncate
from llava_ln.data.images import ImageError
from llava_ln.data.skips import BAD_RECORD, TRUNCATED, SkipLedger, SkipSample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessedSample:
    id: str
    where: str  # "file: record 'id' (#n)", for messages
    text: str  # the rendered conversation, one <image> per image
    encoded: Encoded
    image_paths: list  # the images that survived truncation


class LlavaDataset(Dataset):
    def __init__(self, index, tokenizer, image_loader, template, image_token_id: int, num_image_tokens: int,
                 model_max_length: int, skip_bad_samples: bool = False):
        check_tokenizer(tokenizer)
        self.index = index
        self.tokenizer = tokenizer
        self.image_loader = image_loader
        self.template = template
        self.image_token_id = image_token_id
        self.num_image_tokens = num_image_tokens
        self.model_max_length = model_max_length
        self.skip_bad_samples = skip_bad_samples
        self._prefix_ids = special_prefix_ids(tokenizer)
        self._ledger = SkipLedger(len(index))
        self.has_image = index.n_images > 0
        # Cheap length estimate for grouping (words stand in for tokens; images are exact).
        self.length_estimates = (index.words + index.n_images * num_image_tokens).astype(np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def process(self, index: int) -> ProcessedSample:
        """Render, tokenize and truncate one record (no image decoding); SkipSample if nothing is supervised."""
        conversation = self.index.conversation(index)
        where = self.index.where(index, conversation.id)
        try:
            rendered = self.template.render(conversation.messages)
        except LlavaLnError as err:
            raise LlavaLnError(f"{where}: {err}") from None
        encoded = encode(rendered, self.tokenizer, self.image_token_id, self.num_image_tokens, self._prefix_ids)
        if len(encoded.image_starts) != len(conversation.images):
            raise LlavaLnError(
                f"{where}: {len(conversation.images)} image(s) but {len(encoded.image_starts)} <image> tokens after "
                "tokenization; was the tokenizer passed through llava_ln.model.tokens.prepare_tokenizer?"
            )
        total = encoded.supervised_count
        encoded = truncate(encoded, self.model_max_length, self.num_image_tokens)
        if encoded.supervised_count == 0:
            raise SkipSample(TRUNCATED, f"{where}: all {total} supervised tokens lie beyond --model_max_length "
                                        f"{self.model_max_length}")
        paths = self.index.image_paths(index, conversation)[:len(encoded.image_starts)]
        return ProcessedSample(conversation.id, where, rendered.text, encoded, paths)

    def load(self, index: int) -> dict:
        """One training sample; SkipSample when it must be skipped, LlavaLnError for bad input otherwise."""
        sample = self.process(index)
        pixel_values = None
        if sample.image_paths:
            try:
                pixel_values = self.image_loader(sample.image_paths)
            except ImageError as err:
                message = f"{sample.where}: {err}"
                if self.skip_bad_samples:
                    raise SkipSample(BAD_RECORD, message) from None
                raise LlavaLnError(message) from None
        return {
            "id": sample.id,
            "input_ids": torch.tensor(sample.encoded.input_ids, dtype=torch.long),
            "labels": torch.tensor(sample.encoded.labels, dtype=torch.long),
            "pixel_values": pixel_values,
        }

    def _same_modality_from(self, index: int):
        """index, then the following indices (wrapping) holding the same modality."""
        size, wanted = len(self), self.has_image[index]
        for step in range(size):
            candidate = (index + step) % size
            if self.has_image[candidate] == wanted:
                yield candidate

    def __getitem__(self, index: int) -> dict:
        for candidate in self._same_modality_from(index):
            if self._ledger.reason(candidate):
                continue
            try:
                return self.load(candidate)
            except SkipSample as skip:
                if self._ledger.mark(candidate, skip.reason):
                    logger.warning("skipping %s", skip.message)
        raise LlavaLnError(f"no usable {'image' if self.has_image[index] else 'text-only'} sample is left: "
                           "every one was skipped (see the warnings above)")

    def skip_counts(self) -> dict:
        """Samples left out so far: bad records (at indexing and when read) and fully truncated ones."""
        counts = self._ledger.counts()
        return {"bad_record": self.index.rejected + counts["bad_record"], "truncated": counts["truncated"]}

    @property
    def skipped_count(self) -> int:
        return sum(self.skip_counts().values())

    def log_skip_summary(self) -> int:
        """Log the skip count once (call at the end of training); returns it."""
        counts = self.skip_counts()
        total = sum(counts.values())
        logger.info("data: %d of %d samples skipped (%d bad records, %d with every supervised token truncated)",
                    total, len(self) + self.index.rejected, counts["bad_record"], counts["truncated"])
        return total
