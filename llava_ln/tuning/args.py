"""Flags for the tuning mode, LoRA, the vision tower's tuning and per-group learning rates."""
from dataclasses import dataclass, field
from typing import Optional

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import Domain
from llava_ln.tuning.modes import TUNE_MODES, get_tune_mode
from llava_ln.tuning.vision_modes import FROZEN, VISION_TUNE_MODES, get_vision_tune_mode

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
    # ---- the vision tower (tuning/vision_modes.py, tuning/tower_scope.py) ----
    vision_tune_mode: str = field(
        default=FROZEN,
        metadata={"help": " | ".join(VISION_TUNE_MODES) + ": what trains in the vision tower, independent of "
                  "--tune_mode (" + "; ".join(f"{m.name}: {m.summary}" for m in VISION_TUNE_MODES.values())
                  + "). Only tower tensors that can change the selected image features ever train."},
    )
    vision_tune_last_layers: int = field(
        default=0,
        metadata={"help": "Train only the last K encoder layers the selected feature layer reaches (0: every "
                  "reachable layer, plus the patch embeddings and the tower's pre-norm).",
                  "domain": Domain(ge=1, special={0: "every reachable layer"})},
    )
    vision_lora_r: int = field(default=16, metadata={"help": "LoRA rank of the vision tower (--vision_tune_mode lora).",
                                                                "domain": Domain(ge=1)})
    vision_lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha of the vision tower.",
                                                                    "domain": Domain(ge=1)})
    mm_vision_tower_lr: Optional[float] = field(
        default=None,
        metadata={"help": "Learning rate of every trained tower tensor (default: --learning_rate); LLaVA-NeXT's "
                  "name. Full tower tuning usually wants a rate well below the LLM's (LLaVA-NeXT: 2e-6).",
                  "domain": LEARNING_RATES},
    )


def check_tuning_names(args: TuningArguments) -> None:
    """What the tuning flags say without a model: known mode names, and no tower setting for a frozen tower.

    train checks this before it loads anything (a 7B base takes minutes), and the plan again for arguments built
    in code; what needs the model (how many tower layers the feature layer reaches) waits for the plan."""
    get_tune_mode(args.tune_mode)
    if get_vision_tune_mode(args.vision_tune_mode).name == FROZEN and args.vision_tune_last_layers:
        raise LlavaLnError(f"--vision_tune_last_layers {args.vision_tune_last_layers} needs a --vision_tune_mode "
                           "other than frozen")
