"""Flags for the tuning mode, LoRA and per-group learning rates."""
from dataclasses import dataclass, field
from typing import Optional

from llava_ln.core.flag_domains import Domain
from llava_ln.tuning.modes import TUNE_MODES

# A learning rate: 0 freezes the group (its tensors still count as trainable).
LEARNING_RATES = Domain(ge=0)


@dataclass(kw_only=True)
class TuningArguments:
    tune_mode: str = field(
        default="ln",
        metadata={"help": " | ".join(TUNE_MODES) + " (what each trains: README.md, tuning/modes.py)."},
    )
    tune_embeddings: Optional[bool] = field(
        default=None,
        metadata={"help": "Override whether input embeddings and output head train (default: as the mode says)."},
    )
    # LoRA's numbers matter only to --tune_mode lora, but a nonsensical value is wrong everywhere.
    lora_r: int = field(default=128, metadata={"help": "LoRA rank.", "domain": Domain(ge=1)})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha.", "domain": Domain(ge=1)})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout.", "domain": Domain(ge=0, lt=1)})
    mm_projector_lr: Optional[float] = field(
        default=None, metadata={"help": "Learning rate of the connector (default: --learning_rate).",
                                "domain": LEARNING_RATES}
    )
    norm_lr: Optional[float] = field(
        default=None,
        metadata={"help": "Learning rate of LLM norm weights (default: --learning_rate). Norm-only tuning wants "
                  "rates orders of magnitude above 2e-5.", "domain": LEARNING_RATES},
    )
    # ---- LLaVA's --freeze_mm_mlp_adapter (training/llava_flags.py) ----
    tune_connector: Optional[bool] = field(
        default=None,
        metadata={"help": "Override whether the connector trains (default: as the mode says); LLaVA's "
                  "--freeze_mm_mlp_adapter True is --tune_connector false."},
    )
