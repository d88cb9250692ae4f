"""The vision tower's tuning modes, as data: which tower groups train (--vision_tune_mode).

VISION_TUNE_MODES below is the one list of modes, in the order every list and table shows them
(frozen first: the tower stays as loaded unless a run asks otherwise). The tower's mode is independent
of --tune_mode: any LLM mode combines with any tower mode. Which tower tensors a mode may touch at all
(only those that can influence the image features LLaVA selects) is tuning.tower_scope's business.
"""
from dataclasses import dataclass

from llava_ln.core.errors import LlavaLnError


@dataclass(frozen=True, kw_only=True)
class VisionTuneMode:
    name: str
    summary: str
    groups: frozenset  # tower groups (see tuning.groups.GROUPS) that train
    uses_lora: bool = False


VISION_TUNE_MODES = {
    mode.name: mode
    for mode in (
        VisionTuneMode(name="frozen", summary="the tower does not train", groups=frozenset()),
        VisionTuneMode(name="ln", summary="the tower's norm weights and biases",
                       groups=frozenset({"vision_norms"})),
        VisionTuneMode(name="lora", summary="LoRA on the tower's attention and MLP linears",
                       groups=frozenset({"vision_lora"}), uses_lora=True),
        VisionTuneMode(name="full", summary="every tower weight", groups=frozenset({"vision_norms", "vision_other"})),
    )
}
FROZEN = "frozen"


def get_vision_tune_mode(name: str) -> VisionTuneMode:
    try:
        return VISION_TUNE_MODES[name]
    except KeyError:
        raise LlavaLnError(f"--vision_tune_mode {name!r} is not one of {', '.join(VISION_TUNE_MODES)}") from None
