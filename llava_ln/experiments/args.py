"""The flags of `llava-ln compare` and `llava-ln analyze`.

compare's flags that default to a recipe (experiments/recipe.py) are None until compare_settings.resolve
fills them from the toy world's or LLaVA-1.5-7B's; their --help names both values, read from the recipes.
"""
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from llava_ln.core.args import DeviceArguments, OutputArguments, ThreadArguments
from llava_ln.core.benchmarks import BENCHMARKS
from llava_ln.core.flag_domains import SEEDS, Domain, domain_of
from llava_ln.data.args import DataArguments, ImageFileArguments
from llava_ln.experiments.recipe import LLAVA_15, TOY, Recipe
from llava_ln.model.args import BackboneArguments
from llava_ln.training.args import TrainingArguments
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.modes import TUNE_MODES


def _recipe_default(what: str, name: str) -> str:
    """The help of a flag whose default is the recipe's Recipe.<name>: both recipes' values, from the data."""
    def shown(recipe: Recipe) -> str:
        value = getattr(recipe, name)
        return "one epoch" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    if shown(TOY) == shown(LLAVA_15):  # one value, said once
        return f"{what} (default: {shown(TOY)}, with either recipe)."
    return f"{what} (default with --world, the {TOY.name} recipe: {shown(TOY)}; else {LLAVA_15.name}'s: " \
           f"{shown(LLAVA_15)})."


def _lengths(recipe: Recipe) -> str:
    short, caption = recipe.answer_lengths.short, recipe.answer_lengths.caption
    return f"{short} for every answer" if short == caption else f"{short} for short answers and {caption} for captions"


@dataclass(kw_only=True)
class CompareArguments(ThreadArguments, ImageFileArguments, BackboneArguments, OutputArguments):
    """Every run's flags, the recipe (--world: the toy world's) filling what is not given; output_dir is required."""

    required_flags: ClassVar[tuple] = ("output_dir",)  # checked by compare_settings.resolve; --help says so

    world: Optional[str] = field(default=None, metadata={
        "help": "A toy world (llava-ln toy): fills every path below and uses the toy recipe."})
    data_path: Optional[str] = field(default=None, metadata={
        "help": "Stage-2 data (--data_path syntax); with --world a toy mix such as conversation,detail:300 "
                f"(default {TOY.stage2_data}: the toy LLaVA-Instruct)."})
    stage1_data_path: Optional[str] = field(default=None, metadata={"help": "Stage-1 caption data."})
    pretrain_mm_mlp_adapter: Optional[str] = field(default=None, metadata={
        "help": "A stage-1 connector to start every run from (else stage 1 runs here first)."})
    eval_data: Optional[str] = field(default=None, metadata={
        "help": "Folder with the benchmarks in LLaVA's playground/data/eval layout (MME, pope, vqav2, ...)."})
    conv_template: str = field(default="vicuna_v1", metadata={"help": "Stage-2 conversation template."})
    modes: str = field(default=",".join(TUNE_MODES), metadata={"help": "Tuning modes to train, comma separated."})
    variants: str = field(default="", metadata={
        "help": "Extra runs: 'NAME=MODE key=value ...; ...' or a YAML/JSON file (see experiments/runs.py)."})
    lr: str = field(default="", metadata={
        "help": "Per-mode headline rates, e.g. ln=1e-2,lora=2e-4 (norm rate for ln/ln_simple, else the base rate)."})
    benchmarks: str = field(default=",".join(BENCHMARKS), metadata={"help": "Benchmarks for the table."})
    stage1_steps: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("Stage-1 optimizer steps", "stage1_steps"), "domain": Domain(ge=1)})
    stage2_steps: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("Stage-2 optimizer steps of every run", "stage2_steps"), "domain": Domain(ge=1)})
    stage1_lr: Optional[float] = field(default=None, metadata={
        "help": _recipe_default("Stage-1 rate", "stage1_lr"), "domain": domain_of(TrainingArguments, "learning_rate")})
    per_device_train_batch_size: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("Samples per device per micro-step", "per_device_train_batch_size"),
        "domain": domain_of(TrainingArguments, "per_device_train_batch_size")})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "Micro-steps per optimizer step.", "domain": domain_of(TrainingArguments, "gradient_accumulation_steps")})
    model_max_length: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("Longest sequence in tokens", "model_max_length"),
        "domain": domain_of(DataArguments, "model_max_length")})
    warmup_ratio: Optional[float] = field(default=None, metadata={
        "help": _recipe_default("Warmup as a share of all steps", "warmup_ratio"),
        "domain": domain_of(TrainingArguments, "warmup_ratio")})
    lora_r: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("LoRA rank", "lora_r"), "domain": domain_of(TuningArguments, "lora_r")})
    lora_alpha: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("LoRA alpha", "lora_alpha"), "domain": domain_of(TuningArguments, "lora_alpha")})
    seed: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("Seed of every run (data order, initialisation)", "seed"), "domain": SEEDS})
    train_args: str = field(default="", metadata={
        "help": "More train.py flags for every run, e.g. '--bf16 --deepspeed zero_configs/zero3.json "
                "--gradient_checkpointing' (they come last, so they override compare's own)."})
    launcher: str = field(default="auto", metadata={
        "help": "auto | python | torchrun | deepspeed (auto: python on a CPU, deepspeed when --train_args has "
                "--deepspeed, else torchrun on several GPUs)."})
    num_gpus: int = field(default=0, metadata={"help": "GPUs per run.",
                                               "domain": Domain(ge=1, special={0: "every visible one"})})
    save_steps: float = field(default=0.25, metadata={
        "help": "Checkpoint every N steps (below 1: a share), so an interrupted run resumes.",
        "domain": domain_of(TrainingArguments, "save_steps")})
    logging_steps: int = field(default=10, metadata={"help": "Log (and gradient-statistics window) every N steps.",
                                                     "domain": Domain(ge=1)})
    log_grad_stats: bool = field(default=True, metadata={"help": "Gradient statistics per group (llava-ln analyze)."})
    curve_benchmarks: str = field(default="pope,vqav2", metadata={
        "help": "Benchmarks of the learning curves (evaluation during training); '' for none."})
    curve_steps: float = field(default=0.25, metadata={
        "help": "Learning-curve points every N steps (below 1: share); --eval_steps of every run.",
        "domain": domain_of(TrainingArguments, "eval_steps")})
    curve_limit: int = field(default=64, metadata={"help": "Items per benchmark at each learning-curve point.",
                                                   "domain": domain_of(TrainingArguments, "eval_limit")})
    eval_batch_size: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("Questions per generate call, per device", "eval_batch_size"), "domain": Domain(ge=1)})
    max_new_tokens: int = field(default=0, metadata={
        "help": "Longest answer in the final evaluation, in tokens.", "domain": Domain(ge=1, special={
            0: f"the recipe's: with --world {_lengths(TOY)}, else {_lengths(LLAVA_15)}"})})
    parallel: int = field(default=1, metadata={
        "help": "Runs trained at once (CPU: with --threads 1, 2 on a 2-core machine beats one run on 2 threads "
                "for small models; their times then share the CPU). GPUs: keep 1.", "domain": Domain(ge=1)})


@dataclass(kw_only=True)
class AnalyzeArguments(DeviceArguments, ImageFileArguments, OutputArguments):
    """output_dir is optional here: without it nothing is written."""

    checkpoints: str = field(metadata={"help": "Run folders or checkpoint-<step> folders, comma separated "
                                               "(LABEL=PATH names one)."})
    data: Optional[str] = field(default=None, metadata={
        "help": "LLaVA-format records to compute layer similarity on (--data_path syntax); without it only "
                "gradient statistics are read."})
    num_samples: int = field(default=64, metadata={"help": "Records used (the first N).", "domain": Domain(ge=1)})
    batch_size: int = field(default=8, metadata={"help": "Records per forward pass.", "domain": Domain(ge=1)})
    json: bool = field(default=False, metadata={"help": "Print the JSON result."})
