"""Benchmark (not a test): data-loading throughput, in samples/s, with 0 and 2 DataLoader workers.

Writes a few hundred toy-like images (coloured shapes on a plain background, varied aspect
ratios) and LLaVA-format records to a temp folder, or uses an existing toy world with
--toy_dir, then times full passes of DataLoader(LlavaDataset) + DataCollator with a
CLIP-336 image processor (576 image tokens, as in LLaVA-1.5) and a sentencepiece tokenizer
trained on the spot on the records' text (the toy LLM's tokenizer recipe). Also times indexing
(validation of every record) of a large JSON file.

    python -m bench.data_loading [--images 300] [--batch_size 8] [--workers 0,2]
"""
import argparse
import json
import os
import random
import tempfile
import time

import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader
from transformers import CLIPImageProcessor

from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.core.processes import forward_stop_signals
from llava_ln.data.args import DataArguments
from llava_ln.data.dataset import build_train_dataset
from llava_ln.data.encode import DataCollator
from llava_ln.data.templates import get_template
from llava_ln.model.backbones import load_tokenizer
from llava_ln.toy.backbones.pretrain_llm import train_tokenizer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
TOKENIZER_VOCAB = 420

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")


def draw_scene(path: str, rng: random.Random) -> str:
    width, height = rng.choice([(320, 240), (240, 320), (400, 300), (300, 300), (480, 270)])
    image = Image.new("RGB", (width, height), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    described = []
    for _ in range(rng.randint(1, 5)):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        x, y, r = rng.randint(20, width - 20), rng.randint(20, height - 20), rng.randint(8, 30)
        box = (x - r, y - r, x + r, y + r)
        if shape == "circle":
            draw.ellipse(box, fill=COLOURS[colour])
        elif shape == "square":
            draw.rectangle(box, fill=COLOURS[colour])
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=COLOURS[colour])
        described.append(f"a {colour} {shape}")
    image.save(path)
    return ", ".join(described)


def write_world(root: str, n_images: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    records = []
    for k in range(n_images):
        name = f"images/scene_{k:04d}.png"
        scene = draw_scene(os.path.join(root, name), rng)
        turns = [{"from": "human", "value": f"{IMAGE_TOKEN}\nWhat shapes are in the image?"},
                 {"from": "gpt", "value": f"The image shows {scene}."},
                 {"from": "human", "value": "How many shapes are there?"},
                 {"from": "gpt", "value": f"There are {scene.count(',') + 1} shapes."}]
        records.append({"id": f"scene-{k}", "image": name, "conversations": turns})
        if k % 4 == 0:  # some text-only samples, as in LLaVA-Instruct mixes
            text_turns = [{"from": "human", "value": "Name a colour."},
                          {"from": "gpt", "value": rng.choice(list(COLOURS))}]
            records.append({"id": f"text-{k}", "conversations": text_turns})
    path = os.path.join(root, "data.json")
    with open(path, "w") as handle:
        json.dump(records, handle)
    return path


def write_tokenizer(data_path: str, folder: str) -> str:
    """A sentencepiece tokenizer trained on the records' text, as the toy LLM's is trained on its corpus."""
    with open(data_path, encoding="utf-8") as handle:
        records = json.load(handle)
    texts = [turn["value"].replace(IMAGE_TOKEN, "") for record in records for turn in record["conversations"]]
    train_tokenizer(texts, folder, vocab_size=TOKENIZER_VOCAB)
    return folder


def time_passes(dataset, collator, batch_size: int, workers: int, passes: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collator,
                        generator=torch.Generator().manual_seed(0), persistent_workers=workers > 0)
    next(iter(loader))  # warm-up: worker start, first image decode
    start, samples = time.perf_counter(), 0
    for _ in range(passes):
        for batch in loader:
            samples += len(batch["sample_ids"])
    return samples / (time.perf_counter() - start)


def time_indexing(root: str, records: int, tokenizer, processor, template) -> float:
    with open(os.path.join(root, "data.json")) as handle:
        base = json.load(handle)
    big = [dict(base[k % len(base)], id=f"r{k}") for k in range(records)]
    path = os.path.join(root, "big.json")
    with open(path, "w") as handle:
        json.dump(big, handle)
    start = time.perf_counter()
    build_train_dataset(DataArguments(data_path=path), tokenizer, processor, template,
                        tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), 576, seed=0)
    return records / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--toy_dir", default=None, help="use DIR/data/<file>.json of an existing toy world instead")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--index_records", type=int, default=50000)
    args = parser.parse_args()
    with forward_stop_signals(), tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "images"))
        data_path = args.toy_dir or write_world(root, args.images)
        tokenizer = load_tokenizer(write_tokenizer(data_path, os.path.join(root, "tokenizer")))
        processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        template = get_template("vicuna_v1", tokenizer)
        dataset = build_train_dataset(DataArguments(data_path=data_path), tokenizer, processor, template,
                                      tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), 576, seed=0)
        print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, torch threads {torch.get_num_threads()}")
        print(f"dataset: {len(dataset)} samples ({int(dataset.has_image.sum())} with an image), CLIP 336px, "
              f"576 image tokens, vicuna_v1, batch size {args.batch_size}")
        for workers in (int(w) for w in args.workers.split(",")):
            rate = time_passes(dataset, DataCollator(tokenizer), args.batch_size, workers, args.passes)
            print(f"workers={workers}: {rate:.1f} samples/s")
        if args.index_records:
            rate = time_indexing(root, args.index_records, tokenizer, processor, template)
            print(f"indexing {args.index_records} records (parse + validate + image-file check): {rate:,.0f} records/s")


if __name__ == "__main__":
    main()
