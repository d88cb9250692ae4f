"""The training dataset: lazy LLaVA samples with exact labels, skipping (and counting) unusable ones.

Indexing (index.py) validates every record up front without tokenizing; a sample is rendered,
tokenized and its images decoded only when read. A sample that turns out unusable when read (all
supervised tokens truncated away; under --skip_bad_samples also an unreadable image or a record the
tokenizer rejects) is flagged once and replaced by the next usable sample of the same modality, so
every index still yields a real sample and none is trained with zero loss. The flags live in a shared-memory array (inherited by
forked or spawned DataLoader workers), so each such sample is logged once, never re-read in later
epochs, and counted by the main process at the end.

The factories at the end (load_data_components, build_train_dataset, build_train_sampler) are what
the training script and `inspect-data` call; none of them loads model weights.
"""
import logging
import multiprocessing
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.core.distributed import DistContext, all_gather_objects, all_reduce_sum_int64
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.args import DataArguments, check_data_args
from llava_ln.data.encode import (
    Encoded,
    check_tokenizer,
    cut_to_budget,
    encode,
    special_prefix_ids,
    text_budget,
    truncate,
)
from llava_ln.data.image_placement import images_first
from llava_ln.data.images import ImageError, ImageLoader, load_image_processor, processor_side
from llava_ln.data.index import ModalityLengthGroupedSampler, build_index, parse_data_path
from llava_ln.data.plain_text import protect_messages, restore
from llava_ln.data.templates import get_template
from llava_ln.model.backbones import load_tokenizer, load_vision_config, num_image_tokens, select_strategy

TRUNCATED = 1
BAD_RECORD = 2
REASONS = {TRUNCATED: "truncated", BAD_RECORD: "bad_record"}


class SkipSample(Exception):
    """Raised while building a sample that must be skipped (and replaced) rather than trained on."""

    def __init__(self, reason: int, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def is_tokenizer_failure(err: BaseException) -> bool:
    """An error a tokenizer raised on its input: any Exception, or a Rust panic surfacing through pyo3
    (PanicException derives from BaseException); never an interrupt or an exit."""
    return isinstance(err, Exception) or type(err).__name__ == "PanicException"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class SkipLedger:
    def __init__(self, size: int):
        # Races between workers are harmless: they would write the same flag for the same index.
        self._flags = multiprocessing.RawArray("b", max(size, 1))

    def reason(self, index: int) -> int:
        return self._flags[index]

    def mark(self, index: int, reason: int) -> bool:
        """Flag index; True the first time (so the caller logs it once)."""
        if self._flags[index]:
            return False
        self._flags[index] = reason
        return True

    def counts(self) -> dict:
        flags = np.frombuffer(self._flags, dtype=np.int8)
        return {name: int((flags == code).sum()) for code, name in REASONS.items()}


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
                 model_max_length: int, skip_bad_samples: bool = False, image_first: bool = True):
        check_tokenizer(tokenizer)
        self.image_first = image_first  # move <image> to the front of its turn, as LLaVA does
        self.index = index
        self.tokenizer = tokenizer
        self.image_loader = image_loader
        self.template = template
        self.image_token_id = image_token_id
        self.num_image_tokens = num_image_tokens
        self.model_max_length = model_max_length
        self.skip_bad_samples = skip_bad_samples
        self._prefix_ids = special_prefix_ids(tokenizer)
        self._text_budget = text_budget(tokenizer, model_max_length)
        self._ledger = SkipLedger(len(index))
        self._measured_in_place_of: dict[int, int] = {}  # token_lengths: skipped index -> the index it measured
        self.has_image = index.n_images > 0
        # Cheap length estimate for grouping (words stand in for tokens; images are exact).
        self.length_estimates = (index.words + index.n_images * num_image_tokens).astype(np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def process(self, index: int) -> ProcessedSample:
        """Render, tokenize and truncate one record (no image decoding); SkipSample if nothing is supervised."""
        conversation = self.index.conversation(index)
        where = self.index.where(index, conversation.id)
        messages = images_first(conversation.messages) if self.image_first else conversation.messages
        # Data text is plain text (no forged control tokens), and no more of it is rendered and tokenized than
        # truncation can keep (data.encode's text budget).
        messages = cut_to_budget(protect_messages(messages, self.tokenizer), self._text_budget)
        image_tags = sum(text.count(IMAGE_TOKEN) for _, text in messages)
        try:
            rendered = self.template.render(messages)
        except LlavaLnError as err:  # e.g. a chat template that fails or runs away on this record (template_guard)
            if self.skip_bad_samples:
                raise SkipSample(BAD_RECORD, f"{where}: {err}") from None
            raise LlavaLnError(f"{where}: {err}") from None
        try:
            encoded = encode(rendered, self.tokenizer, self.image_token_id, self.num_image_tokens, self._prefix_ids)
        except BaseException as err:
            if not is_tokenizer_failure(err):
                raise
            message = f"{where}: the tokenizer rejects this record ({type(err).__name__}: {first_line(err)})"
            if self.skip_bad_samples:
                raise SkipSample(BAD_RECORD, message) from None
            raise LlavaLnError(message) from None
        if len(encoded.image_starts) != image_tags:
            raise LlavaLnError(
                f"{where}: {image_tags} image(s) but {len(encoded.image_starts)} <image> tokens after "
                "tokenization; was the tokenizer passed through llava_ln.model.tokens.prepare_tokenizer?"
            )
        total = encoded.supervised_count
        encoded = truncate(encoded, self.model_max_length, self.num_image_tokens)
        if encoded.supervised_count == 0:
            raise SkipSample(TRUNCATED, f"{where}: all {total} supervised tokens lie beyond --model_max_length "
                                        f"{self.model_max_length}")
        paths = self.index.image_paths(index, conversation)[:len(encoded.image_starts)]
        return ProcessedSample(conversation.id, where, restore(rendered.text, self.tokenizer), encoded, paths)

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

    def token_lengths(self, context: DistContext | None = None) -> np.ndarray:
        """The exact token count of the sample each index yields (what --packing budgets with).

        Every record is rendered and tokenized once (no image is decoded); with a distributed context each
        rank tokenizes every world_size-th record and the ranks sum their counts, so every rank gets the same
        array in 1/world_size of the time. An index whose record is skipped counts the sample that replaces
        it, as __getitem__ would read it (a rank logs the skips it measured). Deliberate approximation: an
        image found unreadable only when read (--skip_bad_samples) is replaced then, and its micro-batch may
        then differ from the budget by the two samples' difference in length.

        A record refused (LlavaLnError) by the rank that measures it is refused on every rank, with its message:
        the other ranks would otherwise wait in the sum for a rank that has left."""
        lengths = np.zeros(len(self), dtype=np.int64)
        indices = list(range(len(self)))
        refusal = None
        for index in context.share(indices) if context is not None else indices:
            if self._ledger.reason(index):
                continue
            try:
                lengths[index] = len(self.process(index).encoded)
            except SkipSample as skip:
                if self._ledger.mark(index, skip.reason):
                    logger.warning("skipping %s", skip.message)
            except LlavaLnError as err:
                if context is None:
                    raise
                refusal = str(err)
                break
        if context is not None:
            refusal = next((r for r in all_gather_objects(context, refusal) if r), None)
            if refusal:
                raise LlavaLnError(refusal)
            lengths = all_reduce_sum_int64(context, lengths)  # each index was measured by exactly one rank
        for index in np.flatnonzero(lengths == 0).tolist():
            usable = next((c for c in self._same_modality_from(index) if lengths[c]), None)
            if usable is None:
                raise self._none_usable(index)
            lengths[index] = lengths[usable]
            self._measured_in_place_of[index] = usable
        return lengths

    def where_read(self, index: int) -> str:
        """How an error about the sample that `index` yields names its record: the replacement's when token_lengths
        found the record at `index` skipped (its length is the replacement's)."""
        read = self._measured_in_place_of.get(index, index)
        return self.index.where(read, self.index.conversation(read).id)

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
        raise self._none_usable(index)

    def _none_usable(self, index: int) -> LlavaLnError:
        return LlavaLnError(f"no usable {'image' if self.has_image[index] else 'text-only'} sample is left: "
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


@dataclass(frozen=True)
class DataComponents:
    tokenizer: object
    image_processor: object
    template: object
    image_token_id: int
    num_image_tokens: int


def load_data_components(model_args, data_args: DataArguments) -> DataComponents:
    """Tokenizer, image processor, template and image-token facts from configs alone (no weights)."""
    tokenizer_path = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if not tokenizer_path:
        raise LlavaLnError("--model_name_or_path (or --tokenizer_name_or_path) is required")
    tokenizer = load_tokenizer(tokenizer_path)
    vision_config, family = load_vision_config(model_args.vision_tower)
    strategy = select_strategy(family, model_args.mm_vision_select_feature)
    image_processor = load_image_processor(model_args.vision_tower)
    side = processor_side(image_processor)
    if side is not None and side != vision_config.image_size:
        raise LlavaLnError(f"--vision_tower {model_args.vision_tower!r}: its image processor makes {side}px images "
                           f"but the tower expects {vision_config.image_size}px")
    return DataComponents(
        tokenizer=tokenizer,
        image_processor=image_processor,
        template=get_template(data_args.conv_template, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        num_image_tokens=num_image_tokens(vision_config, strategy),
    )


def build_train_dataset(data_args: DataArguments, tokenizer, image_processor, template, image_token_id: int,
                        num_image_tokens: int, seed: int) -> LlavaDataset:
    """Index --data_path (validating every record) and return the lazy training dataset."""
    check_data_args(data_args)
    index = build_index(parse_data_path(data_args.data_path), data_args.image_folder, seed,
                        data_args.skip_bad_samples)
    loader = ImageLoader(image_processor, data_args.image_aspect_ratio, data_args.max_image_pixels)
    return LlavaDataset(index, tokenizer, loader, template,
                        image_token_id, num_image_tokens, data_args.model_max_length, data_args.skip_bad_samples,
                        image_first=not data_args.keep_image_placement)


def build_train_sampler(dataset: LlavaDataset, data_args: DataArguments, batch_size: int, world_size: int,
                        seed: int):
    """The modality-length sampler when --group_by_modality_length is set, else None (plain shuffling)."""
    if not data_args.group_by_modality_length:
        return None
    return ModalityLengthGroupedSampler(dataset.length_estimates, dataset.has_image, batch_size, world_size, seed)
