"""Numeric training flags checked before anything is loaded: one line naming the flag, never a traceback.

argparse turns "nan", "inf" and "-1" into valid floats and ints, and torch, numpy or the scheduler
would reject them much later with a traceback (a negative learning rate in AdamW, a NaN epoch
count in math.ceil) or, worse, accept them (an infinite learning rate trains NaNs). The rules:
learning rates and weight decay finite and >= 0, epochs finite, intervals finite, ratios in
their range, Adam's betas in [0, 1), the seed a valid numpy seed, counts not negative.
"""
import math
import os

from llava_ln.core.errors import LlavaLnError

MAX_SEED = 2**32 - 1


def _finite(flag: str, value, minimum: float | None = None, maximum: float | None = None,
            open_max: bool = False, positive: bool = False) -> None:
    if value is None:
        return
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LlavaLnError(f"{flag} {value}: must be a finite number")
    if positive and value <= 0:
        raise LlavaLnError(f"{flag} {value}: must be > 0")
    if minimum is not None and value < minimum:
        raise LlavaLnError(f"{flag} {value}: must be >= {minimum:g}")
    if maximum is not None and (value >= maximum if open_max else value > maximum):
        raise LlavaLnError(f"{flag} {value}: must be {'<' if open_max else '<='} {maximum:g}")


def check_numeric_flags(args, tuning_args) -> None:
    """args: TrainingArguments; tuning_args: TuningArguments (its learning rates and LoRA numbers)."""
    for flag, value in (("--learning_rate", args.learning_rate), ("--mm_projector_lr", tuning_args.mm_projector_lr),
                        ("--norm_lr", tuning_args.norm_lr), ("--weight_decay", args.weight_decay),
                        ("--max_grad_norm", args.max_grad_norm), ("--adam_epsilon", args.adam_epsilon),
                        ("--warmup_steps", args.warmup_steps), ("--dataloader_num_workers", args.dataloader_num_workers),
                        ("--max_nonfinite_steps", args.max_nonfinite_steps)):
        _finite(flag, value, minimum=0)
    _finite("--num_train_epochs", args.num_train_epochs)
    _finite("--warmup_ratio", args.warmup_ratio, minimum=0, maximum=1)
    _finite("--adam_beta1", args.adam_beta1, minimum=0, maximum=1, open_max=True)
    _finite("--adam_beta2", args.adam_beta2, minimum=0, maximum=1, open_max=True)
    _finite("--save_steps", args.save_steps)
    _finite("--logging_steps", args.logging_steps)
    _finite("--seed", args.seed, minimum=0, maximum=MAX_SEED)
    _finite("--lora_dropout", tuning_args.lora_dropout, minimum=0, maximum=1, open_max=True)
    # LoRA's rank and alpha matter only to --tune_mode lora, but a nonsensical value is wrong everywhere.
    _finite("--lora_r", tuning_args.lora_r, positive=True)
    _finite("--lora_alpha", tuning_args.lora_alpha, positive=True)
    if os.path.lexists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise LlavaLnError(f"--output_dir {args.output_dir}: exists and is not a folder")
