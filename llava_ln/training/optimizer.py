"""AdamW over the tuning module's named parameter groups, and the learning-rate schedule.

The groups (tuning/optimizer_groups.py) carry their own "lr" and "weight_decay", so the
connector and norm rates (--mm_projector_lr, --norm_lr) survive any wrapper: torch and
DeepSpeed optimizers keep a group's own values over the constructor defaults. The schedule
is transformers' get_scheduler: a LambdaLR that scales every group's own base rate by one
factor, so the ratios between groups hold for the whole run.
"""
import torch
from transformers import get_scheduler

from llava_ln.core.errors import LlavaLnError
from llava_ln.tuning.optimizer_groups import optimizer_param_groups


def build_param_groups(model, args, tuning_args) -> list[dict]:
    groups = optimizer_param_groups(model, args.learning_rate, args.weight_decay,
                                    tuning_args.mm_projector_lr, tuning_args.norm_lr)
    if not groups:
        raise LlavaLnError(f"--tune_mode {tuning_args.tune_mode}: no trainable parameter reached the optimizer")
    return groups


def make_adamw(param_groups: list[dict], args, device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        param_groups,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
        fused=device.type == "cuda",
    )


def warmup_steps_for(args, total_steps: int) -> int:
    return args.warmup_steps if args.warmup_steps > 0 else int(round(args.warmup_ratio * total_steps))


def make_scheduler(optimizer, args, total_steps: int):
    try:
        return get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup_steps_for(args, total_steps),
                             num_training_steps=total_steps)
    except ValueError as err:
        raise LlavaLnError(f"--lr_scheduler_type {args.lr_scheduler_type!r}: {err}") from None


def describe_param_groups(optimizer, handed_groups: list[dict], names_by_id: dict) -> list[dict]:
    """What the optimizer really holds, per group: lr, weight decay, betas, plus its tensors.

    lr/weight_decay/betas are read back from the (possibly DeepSpeed-wrapped) optimizer; the
    tensor list comes from the groups handed over, since ZeRO replaces a group's params by
    flat partitions. Groups are matched by their "name".
    """
    handed = {group["name"]: group for group in handed_groups}
    rows = []
    for group in optimizer.param_groups:
        tensors = handed.get(group.get("name"), {}).get("params", [])
        rows.append({
            "name": group.get("name"),
            "lr": group["lr"],
            "weight_decay": group.get("weight_decay"),
            "betas": list(group.get("betas", ())),
            "eps": group.get("eps"),
            "tensors": [names_by_id[id(p)] for p in tensors],
            "numel": sum(getattr(p, "ds_numel", p.numel()) for p in tensors),
        })
    return rows
