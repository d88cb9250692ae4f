"""`llava-ln inspect-data`: show processed samples with their label masks before spending GPU hours.

Takes training's model, vision-tower, data and template flags (no LLM weights are loaded:
tokenizer, vision config and image processor only) plus --num_samples N (the first N
records) and --format text|json. text: the rendered conversation, then every token with
supervised ones marked, and the supervised count. json: one object per line with
id, input_ids, labels (-100 where masked) and text.
"""
import json
import sys
from dataclasses import dataclass, field

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flags import parse_flags
from llava_ln.data.args import DataArguments
from llava_ln.data.build import build_train_dataset, load_data_components
from llava_ln.data.encode import IGNORE_INDEX
from llava_ln.data.skips import SkipSample
from llava_ln.model.args import ModelArguments

FORMATS = ("text", "json")


@dataclass
class InspectArguments:
    num_samples: int = field(default=3, metadata={"help": "How many records to show, from the first one."})
    format: str = field(default="text", metadata={"help": "text (for reading) or json (one object per line)."})
    seed: int = field(default=42, metadata={"help": "Seed of `file:N` subsampling (use training's --seed)."})


def token_lines(sample, tokenizer, image_token_id: int) -> list:
    """One line per token (`*` = supervised); each image's run of placeholders is one line."""
    ids, labels = sample.encoded.input_ids, sample.encoded.labels
    lines, position, image_number = [], 0, 0
    while position < len(ids):
        token_id = ids[position]
        if token_id == image_token_id:
            run = position
            while run < len(ids) and ids[run] == image_token_id:
                run += 1
            image_number += 1
            lines.append(f"{position:>6}   {token_id:>7}  '<image>' x{run - position} (image {image_number})")
            position = run
            continue
        mark = "*" if labels[position] != IGNORE_INDEX else " "
        lines.append(f"{position:>6} {mark} {token_id:>7}  {tokenizer.decode([token_id])!r}")
        position += 1
    return lines


def format_text(sample, tokenizer, image_token_id: int) -> str:
    encoded = sample.encoded
    image_positions = sum(1 for t in encoded.input_ids if t == image_token_id)
    header = [
        f"=== {sample.where}",
        f"tokens: {len(encoded)} ({image_positions} image positions, {len(sample.image_paths)} image(s)); "
        f"supervised: {encoded.supervised_count}",
        "--- rendered text",
        sample.text,
        "--- tokens (* = supervised)",
    ]
    return "\n".join(header + token_lines(sample, tokenizer, image_token_id)) + "\n"


def format_json(sample) -> str:
    return json.dumps({"id": sample.id, "input_ids": sample.encoded.input_ids, "labels": sample.encoded.labels,
                       "text": sample.text})


def main(argv) -> int:
    model_args, data_args, args = parse_flags(
        argv, (ModelArguments, DataArguments, InspectArguments), prog="llava-ln inspect-data",
        description="Print processed samples (rendered text, tokens, labels) without loading model weights.",
    )
    if args.format not in FORMATS:
        raise LlavaLnError(f"--format {args.format!r} is not one of {', '.join(FORMATS)}")
    if args.num_samples < 1:
        raise LlavaLnError(f"--num_samples must be at least 1, got {args.num_samples}")
    parts = load_data_components(model_args, data_args)
    dataset = build_train_dataset(data_args, parts.tokenizer, parts.image_processor, parts.template,
                                  parts.image_token_id, parts.num_image_tokens, args.seed)
    shown = skipped = 0
    for index in range(min(args.num_samples, len(dataset))):
        try:
            sample = dataset.process(index)
            dataset.load(index)  # also decodes the images, so a corrupt one is reported here
        except SkipSample as skip:
            print(f"skipped: {skip.message}", file=sys.stderr)
            skipped += 1
            continue
        print(format_text(sample, parts.tokenizer, parts.image_token_id) if args.format == "text"
              else format_json(sample), flush=True)
        shown += 1
    print(f"inspect-data: {shown} sample(s) shown, {skipped} skipped, {dataset.index.rejected} bad record(s) "
          f"left out while indexing, {len(dataset)} usable record(s) indexed", file=sys.stderr)
    return 0
