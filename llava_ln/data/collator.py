"""Stack samples into THE batch contract consumed by llava_ln.model.forward.multimodal_forward.

    input_ids       LongTensor[B, T]   right-padded with tokenizer.pad_token_id
    attention_mask  LongTensor[B, T]   1 on real tokens, 0 on padding
    labels          LongTensor[B, T]   -100 where not supervised and on padding
    pixel_values    FloatTensor[N, 3, H, W] every image of the batch in sample order, or None
    image_counts    LongTensor[B]      images per sample
    sample_ids      list[str]
"""
import torch

from llava_ln.core.errors import LlavaLnError
from llava_ln.data.encode import IGNORE_INDEX


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
        images = [s["pixel_values"] for s in samples if s["pixel_values"] is not None]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": torch.cat(images) if images else None,
            "image_counts": torch.tensor(
                [0 if s["pixel_values"] is None else s["pixel_values"].shape[0] for s in samples], dtype=torch.long
            ),
            "sample_ids": [s["id"] for s in samples],
        }
