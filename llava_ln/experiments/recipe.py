"""Training recipes as data (LLaVA-1.5-7B's and the toy world's), the demo's flags and its two train command lines.

A Recipe holds every hyperparameter `llava-ln compare` takes from a recipe, stage-2 learning rates per
tuning mode included; the demo is the toy recipe with its own stage-2 length and data mix (DemoRecipe).
Copies that must stay in prose are kept in step by tests/experiments/test_recipes.py: the case table and
defaults of scripts/pretrain.sh and scripts/finetune.sh, the rate table of docs/training.md, and the rates
docs/paper_claims.md and scripts/reproduce_claims.sh name.

LLaVA-1.5-7B's numbers are its published scripts' (global batch 256 then 128, stage-1 rate 1e-3, stage-2
2e-5, LoRA r=128 at 2e-4 with the connector at 2e-5, cosine with 3% warmup, 2048 tokens); the norm rate
1e-3 is a starting point to sweep, not a tuned value. The toy world's were picked by bench/toy_learnability.py
so that the demo fits in minutes on a 2-core CPU while stage 2 still clearly beats the connector-only model;
the demo's ln rates (embeddings/head 2e-3, norms 1e-2, connector 1e-3) carry over to the other modes with
the same ratios between groups: whole weight matrices (full, attn_*) get the connector's 1e-3, LoRA's
factors the embeddings' 2e-3.
"""
import os
from dataclasses import dataclass, field, fields
from typing import Optional

from llava_ln.core.benchmarks import BENCHMARKS, LLAVA_ANSWER_LENGTHS, TOY_ANSWER_LENGTHS, AnswerLengths, benchmark_list
from llava_ln.core.flag_domains import SEEDS, Domain, domain_of
from llava_ln.data.args import DataArguments
from llava_ln.toy import layout
from llava_ln.training.args import TrainingArguments
from llava_ln.tuning.args import LEARNING_RATES
from llava_ln.tuning.modes import TUNE_MODES


@dataclass(frozen=True, kw_only=True)
class ModeRates:
    """Stage-2 learning rates of one tuning mode, as train.py flags (None: the flag is not passed)."""

    learning_rate: float
    norm_lr: float | None = None
    mm_projector_lr: float | None = None

    def flags(self) -> dict:
        """{flag name: rate} for the rates this mode sets, in field order."""
        return {spec.name: getattr(self, spec.name) for spec in fields(self) if getattr(self, spec.name) is not None}


# The rate `--lr MODE=RATE` (and a variant's `lr=`) sets: the one that matters most for the mode. For
# ln and ln_simple that is the norms' rate; for every other mode the base rate.
HEADLINE_RATE = {"ln": "norm_lr", "ln_simple": "norm_lr"}


def headline_rate(mode: str) -> str:
    return HEADLINE_RATE.get(mode, "learning_rate")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str
    seed: int
    per_device_train_batch_size: int
    stage1_global_batch: int  # what the launch scripts keep whatever the GPU count
    stage2_global_batch: int
    model_max_length: int
    warmup_ratio: float
    stage1_lr: float
    stage1_steps: int | None  # None: one epoch
    stage2_steps: int | None  # each of compare's runs; None: one epoch
    stage2_data: str | None  # compare's stage-2 data (a toy mix on the toy world); None: must be given
    lora_r: int
    lora_alpha: int
    rates: dict  # tune mode -> ModeRates
    answer_lengths: AnswerLengths  # the final evaluation's
    eval_batch_size: int  # questions per generate call

    def __post_init__(self):
        if set(self.rates) != set(TUNE_MODES):
            raise ValueError(f"recipe {self.name}: rates for {sorted(self.rates)}, modes are {list(TUNE_MODES)}")


# Stage-2 rates per mode: (LLaVA-1.5-7B's, the toy world's).
_STAGE2_RATES = {
    "connector": (ModeRates(learning_rate=2e-5), ModeRates(learning_rate=1e-3)),
    "ln": (ModeRates(learning_rate=2e-5, norm_lr=1e-3), ModeRates(learning_rate=2e-3, norm_lr=1e-2, mm_projector_lr=1e-3)),
    "ln_simple": (ModeRates(learning_rate=2e-5, norm_lr=1e-3), ModeRates(learning_rate=2e-3, norm_lr=1e-2)),
    "lora": (ModeRates(learning_rate=2e-4, mm_projector_lr=2e-5), ModeRates(learning_rate=2e-3, mm_projector_lr=1e-3)),
    "full": (ModeRates(learning_rate=2e-5), ModeRates(learning_rate=1e-3)),
    "attn_qv": (ModeRates(learning_rate=2e-5), ModeRates(learning_rate=1e-3)),
    "attn_mlp": (ModeRates(learning_rate=2e-5), ModeRates(learning_rate=1e-3)),
}
LLAVA_15 = Recipe(
    name="LLaVA-1.5-7B", seed=42, per_device_train_batch_size=16, stage1_global_batch=256, stage2_global_batch=128,
    model_max_length=2048, warmup_ratio=0.03, stage1_lr=1e-3, stage1_steps=None, stage2_steps=None,
    stage2_data=None, lora_r=128, lora_alpha=256,
    rates={mode: rates[0] for mode, rates in _STAGE2_RATES.items()},
    answer_lengths=LLAVA_ANSWER_LENGTHS, eval_batch_size=16,
)
# LoRA r=4 is the share of the toy LLM's linear weights that r=128 is at 7B. The comparison's stage-2 data
# is the toy LLaVA-Instruct (all three kinds).
TOY = Recipe(
    name="toy world", seed=0, per_device_train_batch_size=16, stage1_global_batch=16, stage2_global_batch=16,
    model_max_length=512, warmup_ratio=0.1, stage1_lr=2e-3, stage1_steps=300, stage2_steps=300,
    stage2_data="conversation,detail,reasoning", lora_r=4, lora_alpha=8,
    rates={mode: rates[1] for mode, rates in _STAGE2_RATES.items()},
    answer_lengths=TOY_ANSWER_LENGTHS, eval_batch_size=32,
)

STAGE2_TEMPLATE = "vicuna_v1"

DEMO_STAGE2_STEPS = 600  # the demo's default stage-2 length; shorter runs evaluate proportionally fewer questions

# The demo's reference numbers: what the default recipe measured (README.md's demo table, checked against
# this by tests/experiments/test_demo.py). The report prints them beside a run's own.
DEMO_REFERENCE = {
    "connector only": {"VQA accuracy (%)": 49.70, "POPE mean F1 (x100)": 64.37, "POPE accuracy (%)": 51.67,
                       "MME perception": 193.33, "COCO CIDEr (x100)": 105.56, "Flickr30k CIDEr (x100)": 126.42},
    "stage 2 (ln)": {"VQA accuracy (%)": 59.48, "POPE mean F1 (x100)": 73.83, "POPE accuracy (%)": 74.44,
                     "MME perception": 321.67, "COCO CIDEr (x100)": 175.93, "Flickr30k CIDEr (x100)": 202.79},
}  # the toy LLM was pretrained on Vicuna-v1 conversations


@dataclass(kw_only=True)
class DemoRecipe:
    """The demo's flags: the toy recipe, one mode, a longer stage 2 than compare's runs and its own data mix."""

    tune_mode: str = field(default="ln", metadata={"help": "Stage 2's tuning mode."})
    seed: int = field(default=TOY.seed, metadata={"help": "Seed of the toy world and of both stages.", "domain": SEEDS})
    batch_size: int = field(default=TOY.per_device_train_batch_size, metadata={
        "help": "--per_device_train_batch_size of both stages.",
        "domain": domain_of(TrainingArguments, "per_device_train_batch_size")})
    stage1_steps: int = field(default=TOY.stage1_steps, metadata={"help": "Stage-1 (connector) optimizer steps.",
                                                                  "domain": Domain(ge=1)})
    stage1_lr: float = field(default=TOY.stage1_lr, metadata={"help": "Stage-1 learning rate.",
                                                              "domain": LEARNING_RATES})
    # Twice each of compare's runs: the demo trains one mode and shows it at its best.
    stage2_steps: int = field(default=DEMO_STAGE2_STEPS, metadata={"help": "Stage-2 optimizer steps.",
                                                                  "domain": Domain(ge=1)})
    stage2_lr: Optional[float] = field(default=None, metadata={
        "help": "Stage-2 --learning_rate (default: the toy recipe's for --tune_mode).", "domain": LEARNING_RATES})
    stage2_norm_lr: Optional[float] = field(default=None, metadata={
        "help": "Stage-2 --norm_lr (default: the toy recipe's for --tune_mode, if it sets one).",
        "domain": LEARNING_RATES})
    stage2_connector_lr: Optional[float] = field(default=None, metadata={
        "help": "Stage-2 --mm_projector_lr (default: the toy recipe's for --tune_mode, if it sets one).",
        "domain": LEARNING_RATES})
    # Conversation data (the paper's finding: the most effective type) plus some captions, as
    # LLaVA-1.5's mix has; without them the tuned model forgets how to caption.
    stage2_data: str = field(default="conversation,captions:300", metadata={
        "help": "Stage-2 toy data: kinds conversation, detail, reasoning, captions, each with an optional :COUNT."})
    model_max_length: int = field(default=TOY.model_max_length, metadata={
        "help": "Longest sequence in tokens.", "domain": domain_of(DataArguments, "model_max_length")})
    warmup_ratio: float = field(default=TOY.warmup_ratio, metadata={
        "help": "Warmup share of each stage.", "domain": domain_of(TrainingArguments, "warmup_ratio")})
    save_steps: int = field(default=100, metadata={
        "help": "Each stage saves a checkpoint every N optimizer steps (the newest only), so a stopped demo "
                "continues from there when run again.", "domain": Domain(ge=1)})
    eval_scale: Optional[float] = field(default=None, metadata={
        "help": "Size of the evaluation sets as a share of the full toy sets (1: all of them). Default: the "
                f"share of the default {DEMO_STAGE2_STEPS} stage-2 steps this run trains, so a shortened demo "
                "evaluates proportionally fewer questions.", "domain": Domain(gt=0)})

    benchmarks: str = field(default=",".join(BENCHMARKS), metadata={
        "help": "The benchmarks both models are evaluated on, comma separated (captions need Java)."})

    def __post_init__(self):
        benchmark_list(self.benchmarks, "--benchmarks")  # an unknown name: one line before any work

    def benchmark_names(self) -> list[str]:
        return benchmark_list(self.benchmarks, "--benchmarks")

    def eval_share(self) -> float:
        """The evaluation sets' size as a share of the full toy sets: --eval_scale, else the recipe's length."""
        if self.eval_scale is not None:
            return min(1.0, self.eval_scale)
        return min(1.0, max(self.stage1_steps / TOY.stage1_steps, self.stage2_steps / DEMO_STAGE2_STEPS))

    def summary(self) -> dict:
        """What the report records: steps, rates, batch, data, warmup and the evaluation's size."""
        return {"tune_mode": self.tune_mode, "seed": self.seed, "batch_size": self.batch_size,
                "stage1_steps": self.stage1_steps, "stage1_lr": self.stage1_lr,
                "stage2_steps": self.stage2_steps, "stage2_rates": self.stage2_rates(),
                "stage2_data": self.stage2_data, "model_max_length": self.model_max_length,
                "warmup_ratio": self.warmup_ratio, "benchmarks": self.benchmarks, "eval_share": self.eval_share()}

    def is_reference(self) -> bool:
        """Whether this is the recipe the README's reference numbers (DEMO_REFERENCE) were measured with."""
        return self.summary() == DemoRecipe().summary()

    def stage2_rates(self) -> dict:
        """{train.py rate flag: value}: the toy recipe's rates for the mode, overridden by the flags given."""
        rates = TOY.rates[self.tune_mode].flags() if self.tune_mode in TOY.rates else {}
        given = {"learning_rate": self.stage2_lr, "norm_lr": self.stage2_norm_lr,
                 "mm_projector_lr": self.stage2_connector_lr}
        return {**rates, **{flag: value for flag, value in given.items() if value is not None}}


def _common(world: str, recipe: DemoRecipe, output_dir: str, overwrite: bool) -> list[str]:
    """The flags both stages share. overwrite: start afresh in output_dir (moving an earlier run aside); the
    demo passes False and decides itself whether a stage starts, resumes or is already done."""
    return [
        "--model_name_or_path", os.path.join(world, "llm"),
        "--vision_tower", os.path.join(world, "vision"),
        "--image_folder", os.path.join(world, layout.IMAGES),
        "--image_aspect_ratio", "pad",
        "--model_max_length", str(recipe.model_max_length),
        "--per_device_train_batch_size", str(recipe.batch_size),
        "--lr_scheduler_type", "cosine", "--warmup_ratio", str(recipe.warmup_ratio),
        "--logging_steps", "10", "--report_to", "none",
        # Only the newest checkpoint: enough to continue a stopped stage, little disk.
        "--save_strategy", "steps", "--save_steps", str(recipe.save_steps), "--save_total_limit", "1",
        "--seed", str(recipe.seed), "--output_dir", output_dir,
    ] + (["--overwrite_output_dir"] if overwrite else [])


def stage1_argv(world: str, recipe: DemoRecipe, output_dir: str, *, overwrite: bool = True) -> list[str]:
    """Stage 1: the connector alone on captions, plain template."""
    return _common(world, recipe, output_dir, overwrite) + [
        "--data_path", os.path.join(world, layout.PRETRAIN_JSON),
        "--conv_template", "plain", "--tune_mode", "connector",
        "--max_steps", str(recipe.stage1_steps), "--learning_rate", str(recipe.stage1_lr),
    ]


def stage2_data_path(world: str, spec: str) -> str:
    """'conversation,captions:300' -> the data files with their sample counts.

    Kinds: the three LLaVA-Instruct-style files, plus "captions" (the stage-1 caption records,
    asked in the conversation template), the way LLaVA-1.5's mix keeps caption data in stage 2.
    """
    files = {**layout.INSTRUCT_JSON, "captions": layout.PRETRAIN_JSON}
    parts = []
    for item in spec.split(","):
        kind, _, count = item.partition(":")
        path = os.path.join(world, files[kind])
        parts.append(f"{path}:{count}" if count else path)
    return ",".join(parts)


def stage2_argv(world: str, recipe: DemoRecipe, output_dir: str, stage1_dir: str, *,
                overwrite: bool = True) -> list[str]:
    """Stage 2: instruction tuning in recipe.tune_mode from the stage-1 connector."""
    rates = [part for flag, value in recipe.stage2_rates().items() for part in (f"--{flag}", str(value))]
    return _common(world, recipe, output_dir, overwrite) + [
        "--data_path", stage2_data_path(world, recipe.stage2_data),
        "--conv_template", STAGE2_TEMPLATE, "--tune_mode", recipe.tune_mode,
        "--pretrain_mm_mlp_adapter", stage1_dir,
        "--max_steps", str(recipe.stage2_steps), *rates,
    ]
