"""The shared-prefix path: each image's prefix is filled once and its key/value cache answers all its questions.

A batch (image_groups.plan_batches) is answered in two steps:
  fill    the prefixes of the groups first needed in the batch go through the model in one forward
          (their token ids, their images' pixels, an all-ones mask, an empty DynamicCache): the
          vision tower and the prefix run once per image. Each group keeps its row of the cache's
          key/value tensors until its last batch.
  answer  a DynamicCache is assembled from each row's group (a group's rows repeat its tensors), and
          generate() gets every row's full token ids, prefix + padding + the question's suffix,
          with a mask that hides the padding. generate() runs only the tokens after the cache and
          takes positions from the mask's running count, so each suffix token sits at the position
          it has in the whole prompt, as in the per-question path (whose padding is on the left
          instead, before the prefix). No pixels are passed: the image is in the cache.

Why the answers are the per-question path's: every token attends to the same tokens, at the same
positions, with the same embeddings; only the grouping of floating-point work differs (the prefix
computed in a batch of its own, the suffix against a cache, padding in the middle rather than on
the left), the same kind of rounding difference as between two batch sizes of the per-question
path. So greedy answers are the same token ids in float32 (the tests compare them on every
benchmark, two LLM families, batch sizes 1 and 16); in bfloat16 a near-tie can flip, as it can
between batch sizes.

Caches it handles: a DynamicCache of plain DynamicLayers (full attention in every layer: LLaMA,
Qwen2, Mistral without a sliding window, Phi, GPT-NeoX, ...). unsupported_reason() names what it
cannot handle (beam search; sliding-window, chunked, linear-attention or shared layers) so the
caller can fall back to the per-question path; a model that returns another cache from its forward
is a one-line error naming the flag that avoids this path.
"""
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from llava_ln.core.errors import LlavaLnError
from llava_ln.evaluation.generation import AnswerGenerator, GenerationSettings, counting_tower_images
from llava_ln.model.parts import unwrap

FALLBACK_FLAG = "--share_image_prefix false"


def unsupported_reason(model, settings: GenerationSettings) -> str | None:
    """Why this model or these settings cannot share image prefixes, or None when they can."""
    if settings.num_beams > 1:
        return f"--num_beams {settings.num_beams} (beam search expands every prompt itself)"
    try:
        layers = DynamicCache(config=unwrap(model).config).layers
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        return f"its LLM's cache layout is unknown ({err})"
    others = sorted({type(layer).__name__ for layer in layers if type(layer) is not DynamicLayer})
    if others:
        return f"its LLM's cache has {', '.join(others)} layers (only full-attention DynamicLayers can be shared)"
    return None


class SharedPrefixGenerator(AnswerGenerator):
    """AnswerGenerator's settings, images and decoding, with prefixes filled once and reused from their cache."""

    @torch.inference_mode()
    def fill(self, prefixes: list, images: list, wheres: list) -> list:
        """One forward over equal-length prefixes (one per image); returns each one's [(keys, values)] per layer."""
        input_ids = torch.tensor(prefixes, dtype=torch.long, device=self.device)
        pixel_values = self._pixels(images, wheres)
        with counting_tower_images(self.model, self.counts):
            output = self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=torch.ones_like(input_ids),
                                cache=DynamicCache(config=unwrap(self.model).config), use_cache=True, logits_to_keep=1)
        layers = self._checked_layers(output.cache, input_ids.shape)
        self.counts.prefix_fills += len(prefixes)
        return [[(layer.keys[row:row + 1], layer.values[row:row + 1]) for layer in layers]
                for row in range(len(prefixes))]

    @staticmethod
    def _checked_layers(cache, shape) -> list:
        layers = getattr(cache, "layers", None) or []
        if not layers or any(type(layer) is not DynamicLayer or layer.keys is None
                             or tuple(layer.keys.shape[::2]) != tuple(shape) for layer in layers):
            kinds = sorted({type(layer).__name__ for layer in layers}) or [type(cache).__name__]
            raise LlavaLnError(f"the model's forward returned a cache of {', '.join(kinds)} that image prefixes "
                               f"cannot be shared from; run with {FALLBACK_FLAG}")
        return layers

    @torch.inference_mode()
    def generate_ids_after(self, states: list, prefixes: list, suffixes: list) -> list:
        """Answer token ids for questions whose prefixes (all one length) are filled: states[i] is fill()'s
        result for prefixes[i], suffixes[i] the question's remaining prompt tokens."""
        length, width = len(prefixes[0]), max(len(suffix) for suffix in suffixes)
        input_ids = torch.full((len(suffixes), length + width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, (prefix, suffix) in enumerate(zip(prefixes, suffixes)):
            input_ids[row, :length] = torch.tensor(prefix, dtype=torch.long)
            input_ids[row, length + width - len(suffix):] = torch.tensor(suffix, dtype=torch.long)
            attention_mask[row, :length] = 1
            attention_mask[row, length + width - len(suffix):] = 1
        cache = self._batch_cache(states)
        with counting_tower_images(self.model, self.counts):  # stays 0 here: the images are in the cache
            output = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                                         cache=cache, generation_config=self.config, synced_gpus=self.synced_gpus)
        self.counts.questions += len(suffixes)
        return self.answer_ids(output[:, length + width:])

    @staticmethod
    def _batch_cache(states: list) -> DynamicCache:
        """The batch's cache: row i holds states[i]'s tensors. Rows that share a state are one expanded view,
        and each layer holds its tensors as they are, so the forward's first update (which concatenates the
        suffix to them) makes the batch's one copy; a DynamicCache built from data would copy them once more."""
        runs = []
        for state in states:
            if runs and runs[-1][0] is state:
                runs[-1][1] += 1
            else:
                runs.append([state, 1])
        cache = DynamicCache()
        for index in range(len(states[0])):
            keys, values = ([state[index][kv].expand(count, -1, -1, -1) for state, count in runs] for kv in (0, 1))
            layer = DynamicLayer()
            layer.lazy_initialization(keys[0], values[0])
            layer.keys = keys[0] if len(keys) == 1 else torch.cat(keys)
            layer.values = values[0] if len(values) == 1 else torch.cat(values)
            cache.layers.append(layer)
        return cache
