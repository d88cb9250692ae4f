"""Commands for before training: `llava-ln describe`, `llava-ln inspect-data`, `llava-ln toy`.

describe: parameter counts per group and what a tuning mode trains, from config alone (a multimodal
--model_name_or_path, as training takes it, included). The model is
built on the meta device, so a folder holding only config.json files (no weights) is enough to plan
a 70B run on a laptop. The JSON also carries the static GPU memory per device (weights, gradients,
optimizer states) for --strategy torch|zero2|zero3 and --num_gpus, and, given
--per_device_train_batch_size (and --model_max_length, --memory_budget_gib, --gradient_checkpointing,
--kernels), the recompute decision training would make and its estimated peak (training.memory.recompute);
with --packing --max_tokens_per_batch N it plans packed micro-batches of N tokens (in rows of at most
--model_max_length) instead, and refuses --per_device_train_batch_size beside it as train does. With
--bits 4|8 (training's flags) the block linears count at their quantized size, statistics included,
in both, and `quantization` gives the quantized parameters, their bytes and bytes per parameter.

inspect-data: processed samples with their label masks, before spending GPU hours. Takes training's
model, vision-tower, data and template flags (no LLM weights are loaded: tokenizer, vision config
and image processor only) plus --num_samples N (the first N records) and --format text|json: id,
input_ids, labels (-100 where masked) and text.

toy: write the toy world (images, training data, eval sets, tiny backbones) into --out.
"""
import json
import logging
import os
import sys
import time

import torch

from llava_ln.checkpoint.run_start import build_start_model, resolve_start
from llava_ln.commands.args import DESCRIBE_FLAGS, INSPECT_FLAGS, TOY_FLAGS, DescribeArguments
from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flags import parse_command_flags
from llava_ln.data.args import DataArguments
from llava_ln.data.dataset import SkipSample, build_train_dataset, load_data_components
from llava_ln.model.args import ModelArguments
from llava_ln.model.quantize import quant_settings, quantized_footprint
from llava_ln.training.args import gradient_checkpointing_choice
from llava_ln.training.memory.policy import GIB, static_memory_per_gpu
from llava_ln.training.memory.recompute import decide_for_model_args, default_budget_gib
from llava_ln.training.packing import check_packing_combination, check_packing_model, micro_batch_shape
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.modes import get_tune_mode, refuse_on_quantized_base
from llava_ln.tuning.plan import apply_tune_mode


def given_flags(argv) -> set:
    """Names of the flags on the command line (they win over what a multimodal checkpoint decides)."""
    return {token[2:].split("=")[0] for token in argv if token.startswith("--")}


def _optional_tokenizer(args: ModelArguments):
    """The real tokenizer when the folder has one (its <image> id decides the vocab size)."""
    from llava_ln.model.backbones import load_tokenizer

    path = args.tokenizer_name_or_path or args.model_name_or_path
    has_files = os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    )
    return load_tokenizer(path) if has_files else None


def describe(model_args: ModelArguments, tuning_args: TuningArguments, with_names: bool = False,
             memory: DescribeArguments | None = None) -> dict:
    quantization = quant_settings(model_args.bits, model_args.quant_type, model_args.double_quant)
    if quantization is not None:
        refuse_on_quantized_base(get_tune_mode(tuning_args.tune_mode), quantization.bits)
    model, _ = build_start_model(model_args, _optional_tokenizer(model_args), torch.float32, on_meta=True)
    if memory is not None and memory.packing:
        check_packing_model(model)  # train's refusal: no memory plan for a run that cannot start
    footprint = quantized_footprint(model, quantization)  # before LoRA wraps the block linears
    model, plan = apply_tune_mode(model, tuning_args)
    counts = plan.counts()
    totals = {group: c["total"] for group, c in counts.items()}
    trainable_by_group = {group: c["trainable"] for group, c in counts.items()}
    total, trainable = sum(totals.values()), sum(trainable_by_group.values())
    result = {
        "total": total,
        "trainable": trainable,
        "trainable_pct": round(100.0 * trainable / total, 6) if total else 0.0,
        "groups": trainable_by_group,
        "group_totals": totals,
        "tune_mode": tuning_args.tune_mode,
        "vision_tune_mode": tuning_args.vision_tune_mode,
    }
    if quantization is not None:
        result["quantization"] = {**quantization.to_dict(), **footprint.to_dict()}
    memory = memory or DescribeArguments()
    try:
        result["memory_gib_per_gpu"] = static_memory_per_gpu(total - trainable, trainable, memory.strategy,
                                                             num_gpus=memory.num_gpus, bf16=memory.bf16,
                                                             quantized_params=footprint.params,
                                                             quantized_bytes=footprint.bytes)
    except ValueError as err:
        raise LlavaLnError(f"memory estimate: {err}") from None
    if with_names:
        result["names"] = [n for n in plan.group_of if n in plan.trainable]
    memory.check_packing_flags()
    # The same refusals as train's: a batch size given beside --packing would be silently ignored here.
    check_packing_combination(memory, DataArguments(), {"per_device_train_batch_size"}
                              if memory.per_device_train_batch_size is not None else set())
    if memory.per_device_train_batch_size or memory.packing:
        result["recompute"] = describe_recompute(model_args, tuning_args, memory)
    return result


def describe_recompute(model_args: ModelArguments, tuning_args: TuningArguments, memory: DescribeArguments) -> dict:
    """The --gradient_checkpointing decision and its estimated peak (training.memory.recompute), with the peak per
    choice."""
    requested = gradient_checkpointing_choice(memory.gradient_checkpointing)
    backend = "none" if memory.kernels == "none" else "torch"  # liger's kernels save the same or less
    budget = memory.memory_budget_gib if memory.memory_budget_gib is not None else default_budget_gib("cuda")
    rows, tokens_per_row = micro_batch_shape(memory, memory.model_max_length)
    decision, step = decide_for_model_args(
        requested, model_args, tuning_args, kernels_backend=backend,
        dtype=torch.bfloat16 if memory.bf16 else torch.float32, batch_size=rows,
        seq=tokens_per_row, budget_gib=budget, strategy=memory.strategy, num_gpus=memory.num_gpus,
        tokenizer=_optional_tokenizer(model_args))
    counts = sorted({0, step.blocks // 4, step.blocks // 2, 3 * step.blocks // 4, step.blocks})
    return {**decision.as_dict(), "kernels": backend, "micro_batch": {"rows": rows, "tokens_per_row": tokens_per_row,
                                                                       "packed": memory.packing},
            "estimated_peak_gib_by_checkpointed_blocks": {str(c): round(step.peak(c) / GIB, 4) for c in counts}}


def describe_main(argv) -> int:
    logging.getLogger("llava_ln").setLevel(logging.WARNING)
    model_args, tuning_args, describe_args = parse_command_flags(argv, DESCRIBE_FLAGS)
    resolve_start(model_args, DataArguments(), given_flags(argv))  # a multimodal checkpoint decides its parts
    print(json.dumps(describe(model_args, tuning_args, describe_args.names, describe_args)))
    return 0


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


def inspect_data_main(argv) -> int:
    model_args, data_args, args = parse_command_flags(argv, INSPECT_FLAGS)
    resolve_start(model_args, data_args, given_flags(argv))  # a multimodal checkpoint decides tower and template
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


def toy_main(argv) -> int:
    from llava_ln.toy.generate import write_toy_world

    (args,) = parse_command_flags(argv, TOY_FLAGS)
    started = time.time()
    manifest = write_toy_world(args.out, seed=args.seed, scale=args.scale, backbones=args.backbones)
    summary = {"out": args.out, "seconds": round(time.time() - started, 1), **manifest["counts"]}
    print(json.dumps(summary))
    return 0
