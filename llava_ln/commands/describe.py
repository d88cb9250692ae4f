"""`llava-ln describe`: parameter counts per group and what a tuning mode trains, from config alone.

The model is built on the meta device, so a folder holding only config.json files (no
weights) is enough to plan a 70B run on a laptop. The JSON also carries the static GPU
memory per device (weights, gradients, optimizer states) for --strategy and --num_gpus.
"""
import json
import logging
import os
from dataclasses import dataclass, field

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flags import parse_flags
from llava_ln.model.args import ModelArguments
from llava_ln.model.builder import build_mllm
from llava_ln.model.parts import unwrap
from llava_ln.training.memory_estimate import static_memory_per_gpu
from llava_ln.tuning.apply import apply_tune_mode
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.groups import count_by_group


@dataclass
class DescribeArguments:
    names: bool = field(default=False, metadata={"help": "Also list the trainable tensor names."})
    num_gpus: int = field(default=1, metadata={"help": "For the memory estimate: GPUs the run shards over."})
    strategy: str = field(default="torch", metadata={"help": "For the memory estimate: torch (plain / DDP), "
                                                              "zero2 or zero3."})
    bf16: bool = field(default=True, metadata={"help": "For the memory estimate: bf16 training (else fp32)."})


def _optional_tokenizer(args: ModelArguments):
    """The real tokenizer when the folder has one (its <image> id decides the vocab size)."""
    from llava_ln.model.tokens import load_tokenizer

    path = args.tokenizer_name_or_path or args.model_name_or_path
    has_files = os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    )
    return load_tokenizer(path) if has_files else None


def describe(model_args: ModelArguments, tuning_args: TuningArguments, with_names: bool = False,
             memory: DescribeArguments | None = None) -> dict:
    model, _ = build_mllm(model_args, _optional_tokenizer(model_args), on_meta=True)
    model = apply_tune_mode(model, tuning_args)
    totals = count_by_group(model)
    trainable_by_group = count_by_group(model, only_trainable=True)
    total, trainable = sum(totals.values()), sum(trainable_by_group.values())
    result = {
        "total": total,
        "trainable": trainable,
        "trainable_pct": round(100.0 * trainable / total, 6) if total else 0.0,
        "groups": trainable_by_group,
        "group_totals": totals,
        "tune_mode": tuning_args.tune_mode,
    }
    memory = memory or DescribeArguments()
    try:
        result["memory_gib_per_gpu"] = static_memory_per_gpu(total - trainable, trainable, memory.strategy,
                                                             memory.num_gpus, memory.bf16)
    except ValueError as err:
        raise LlavaLnError(f"memory estimate: {err}") from None
    if with_names:
        result["names"] = [n for n, p in unwrap(model).named_parameters() if p.requires_grad]
    return result


def main(argv) -> int:
    logging.getLogger("llava_ln").setLevel(logging.WARNING)
    model_args, tuning_args, describe_args = parse_flags(
        argv, (ModelArguments, TuningArguments, DescribeArguments), prog="llava-ln describe",
        description="Print parameter counts (total, trainable, per group) as one JSON object.",
    )
    print(json.dumps(describe(model_args, tuning_args, describe_args.names, describe_args)))
    return 0
