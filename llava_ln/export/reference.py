"""Our side of every verification: probes through llava-ln's own pipeline and training forward.

Inputs are built exactly as training and evaluation build them (the run's conversation
template, one tokenizer call, `<image>` expanded to the tower's feature count, the image
loader with --image_aspect_ratio); logits come from multimodal_forward, the training
forward pass. Greedy decoding recomputes the whole sequence each step (no cache), so it
shares no code with transformers' generate() that the other side uses.
"""
import os
from dataclasses import dataclass

import torch

from llava_ln.data.encode import encode, special_prefix_ids
from llava_ln.data.images import ImageLoader, load_image_processor
from llava_ln.data.templates import Rendered, get_template
from llava_ln.model.forward import multimodal_forward
from llava_ln.model.parts import unwrap


@dataclass
class ProbeOutput:
    name: str
    input_ids: torch.Tensor  # [L]
    pixel_values: torch.Tensor | None  # [n, 3, H, W]
    logits: torch.Tensor  # [L, V] float32, the prompt's logits
    generated: list  # greedy token ids, stop token included
    step_logits: list  # [V] float32 logits each generated token was chosen from


class OurPipeline:
    """Turns probes into model inputs the way llava-ln's data code does."""

    def __init__(self, manifest, tokenizer, image_processor_path: str):
        self.template = get_template(manifest.conv_template, tokenizer)
        self.tokenizer = tokenizer
        self.loader = ImageLoader(load_image_processor(image_processor_path), manifest.image_aspect_ratio)
        self.prefix_ids = special_prefix_ids(tokenizer)

    def inputs(self, probe, image_dir: str, llava_config):
        prompt = self.template.render_prompt(list(probe.messages))
        encoded = encode(Rendered(prompt, ()), self.tokenizer, llava_config.image_token_id,
                         llava_config.image_seq_length, self.prefix_ids)
        pixel_values = self.loader([os.path.join(image_dir, f) for f in probe.images]) if probe.images else None
        return torch.tensor(encoded.input_ids, dtype=torch.long), pixel_values


def stop_token_ids(generation_config) -> set:
    eos = generation_config.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


@torch.no_grad()
def greedy_decode(model, input_ids, pixel_values, max_new_tokens: int, stop_ids: set, vocab_limit: int | None = None):
    """(prompt logits [L, V], generated ids, per-step logits) with the training forward, no KV cache."""
    device = next(unwrap(model).parameters()).device
    ids = input_ids[None].to(device)
    pixels = pixel_values.to(device) if pixel_values is not None else None
    counts = torch.tensor([0 if pixels is None else pixels.shape[0]], device=device)

    def last_logits(sequence):
        out = multimodal_forward(model, sequence, attention_mask=torch.ones_like(sequence),
                                 pixel_values=pixels, image_counts=counts)
        return out.logits[0].float()

    prompt_logits = last_logits(ids)
    row = prompt_logits[-1]
    generated, rows = [], []
    for step in range(max_new_tokens):
        scores = row if vocab_limit is None else row[:vocab_limit]
        rows.append(scores.cpu())
        token = int(scores.argmax())
        generated.append(token)
        if token in stop_ids or step + 1 == max_new_tokens:
            break
        ids = torch.cat([ids, torch.tensor([[token]], device=device)], dim=1)
        row = last_logits(ids)[-1]
    limit = prompt_logits if vocab_limit is None else prompt_logits[:, :vocab_limit]
    return limit.cpu(), generated, rows


def run_probes(model, pipeline: OurPipeline, probes, image_dir: str, max_new_tokens: int, stop_ids: set,
               vocab_limit: int | None = None) -> list:
    """Our outputs for every probe."""
    config = unwrap(model).config
    outputs = []
    for probe in probes:
        input_ids, pixel_values = pipeline.inputs(probe, image_dir, config)
        logits, generated, rows = greedy_decode(model, input_ids, pixel_values, max_new_tokens, stop_ids, vocab_limit)
        outputs.append(ProbeOutput(probe.name, input_ids, pixel_values, logits, generated, rows))
    return outputs
