"""Answer generation: a benchmark prompt tokenized as training does, then batched generate().

Prompts: the user turn is `<image>` + newline + prompt (LLaVA's convention, and what training data
holds); the conversation template renders it with the assistant header, and the text goes through
the training encoder (one tokenizer call, the tokenizer's own prefix tokens once, each `<image>`
expanded to the model's image positions). So a prompt here is token for token the prefix the model
saw before every reply during training.

Generation uses the native LlavaForConditionalGeneration.generate. Prompts are left-padded (so
every prompt ends where generation starts) with an attention mask that hides the padding;
transformers derives position ids from that mask, so a prompt gets the same positions, and greedy
decoding the same answer, at any batch size. Generation stops at the tokenizer's eos and at the
template's end-of-turn token; `<image>` is never generated (the model would then expect image
features it was not given).

This is the per-question path: every question fills its whole prompt, image included. The
shared-prefix path (shared_prefix.py) builds on it and fills each image's prefix once. Both count
what they did (GenerationCounts): questions, prefix fills, and images through the vision tower,
the last measured by a hook on the tower itself.
"""
import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.encode import MAX_PROMPT_CHARS, check_tokenizer, encode, special_prefix_ids
from llava_ln.data.images import ImageError
from llava_ln.data.plain_text import protect
from llava_ln.data.records import unencodable
from llava_ln.data.templates import Rendered, end_of_turn_text, stop_token_ids
from llava_ln.model.parts import unwrap, vision_tower_of

logger = logging.getLogger(__name__)


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
        problem = question_text_problem(prompt)
        if problem:
            raise LlavaLnError(f"{where}: {problem}")
        encoded = encode(Rendered(self.text(protect(prompt, self.tokenizer)), ()), self.tokenizer, self.image_token_id,
                         self.num_image_tokens, self._prefix_ids)
        if len(encoded.image_starts) != 1:
            raise LlavaLnError(f"{where}: the rendered prompt holds {len(encoded.image_starts)} {IMAGE_TOKEN} tokens, "
                               "expected 1 (is the tokenizer prepared for <image>?)")
        return encoded.input_ids


def question_text_problem(prompt: str) -> str | None:
    """Why a question's text cannot be asked, or None: decided from the text alone, before any model loads."""
    if IMAGE_TOKEN in prompt:
        return f"the question text itself contains {IMAGE_TOKEN}"
    problem = unencodable(prompt)
    if problem:
        return f"the question text {problem}"
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"the question text has {len(prompt)} characters, more than {MAX_PROMPT_CHARS}"
    return None


def check_question_texts(items: list) -> None:
    """Refuse the first question whose text cannot be asked (one line naming it), before the model is loaded."""
    for item in items:
        problem = question_text_problem(item.prompt)
        if problem:
            raise LlavaLnError(f"question {item.key}: {problem}")


def warn_past_context(model, keys: list, prompts: list, max_new_tokens: int) -> int:
    """Warn (once, with a count) about questions whose prompt plus answer outgrows the LLM's context window:
    nothing stops the model there, but positions it never trained on make such answers unreliable.
    keys[i] names the question asking prompts[i]; returns how many there are."""
    window = getattr(unwrap(model).config.get_text_config(), "max_position_embeddings", None)
    if not window:
        return 0
    over = [(key, len(prompt)) for key, prompt in zip(keys, prompts) if len(prompt) + max_new_tokens > window]
    if over:
        logger.warning("%d question(s) need more positions than the LLM's context window of %d tokens (first: "
                       "question %s, a %d-token prompt + up to %d answer tokens); their answers are unreliable",
                       len(over), window, over[0][0], over[0][1], max_new_tokens)
    return len(over)


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are decoded; the values come from flags whose domains parse_flags checked (EvalArguments)."""

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float | None = None
    num_beams: int = 1


@dataclass
class GenerationCounts:
    """What answering cost. prefix_fills: prompt prefixes run through the LLM before decoding (the
    per-question path fills every question's whole prompt); vision_tower_passes: images encoded."""

    questions: int = 0
    prefix_fills: int = 0
    vision_tower_passes: int = 0

    def add(self, other: "GenerationCounts") -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def counting_tower_images(model, counts: GenerationCounts):
    """Count every image the vision tower encodes while the block runs (its first input is the pixel batch)."""
    def count(_module, args, kwargs):
        pixels = args[0] if args else kwargs.get("pixel_values")
        counts.vision_tower_passes += int(pixels.shape[0]) if pixels is not None else 0

    handle = vision_tower_of(model).register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class AnswerGenerator:
    """The per-question path: each batch is whole left-padded prompts, each with its own image."""

    def __init__(self, eval_model, settings: GenerationSettings, device, synced_gpus: bool = False):
        from transformers import GenerationConfig

        self.synced_gpus = synced_gpus  # ZeRO-3: every rank keeps stepping until all are done
        self.eval_model = eval_model
        self.model = eval_model.model
        self.tokenizer = eval_model.tokenizer
        self.device = device
        self.end_of_turn = end_of_turn_text(eval_model.template)
        self.pixel_dtype = next(vision_tower_of(self.model).parameters()).dtype
        self.counts = GenerationCounts()
        sampling = settings.temperature > 0
        stops = stop_token_ids(self.tokenizer, eval_model.template)
        self.stops = set(stops)
        # A complete config, so nothing is inherited from the LLM's own generation_config.json.
        self.config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            do_sample=sampling,
            temperature=settings.temperature if sampling else None,
            top_p=settings.top_p if sampling else None,
            top_k=None,
            num_beams=settings.num_beams,
            eos_token_id=stops,
            pad_token_id=self.tokenizer.pad_token_id,
            suppress_tokens=[eval_model.image_token_id],
        )

    def _left_padded(self, prompts: list) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _pixels(self, images: list, wheres: list) -> torch.Tensor:
        try:
            pixel_values = self.eval_model.image_loader(images)
        except ImageError:
            for image, where in zip(images, wheres):  # find the one to name
                try:
                    self.eval_model.image_loader([image])
                except ImageError as err:
                    raise LlavaLnError(f"{where}: {err}") from None
            raise
        return pixel_values.to(self.device, dtype=self.pixel_dtype)

    def clean(self, text: str) -> str:
        """The reply alone: cut at the template's end-of-turn text (if it was decoded) and stripped."""
        if self.end_of_turn and self.end_of_turn in text:
            text = text[: text.index(self.end_of_turn)]
        return text.strip()

    def answer_ids(self, new_tokens: torch.Tensor) -> list:
        """Each row's answer tokens: up to and including its first stop token (generate pads after it)."""
        rows = []
        for row in new_tokens.tolist():
            end = next((i + 1 for i, token in enumerate(row) if token in self.stops), len(row))
            rows.append(row[:end])
        return rows

    def decode(self, answer_ids: list) -> list:
        return [self.clean(text) for text in self.tokenizer.batch_decode(answer_ids, skip_special_tokens=True)]

    def generate(self, prompts: list, images: list, wheres: list | None = None) -> list:
        """Answers for one batch: prompts are token id lists, images file paths (one per prompt)."""
        return self.decode(self.generate_ids(prompts, images, wheres))

    @torch.inference_mode()
    def generate_ids(self, prompts: list, images: list, wheres: list | None = None) -> list:
        """The answers' token ids (answer_ids) for one batch of whole prompts."""
        wheres = wheres or [f"image {image}" for image in images]
        input_ids, attention_mask = self._left_padded(prompts)
        pixel_values = self._pixels(images, wheres)
        with counting_tower_images(self.model, self.counts):
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                                         generation_config=self.config, synced_gpus=self.synced_gpus)
        self.counts.questions += len(prompts)
        self.counts.prefix_fills += len(prompts)
        return self.answer_ids(output[:, input_ids.shape[1]:])
