"""The tuning modes of the paper, as data: which groups train and which extra tensors.

| mode      | trainable                                                  |
|-----------|------------------------------------------------------------|
| connector | connector                                                  |
| full      | all LLM parameters + connector                             |
| lora      | LoRA on every linear layer of the LLM blocks + connector   |
| ln        | LLM norms + connector + embeddings + head                  |
| ln_simple | LLM norms only                                             |
| attn_qv   | q/v projections of every block + connector + emb. + head   |
| attn_mlp  | every block's MLP + connector + embeddings + head          |
"""
from dataclasses import dataclass

from llava_ln.core.errors import LlavaLnError


@dataclass(frozen=True)
class TuneMode:
    name: str
    groups: frozenset  # whole groups (see tuning.groups.GROUPS) that train
    block_part: str | None  # "attn_qv" / "attn_mlp": a slice of every decoder block also trains
    trains_embeddings: bool  # default for input embeddings + output head (--tune_embeddings overrides)
    uses_lora: bool
    summary: str
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
        TuneMode("connector", frozenset({"connector"}), None, False, False, "connector only (stage 1)"),
        TuneMode("full", frozenset({"connector", "llm_norms", "llm_other"}), None, True, False,
                 "every LLM parameter + connector", saves_compute_dtype=True),
        TuneMode("lora", frozenset({"connector", "lora"}), None, False, True,
                 "LoRA on every linear layer of the LLM blocks + connector"),
        TuneMode("ln", frozenset({"connector", "llm_norms"}), None, True, False,
                 "LLM norms + connector + embeddings + head (the paper's LayerNorm)"),
        TuneMode("ln_simple", frozenset({"llm_norms"}), None, False, False,
                 "LLM norms only (the paper's LayerNorm-simple)"),
        TuneMode("attn_qv", frozenset({"connector"}), "attn_qv", True, False,
                 "q and v projections of every block + connector + embeddings + head"),
        TuneMode("attn_mlp", frozenset({"connector"}), "attn_mlp", True, False,
                 "every block's MLP + connector + embeddings + head"),
    )
}


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
