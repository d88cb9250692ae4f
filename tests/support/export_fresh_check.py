"""Test-side fresh-process check, independent of the exporter's own verifier: plain transformers only.

Usage: python -I export_fresh_check.py IMAGE FOLDER [FOLDER ...]; prints one JSON object
{folder: {"image": {...}, "text": {...}}} with prompt ids, greedy answers and last-position logits.
"""
import json
import sys

import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

QUESTIONS = {
    "image": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}],
    "text": [{"role": "user", "content": [{"type": "text", "text": "How many sides does a triangle have?"}]}],
}


def answer(folder: str, image) -> dict:
    processor = AutoProcessor.from_pretrained(folder)
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    results = {}
    for kind, messages in QUESTIONS.items():
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=[image] if kind == "image" else None, text=prompt, return_tensors="pt")
        with torch.no_grad():
            last = model(**inputs).logits[0, -1]
            output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        results[kind] = {"prompt_ids": inputs["input_ids"][0].tolist(), "last_logits": last.tolist(),
                         "answer": output[0, inputs["input_ids"].shape[1]:].tolist()}
    return results


if __name__ == "__main__":
    picture = Image.open(sys.argv[1]).convert("RGB")
    report = {folder: answer(folder, picture) for folder in sys.argv[2:]}
    if any(name.startswith("llava_ln") for name in sys.modules):
        raise SystemExit("llava_ln was imported")
    print(json.dumps(report))
