"""Flags several commands share, each declared once: one name, one default, one help text, one check.

A command's flag dataclass composes these by inheriting them (HfArgumentParser reads inherited fields
like its own, so `args.seed` stays where code expects it). Every flag dataclass is keyword-only and lives
in a module that imports neither torch nor transformers, so that `--help` can be answered without them.

  SeedArguments           --seed (train, inspect-data, eval)
  OutputArguments         --output_dir (train, eval, compare, analyze, merge, export)
  ReplaceOutputArguments  --output_dir plus --overwrite (eval, merge, export)
  LaunchArguments         --local_rank, which the deepspeed launcher passes (train, eval)
  DeviceArguments         --device for commands that load a model once (merge, export, analyze)
  ThreadArguments         --threads (demo, compare)
"""
from dataclasses import MISSING, dataclass, field, fields
from typing import Optional

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import SEEDS, Domain


@dataclass(kw_only=True)
class SeedArguments:
    # 42 is transformers' TrainingArguments default, which LLaVA's scripts leave in place.
    seed: int = field(default=42, metadata={
        "help": "Seed of everything random the command does: initialisation, data order, dropout and `file:N` "
                "subsets (train; inspect-data, to show what training reads), sampling (eval, plus the rank).",
        "domain": SEEDS})


@dataclass(kw_only=True)
class OutputArguments:
    output_dir: Optional[str] = field(default=None, metadata={
        "help": "Folder this command writes: the run folder (train), answers and result files (eval), the runs and "
                "reports (compare), analysis.json and plots (analyze), the model (merge, export)."})

    def require_output_dir(self, command: str) -> str:
        if not self.output_dir:
            raise LlavaLnError(f"{command}: --output_dir is required")
        return self.output_dir


@dataclass(kw_only=True)
class ReplaceOutputArguments(OutputArguments):
    overwrite: bool = field(default=False, metadata={
        "help": "Replace what --output_dir already holds (eval: discard earlier answers instead of resuming)."})


@dataclass(kw_only=True)
class LaunchArguments:
    local_rank: int = field(default=-1, metadata={
        "help": "Set by the deepspeed launcher (the LOCAL_RANK environment variable wins); not passed by hand.",
        "domain": Domain(ge=0, special={-1: "not started by a launcher"})})


@dataclass(kw_only=True)
class DeviceArguments:
    # The CPU unless asked: a float32 copy of a 7B model (LoRA folding, verification, hidden states) fits in
    # RAM, not in every GPU. `llava-ln eval`, which generates, has its own --device (auto).
    device: str = field(default="cpu", metadata={"help": "cpu or cuda: where the model is loaded and run."})


@dataclass(kw_only=True)
class ThreadArguments:
    threads: int = field(default=0, metadata={"help": "torch CPU threads per process.",
                                              "domain": Domain(ge=1, special={0: "torch's default"})})


def default_of(flags_class, name: str):
    """The default a flag dataclass declares for `name` (for a recipe or a flag that must agree with it)."""
    for spec in fields(flags_class):
        if spec.name == name:
            if spec.default is MISSING:
                raise KeyError(f"{flags_class.__name__}.{name} has no default")
            return spec.default
    raise KeyError(f"{flags_class.__name__} has no flag {name}")
