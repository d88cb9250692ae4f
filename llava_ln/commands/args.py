"""The flags of every `llava-ln` command but train (training.args.TRAIN_FLAGS): each command's CommandFlags,
and the flag dataclasses of the commands that have no package of their own (describe, inspect-data, toy,
merge, export, demo, and the output flags of eval and score).

Each composes the shared flag dataclasses (core.args, model.args, data.args, training.args) and adds only
what is its own; every numeric flag declares its domain (core.flag_domains, checked by parse_flags), and
what combines flags is checked in __post_init__, so a bad value is one line before any work.
Nothing here imports torch: cli.py answers `--help` from these alone.
"""
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from llava_ln.core.args import (
    DeviceArguments,
    ReplaceOutputArguments,
    SeedArguments,
    ThreadArguments,
    default_of,
)
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import SEEDS, Domain, domain_of
from llava_ln.core.flags import CommandFlags
from llava_ln.data.args import DataArguments
from llava_ln.evaluation.args import EvalArguments
from llava_ln.experiments.args import AnalyzeArguments, CompareArguments
from llava_ln.experiments.recipe import TOY, DemoRecipe
from llava_ln.model.args import BaseOverrides, BitsArguments, ModelArguments
from llava_ln.scoring.dispatch import ScoreRequest
from llava_ln.training.args import MemoryArguments, PackingArguments, TrainingArguments
from llava_ln.tuning.args import TuningArguments

INSPECT_FORMATS = ("text", "json")
EXPORT_FORMATS = ("hf", "llava", "peft-ln", "peft-lora")


@dataclass(kw_only=True)
class DescribeArguments(PackingArguments, MemoryArguments):
    """describe's own flags; its memory and packing flags are training's (same defaults), for an estimate of that
    run (with --packing the micro-batch is --max_tokens_per_batch tokens, in rows of at most --model_max_length)."""

    names: bool = field(default=False, metadata={"help": "Also list the trainable tensor names."})
    num_gpus: int = field(default=1, metadata={"help": "For the memory estimate: GPUs the run shards over.",
                                               "domain": Domain(ge=1)})
    strategy: str = field(default="torch", metadata={"help": "For the memory estimate: torch (plain / DDP), "
                                                              "zero2 or zero3."})
    # bf16 is how a 7B run trains (scripts/*.sh), so the estimate assumes it unless told otherwise.
    bf16: bool = field(default=True, metadata={"help": "For the memory estimate: bf16 training (else fp32)."})
    per_device_train_batch_size: Optional[int] = field(default=None, metadata={
        "help": "Plan activations for this micro-batch: adds `recompute` (checkpointed blocks, estimated peak).",
        "domain": domain_of(TrainingArguments, "per_device_train_batch_size")})
    model_max_length: int = field(default=default_of(DataArguments, "model_max_length"), metadata={
        "help": "For the recompute estimate: tokens per sample.", "domain": domain_of(DataArguments, "model_max_length")})


@dataclass(kw_only=True)
class InspectArguments(SeedArguments):
    num_samples: int = field(default=3, metadata={"help": "How many records to show, from the first one.",
                                                  "domain": Domain(ge=1)})
    format: str = field(default="text", metadata={"help": "text (for reading) or json (one object per line)."})

    def __post_init__(self):
        if self.format not in INSPECT_FORMATS:
            raise LlavaLnError(f"--format {self.format!r} is not one of {', '.join(INSPECT_FORMATS)}")


@dataclass(kw_only=True)
class ToyArguments:
    out: str = field(default="toy_world", metadata={"help": "Folder to write the world into (new or empty, "
                                                            "or an earlier toy world, which is replaced)."})
    # The toy recipe's seed: the world the demo and the documented toy numbers use.
    seed: int = field(default=TOY.seed, metadata={"help": "Same seed, byte-identical files.", "domain": SEEDS})
    scale: float = field(default=1.0, metadata={"help": "Multiply every set's size (0.05 gives a tiny world for tests).",
                                                "domain": Domain(gt=0)})
    backbones: bool = field(default=True, metadata={"help": "Copy the pretrained toy LLM and vision tower into "
                                                            "--out/llm and --out/vision."})


@dataclass(kw_only=True)
class ShipArguments(DeviceArguments, ReplaceOutputArguments):
    """What merge and export share: which checkpoint, written in which dtype, loaded on which device."""

    required_flags: ClassVar[tuple] = ("checkpoint", "output_dir")  # checked by the command; --help says so

    checkpoint: Optional[str] = field(default=None, metadata={
        "help": "Run folder, OUTPUT_DIR/checkpoint-<step> or (export) merged folder."})
    dtype: str = field(default="auto", metadata={
        "help": "Weights written: auto (the base LLM's dtype) | float32 | bfloat16 | float16."})

    def require_checkpoint(self, command: str) -> str:
        if not self.checkpoint:
            raise LlavaLnError(f"{command}: --checkpoint is required")
        return self.checkpoint


@dataclass(kw_only=True)
class MergeArguments(ShipArguments):
    def __post_init__(self):
        self.require_checkpoint("llava-ln merge")


@dataclass(kw_only=True)
class ExportArguments(BitsArguments, ShipArguments):
    format: str = field(default="hf", metadata={"help": "hf (LlavaForConditionalGeneration + LlavaProcessor) | llava "
                                                      "(original LLaVA layout) | peft-ln | peft-lora."})
    verify: bool = field(default=True, metadata={"help": "Load the export in a fresh process and compare outputs."})
    max_new_tokens: int = field(default=8, metadata={"help": "Greedy tokens compared per probe in verification.",
                                                     "domain": Domain(ge=1)})
    atol: float = field(default=1e-4, metadata={"help": "Verification: absolute logit tolerance.",
                                                "domain": Domain(ge=0)})
    rtol: float = field(default=1e-4, metadata={"help": "Verification: logit tolerance relative to the largest logit.",
                                                "domain": Domain(ge=0)})

    def __post_init__(self):
        if self.format not in EXPORT_FORMATS:
            raise LlavaLnError(f"llava-ln export: --format {self.format!r} is not one of {', '.join(EXPORT_FORMATS)}")
        self.require_checkpoint("llava-ln export")
        if self.bits != 16 and self.format != "hf":
            raise LlavaLnError(f"llava-ln export: --bits applies to --format hf only, not {self.format}")


@dataclass(kw_only=True)
class DemoArguments(ThreadArguments):
    out: str = field(default="demo_out", metadata={"help": "Folder for the toy world, the runs and the report."})
    reuse_world: bool = field(default=True, metadata={"help": "Reuse a toy world already in --out (of the same "
                                                               "--seed)."})
    restart: bool = field(default=False, metadata={
        "help": "Start over: remove the stages, evaluations and report an earlier demo wrote into --out (the toy "
                "world stays). Without it, a rerun reuses the steps already done and continues a stopped stage "
                "from its newest checkpoint."})


@dataclass(kw_only=True)
class JsonOutput:
    json: bool = field(default=False, metadata={
        "help": "Print the whole JSON result on stdout instead of the one-line headline (the file has it either way)."})


SCORES_FILE = "scores.json"  # the scorer's JSON: eval --score writes it in OUTPUT_DIR, score beside the predictions


@dataclass(kw_only=True)
class ScoreOutput(JsonOutput):
    output_file: Optional[str] = field(default=None, metadata={
        "help": f"Where to write the whole JSON result (default: {SCORES_FILE} in the folder that holds "
                "--predictions)."})


DESCRIBE_FLAGS = CommandFlags("llava-ln describe", "Print parameter counts (total, trainable, per group) as one JSON "
                              "object.", (ModelArguments, TuningArguments, DescribeArguments))
INSPECT_FLAGS = CommandFlags("llava-ln inspect-data", "Print processed samples (rendered text, tokens, labels) "
                             "without loading model weights.", (ModelArguments, DataArguments, InspectArguments))
TOY_FLAGS = CommandFlags("llava-ln toy", "Write the synthetic toy world deterministically from --seed.",
                         (ToyArguments,))
EVAL_FLAGS = CommandFlags("llava-ln eval", "Generate benchmark answers in batches and write the official result "
                          "files; prints one line (--json: the whole result).", (EvalArguments, JsonOutput))
SCORE_FLAGS = CommandFlags("llava-ln score", "Score prediction files as the official tools do; prints one line "
                           "(--json: the whole JSON).", (ScoreRequest, ScoreOutput))
MERGE_FLAGS = CommandFlags("llava-ln merge", "Fold trained tensors into one standalone checkpoint folder.",
                           (MergeArguments, BaseOverrides))
EXPORT_FLAGS = CommandFlags("llava-ln export", "Export to the transformers-native LLaVA format or a PEFT adapter.",
                            (ExportArguments, BaseOverrides))
DEMO_FLAGS = CommandFlags("llava-ln demo", "Run the whole pipeline on the toy world and write a report. Run again, it "
                          "continues where it stopped (--restart starts over).", (DemoArguments, DemoRecipe))
COMPARE_FLAGS = CommandFlags("llava-ln compare", "Train tuning modes the same way, evaluate each, write a comparison.",
                             (CompareArguments,))
ANALYZE_FLAGS = CommandFlags("llava-ln analyze", "Layer-representation similarity and gradient statistics of runs.",
                             (AnalyzeArguments,))
