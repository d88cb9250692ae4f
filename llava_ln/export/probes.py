"""The probes every verification runs, and our side of it: llava-ln's own pipeline and training forward.

Probe inputs are a few deterministic images and conversations. The images are drawn, not shipped:
one wide and one tall picture (so pad-to-square and centre-crop really act), with shapes and
colours. The same probes are fed through llava-ln's pipeline and through the other side (an
exported folder's processor, a PEFT adapter, a folded LoRA); a difference anywhere shows up in
the comparison (verify.py).

Our side builds inputs exactly as training and evaluation build them (the run's conversation
template, one tokenizer call, `<image>` expanded to the tower's feature count, the image loader
with --image_aspect_ratio); logits come from multimodal_forward, the training forward pass.
Greedy decoding recomputes the whole sequence each step (no cache), so it shares no code with
transformers' generate() that the other side uses.
"""
import os
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw

from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.data.encode import encode, special_prefix_ids
from llava_ln.data.images import ImageLoader, load_image_processor
from llava_ln.data.templates import Rendered, get_template, stop_token_ids
from llava_ln.model.forward import image_features, multimodal_forward
from llava_ln.model.parts import unwrap


@dataclass(frozen=True)
class Probe:
    name: str
    messages: tuple  # (("user", text), ("assistant", text), ..., ("user", text)); <image> written in the text
    images: tuple  # image file names, one per <image>


def draw_probe_images(directory: str) -> dict:
    """Write the probe images as PNG (lossless) into directory; returns name -> path."""
    os.makedirs(directory, exist_ok=True)
    wide = Image.new("RGB", (48, 30), (30, 140, 200))
    draw = ImageDraw.Draw(wide)
    draw.rectangle((4, 6, 20, 24), fill=(220, 40, 40))
    draw.ellipse((26, 4, 44, 22), fill=(250, 230, 60))
    tall = Image.new("RGB", (30, 44), (240, 240, 235))
    draw = ImageDraw.Draw(tall)
    draw.polygon([(15, 4), (27, 26), (3, 26)], fill=(40, 170, 60))
    draw.rectangle((8, 30, 22, 40), fill=(90, 40, 160))
    paths = {}
    for name, image in (("wide.png", wide), ("tall.png", tall)):
        paths[name] = os.path.join(directory, name)
        image.save(paths[name])
    return paths


def default_probes(template_name: str) -> list:
    """Image questions, a follow-up turn and a text-only prompt (stage-1 `plain` gets images only)."""
    image_probes = [
        Probe("wide_image", (("user", f"{IMAGE_TOKEN}\nWhat is in the image?"),), ("wide.png",)),
        Probe("tall_image", (("user", f"{IMAGE_TOKEN}\nDescribe the shapes and their colors."),), ("tall.png",)),
    ]
    if template_name == "plain":
        return image_probes
    follow_up = Probe("follow_up", (
        ("user", f"{IMAGE_TOKEN}\nWhat is in the image?"),
        ("assistant", "A red square and a yellow circle."),
        ("user", "What color is the background?"),
    ), ("wide.png",))
    text_only = Probe("text_only", (("user", "How many sides does a triangle have?"),), ())
    return image_probes + [follow_up, text_only]


def hf_messages(probe: Probe, as_parts: bool = True) -> list:
    """The probe in transformers' chat format: content parts ({"type": "image"} / text) or plain strings."""
    messages = []
    for role, text in probe.messages:
        if not as_parts:
            messages.append({"role": role, "content": text})
            continue
        parts = []
        for index, piece in enumerate(text.split(f"{IMAGE_TOKEN}\n")):
            if index > 0:
                parts.append({"type": "image"})
            if piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": role, "content": parts})
    return messages


# ---- our side: llava-ln's pipeline ----

@dataclass
class ProbeOutput:
    name: str
    input_ids: torch.Tensor  # [L]
    pixel_values: torch.Tensor | None  # [n, 3, H, W]
    logits: torch.Tensor  # [L, V] float32, the prompt's logits
    generated: list  # greedy token ids, stop token included
    step_logits: list  # [V] float32 logits each generated token was chosen from
    image_features: torch.Tensor | None = None  # [n, tokens, hidden] float32: the connector's output


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


@torch.no_grad()
def probe_image_features(model, pixel_values) -> torch.Tensor | None:
    """The tower + connector output for a probe's images (compared on its own: a tuned tower written wrong
    shows here even where the logits happen to hide it)."""
    if pixel_values is None:
        return None
    device = next(unwrap(model).parameters()).device
    return image_features(model, pixel_values.to(device)).float().cpu()


def run_probes(model, pipeline: OurPipeline, probes, image_dir: str, max_new_tokens: int, stop_ids: set,
               vocab_limit: int | None = None) -> list:
    """Our outputs for every probe."""
    config = unwrap(model).config
    outputs = []
    for probe in probes:
        input_ids, pixel_values = pipeline.inputs(probe, image_dir, config)
        logits, generated, rows = greedy_decode(model, input_ids, pixel_values, max_new_tokens, stop_ids, vocab_limit)
        outputs.append(ProbeOutput(probe.name, input_ids, pixel_values, logits, generated, rows,
                                   probe_image_features(model, pixel_values)))
    return outputs


class ProbeRunner:
    """Our outputs for a fixed set of probes on any model built from one checkpoint (LoadedModel)."""

    def __init__(self, loaded, probes: list, image_dir: str, max_new_tokens: int, vocab_limit: int | None = None):
        self.pipeline = OurPipeline(loaded.manifest, loaded.tokenizer, loaded.image_processor_path)
        self.probes, self.image_dir, self.max_new_tokens, self.vocab_limit = probes, image_dir, max_new_tokens, vocab_limit
        self.stops = set(stop_token_ids(loaded.tokenizer, self.pipeline.template))

    def __call__(self, model) -> list:
        return run_probes(model, self.pipeline, self.probes, self.image_dir, self.max_new_tokens, self.stops,
                          self.vocab_limit)
