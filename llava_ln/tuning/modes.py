"""The tuning modes of the paper, as data: which groups train and which extra tensors.

TUNE_MODES below is the one list of modes; its order is the order every list and table shows them in
(stage 1's connector first, then the paper's LayerNorm tuning and its simple variant, then the baselines).
Everything else takes the names from here; README.md's table of modes (with LLaVA-1.5-7B's counts) and
scripts/finetune.sh's case table are prose copies that tests keep in step with it.
"""
from dataclasses import dataclass

from llava_ln.core.errors import LlavaLnError


@dataclass(frozen=True, kw_only=True)
class TuneMode:
    name: str
    summary: str
    groups: frozenset  # whole groups (see tuning.groups.GROUPS) that train
    block_part: str | None = None  # "attn_qv" / "attn_mlp": a slice of every decoder block also trains
    trains_embeddings: bool = False  # default for input embeddings + output head (--tune_embeddings overrides)
    uses_lora: bool = False
    # Trained tensors are saved in the 16-bit compute dtype rather than as fp32 masters: only for a
    # mode that trains nearly the whole LLM, where fp32 would double a 13.5 GB (7B) file.
    saves_compute_dtype: bool = False

    @property
    def changes_llm_norms_only(self) -> bool:
        """Inside the LLM's blocks only norm weights change (what a PEFT LN-tuning adapter can carry)."""
        return "llm_norms" in self.groups and "llm_other" not in self.groups and not self.uses_lora \
            and self.block_part is None

    @property
    def trains_llm_linears(self) -> bool:
        """Whether any linear weight of the LLM's blocks trains (a quantized base cannot allow that)."""
        return "llm_other" in self.groups or self.block_part is not None


TUNE_MODES = {
    mode.name: mode
    for mode in (
        TuneMode(name="connector", summary="connector only (stage 1)", groups=frozenset({"connector"})),
        TuneMode(name="ln", summary="LLM norms + connector + embeddings + head (the paper's LayerNorm)",
                 groups=frozenset({"connector", "llm_norms"}), trains_embeddings=True),
        TuneMode(name="ln_simple", summary="LLM norms only (the paper's LayerNorm-simple)",
                 groups=frozenset({"llm_norms"})),
        TuneMode(name="lora", summary="LoRA on every linear layer of the LLM blocks + connector",
                 groups=frozenset({"connector", "lora"}), uses_lora=True),
        TuneMode(name="full", summary="every LLM parameter + connector",
                 groups=frozenset({"connector", "llm_norms", "llm_other"}), trains_embeddings=True,
                 saves_compute_dtype=True),
        TuneMode(name="attn_qv", summary="q and v projections of every block + connector + embeddings + head",
                 groups=frozenset({"connector"}), block_part="attn_qv", trains_embeddings=True),
        TuneMode(name="attn_mlp", summary="every block's MLP + connector + embeddings + head",
                 groups=frozenset({"connector"}), block_part="attn_mlp", trains_embeddings=True),
    )
}
MODE_NAMES = tuple(TUNE_MODES)


def get_tune_mode(name: str) -> TuneMode:
    try:
        return TUNE_MODES[name]
    except KeyError:
        raise LlavaLnError(f"--tune_mode {name!r} is not one of {', '.join(TUNE_MODES)}") from None


def resolve_tune_embeddings(mode: TuneMode, override: bool | None) -> bool:
    """Whether embeddings and head train: --tune_embeddings when given, else the mode's default."""
    return mode.trains_embeddings if override is None else override


def refuse_on_quantized_base(mode: TuneMode, bits: int) -> None:
    """A quantized base (--bits 4/8) keeps its block linears frozen: refuse a mode that trains them."""
    if mode.trains_llm_linears:
        allowed = ", ".join(m.name for m in TUNE_MODES.values() if not m.trains_llm_linears)
        raise LlavaLnError(f"--tune_mode {mode.name} trains linear weights of the LLM's blocks, which --bits {bits} "
                           f"stores quantized and frozen; use --tune_mode {allowed}, or --bits 16")
