"""Pretrain the toy vision tower: a tiny CLIP ViT trained contrastively on toy images and texts.

The image side is a transformers CLIPVisionModel plus a projection (what gets saved is the
CLIPVisionModel and a CLIPImageProcessor, the part LLaVA uses). The text side is a small
transformer over the toy tokenizer's ids that exists only for this training. Texts are
detailed descriptions (which state every object's place) or brief captions, so matching
them forces the tower to encode colour, shape, count and position.
"""
import math
import time

import numpy as np
import torch
from torch import nn

from llava_ln.core.pretrained import load_pretrained
from llava_ln.toy.backbones.spec import CLIP_MEAN, CLIP_STD, VISION_CONFIG, image_processor
from llava_ln.toy.language import brief_caption, detailed_description
from llava_ln.toy.world import render_scene, sample_scene

MAX_TEXT_TOKENS = 96


class TextEncoder(nn.Module):
    """Token embeddings + positions -> a small transformer -> masked mean pool -> projection."""

    def __init__(self, vocab_size: int, width: int, out_dim: int, layers: int = 2, heads: int = 4):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Parameter(torch.zeros(MAX_TEXT_TOKENS, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.project = nn.Linear(width, out_dim, bias=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.tokens(ids) + self.positions[: ids.shape[1]]
        hidden = self.encoder(hidden, src_key_padding_mask=mask == 0)
        hidden = self.norm(hidden)
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return self.project(pooled)


def pixels(images) -> torch.Tensor:
    """CLIP normalisation of 64 px RGB images (what the saved CLIPImageProcessor does to them)."""
    array = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    mean, std = np.asarray(CLIP_MEAN, dtype=np.float32), np.asarray(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(((array - mean) / std).transpose(0, 3, 1, 2).copy())


def _texts_to_ids(tokenizer, texts: list[str]):
    encoded = [tokenizer(t).input_ids[:MAX_TEXT_TOKENS] for t in texts]
    width = max(len(e) for e in encoded)
    ids = torch.zeros((len(texts), width), dtype=torch.long)
    mask = torch.zeros((len(texts), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return ids, mask


class SceneBatches(torch.utils.data.IterableDataset):
    """Freshly drawn (pixels, text ids, text mask) batches; worker w of n makes batches w, w+n, ...

    Each worker draws from its own stream (seed, worker id), so a run is reproducible for a
    given number of workers, and rendering keeps up with a GPU when there are several.
    """

    def __init__(self, seed: int, batch_size: int, steps: int, tokenizer_dir: str):
        self.seed, self.batch_size, self.steps, self.tokenizer_dir = seed, batch_size, steps, tokenizer_dir

    def __iter__(self):
        from transformers import AutoTokenizer

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, worker])
        tokenizer = load_pretrained(AutoTokenizer, self.tokenizer_dir)
        for _ in range(worker, self.steps, workers):
            scenes = [sample_scene(rng) for _ in range(self.batch_size)]
            texts = [detailed_description(s, rng) if rng.random() < 0.7 else brief_caption(s, rng) for s in scenes]
            yield (pixels([render_scene(s) for s in scenes]), *_texts_to_ids(tokenizer, texts))


def retrieval_accuracy(vision, vision_proj, text_encoder, tokenizer, seed: int, size: int = 256,
                       device: str = "cpu") -> float:
    """Image->text top-1 accuracy among `size` detailed descriptions of fresh scenes."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(size)]
    texts = [detailed_description(s, rng) for s in scenes]
    with torch.no_grad():
        image_emb = vision_proj(vision(pixel_values=pixels([render_scene(s) for s in scenes]).to(device)).pooler_output)
        text_emb = text_encoder(*(t.to(device) for t in _texts_to_ids(tokenizer, texts)))
    sims = nn.functional.normalize(image_emb, dim=-1) @ nn.functional.normalize(text_emb, dim=-1).T
    return (sims.argmax(1).cpu() == torch.arange(size)).float().mean().item()


def pretrain_vision(out_dir: str, tokenizer_dir: str, seed: int = 0, steps: int = 800, batch_size: int = 128,
                    learning_rate: float = 2e-3, device: str = "cpu", workers: int = 0, eval_size: int = 256,
                    log=print) -> dict:
    from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel

    started = time.time()
    tokenizer = load_pretrained(AutoTokenizer, tokenizer_dir)
    torch.manual_seed(seed)
    config = CLIPVisionConfig(**VISION_CONFIG)
    vision = CLIPVisionModel(config)
    vision.config._attn_implementation = "eager" if device == "cpu" else "sdpa"
    vision_proj = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
    text_encoder = TextEncoder(len(tokenizer), config.hidden_size, config.projection_dim)
    for module in (vision, vision_proj, text_encoder):
        module.to(device)
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07), device=device))
    params = list(vision.parameters()) + list(vision_proj.parameters()) + list(text_encoder.parameters()) + [logit_scale]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.05, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup)))
    )
    batches = torch.utils.data.DataLoader(SceneBatches(seed + 10, batch_size, steps, tokenizer_dir), batch_size=None,
                                          num_workers=workers)
    targets = torch.arange(batch_size, device=device)
    for step, (pixel_values, ids, mask) in enumerate(batches):
        ids, mask = ids.to(device), mask.to(device)
        image_emb = nn.functional.normalize(vision_proj(vision(pixel_values=pixel_values.to(device)).pooler_output), dim=-1)
        text_emb = nn.functional.normalize(text_encoder(ids, mask), dim=-1)
        logits = logit_scale.exp().clamp(max=100) * image_emb @ text_emb.T
        loss = (nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.T, targets)) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == steps - 1:
            log(f"vision step {step}/{steps} loss {loss.item():.4f} ({time.time() - started:.0f}s)")

    vision.eval()
    text_encoder.eval()
    accuracy = retrieval_accuracy(vision, vision_proj, text_encoder, tokenizer, seed + 11, size=eval_size,
                                  device=device)
    log(f"vision image->text retrieval top-1 among {eval_size}: {accuracy:.3f}")
    vision.config._attn_implementation = "sdpa"
    vision.to("cpu")
    vision.save_pretrained(out_dir)
    image_processor().save_pretrained(out_dir)
    return {"retrieval_top1": accuracy, "retrieval_candidates": eval_size, "steps": steps,
            "seconds": round(time.time() - started, 1)}
