"""What a run writes into OUTPUT_DIR before its first step, so it can be checked and reproduced.

  run_config.json            every flag, as resolved (precision, world size, DeepSpeed config with
                             its "auto" values filled, model spec, step counts)
  trainable_parameters.txt   the per-group table of total and trainable parameters
  optimizer_groups.json      each optimizer group as the (possibly DeepSpeed-wrapped) optimizer
                             holds it: lr, weight decay, betas, and the tensors in it
"""
import os
from dataclasses import asdict

from llava_ln.core.atomic import atomic_path, write_json_atomic
from llava_ln.training.optimizer import describe_param_groups

RUN_CONFIG = "run_config.json"
TRAINABLE_TABLE = "trainable_parameters.txt"
OPTIMIZER_GROUPS = "optimizer_groups.json"


def resolved_config(model_args, data_args, tuning_args, args, *, context, precision, spec, strategy,
                    total_steps: int, steps_per_epoch: int, dataset_size: int) -> dict:
    return {
        "model": asdict(model_args),
        "data": asdict(data_args),
        "tuning": asdict(tuning_args),
        "training": asdict(args),
        "resolved": {
            "world_size": context.world_size,
            "device": str(context.device),
            "backend": context.backend,
            "precision": precision.name,
            "strategy": type(strategy).__name__,
            "deepspeed_config": getattr(strategy, "config", None),
            "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps
            * context.world_size,
            "dataset_size": dataset_size,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps,
            "spec": spec.to_dict(),
        },
    }


def write_run_info(output_dir: str, config: dict, trainable_table: str, optimizer, handed_groups: list[dict],
                   names_by_id: dict) -> None:
    """Rank 0 only. trainable_table: format_trainable_table(model), taken before ZeRO-3 partitions it."""
    write_json_atomic(os.path.join(output_dir, RUN_CONFIG), config)
    with atomic_path(os.path.join(output_dir, TRAINABLE_TABLE), ".txt") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(trainable_table + "\n")
    write_json_atomic(os.path.join(output_dir, OPTIMIZER_GROUPS),
                      describe_param_groups(optimizer, handed_groups, names_by_id))
