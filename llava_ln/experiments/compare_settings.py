"""The flags of `llava-ln compare`, the recipe they resolve to (toy world or LLaVA-1.5-7B), and each run's train.py flags.

--world fills every path from a toy world and switches to the toy recipe (recipe.TOY: the demo's batch,
length, warmup and rates, LoRA r=4, short answers); without it the defaults are LLaVA-1.5-7B's
(recipe.LLAVA_15, as scripts/*.sh run it). Every flag that defaults to a recipe value says both values
in its --help, taken from the recipes.
Every run gets the same common flags (model, data order, batch, schedule, checkpoints every
--save_steps so an interrupted run resumes, logging); stage-2 runs add the stage-1 connector, the
step count, gradient statistics, evaluation during training (the learning curves) and their own
mode and rates (runs.py). --train_args come last, so they override any of these.
"""
import os
import shlex
from dataclasses import dataclass, field
from typing import Optional

from llava_ln.core.benchmarks import BENCHMARKS, benchmark_list
from llava_ln.core.errors import LlavaLnError
from llava_ln.experiments.recipe import LLAVA_15, TOY, Recipe, stage2_data_path
from llava_ln.experiments.runs import RunSpec
from llava_ln.toy import layout
from llava_ln.tuning.modes import TUNE_MODES


def _recipe_default(what: str, name: str) -> str:
    """The help of a flag whose default is the recipe's Recipe.<name>: both recipes' values, from the data."""
    def shown(recipe: Recipe) -> str:
        value = getattr(recipe, name)
        return "one epoch" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    return f"{what} (default: {TOY.name} {shown(TOY)}, {LLAVA_15.name} {shown(LLAVA_15)})."


@dataclass(kw_only=True)
class CompareArguments:
    output_dir: str = field(metadata={"help": "Where the runs, comparison.json/.md and the plots go (restartable)."})
    world: Optional[str] = field(default=None, metadata={
        "help": "A toy world (llava-ln toy): fills every path below and uses the toy recipe."})
    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "The base LLM."})
    vision_tower: Optional[str] = field(default=None, metadata={"help": "The vision tower."})
    image_folder: Optional[str] = field(default=None, metadata={"help": "Root of the training images."})
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
        "help": _recipe_default("Stage-1 optimizer steps", "stage1_steps")})
    stage2_steps: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("Stage-2 optimizer steps of every run", "stage2_steps")})
    stage1_lr: Optional[float] = field(default=None, metadata={"help": _recipe_default("Stage-1 rate", "stage1_lr")})
    per_device_train_batch_size: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("Samples per device per micro-step", "per_device_train_batch_size")})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-steps per optimizer step."})
    model_max_length: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("Longest sequence in tokens", "model_max_length")})
    warmup_ratio: Optional[float] = field(default=None, metadata={
        "help": _recipe_default("Warmup as a share of all steps", "warmup_ratio")})
    lora_r: Optional[int] = field(default=None, metadata={"help": _recipe_default("LoRA rank", "lora_r")})
    lora_alpha: Optional[int] = field(default=None, metadata={"help": _recipe_default("LoRA alpha", "lora_alpha")})
    seed: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("Seed of every run (data order, initialisation)", "seed")})
    train_args: str = field(default="", metadata={
        "help": "More train.py flags for every run, e.g. '--bf16 --deepspeed zero_configs/zero3.json "
                "--gradient_checkpointing' (they come last, so they override compare's own)."})
    launcher: str = field(default="auto", metadata={
        "help": "auto | python | torchrun | deepspeed (auto: python on a CPU, deepspeed when --train_args has "
                "--deepspeed, else torchrun on several GPUs)."})
    num_gpus: int = field(default=0, metadata={"help": "GPUs per run (0: every visible one)."})
    save_steps: float = field(default=0.25, metadata={
        "help": "Checkpoint every N steps (below 1: a share), so an interrupted run resumes."})
    logging_steps: int = field(default=10, metadata={"help": "Log (and gradient-statistics window) every N steps."})
    log_grad_stats: bool = field(default=True, metadata={"help": "Gradient statistics per group (llava-ln analyze)."})
    curve_benchmarks: str = field(default="pope,vqav2", metadata={
        "help": "Benchmarks of the learning curves (evaluation during training); '' for none."})
    curve_steps: float = field(default=0.25, metadata={"help": "Learning-curve points every N steps (below 1: share)."})
    curve_limit: int = field(default=64, metadata={"help": "Items per benchmark at each learning-curve point."})
    eval_batch_size: Optional[int] = field(default=None, metadata={
        "help": _recipe_default("Questions per generate call, per device", "eval_batch_size")})
    max_new_tokens: int = field(default=0, metadata={
        "help": f"Longest answer in the final evaluation (0: toy {TOY.answer_lengths.short} for short answers and "
                f"{TOY.answer_lengths.caption} for captions; else {LLAVA_15.answer_lengths.short} and "
                f"{LLAVA_15.answer_lengths.caption})."})
    threads: int = field(default=0, metadata={"help": "CPU threads per process (0: torch's default)."})
    parallel: int = field(default=1, metadata={
        "help": "Runs trained at once (CPU: with --threads 1, 2 on a 2-core machine beats one run on 2 threads "
                "for small models; their times then share the CPU). GPUs: keep 1."})


@dataclass(kw_only=True)
class Setup:
    """The comparison's resolved settings (flags + the toy or 7B recipe)."""

    toy: bool
    recipe: Recipe
    paths: dict
    seed: int
    stage1_steps: int | None
    stage2_steps: int | None
    stage1_lr: float
    batch_size: int
    model_max_length: int
    warmup_ratio: float
    lora: tuple
    max_new_tokens: dict
    eval_batch_size: int
    benchmarks: list


def resolve(args: CompareArguments) -> Setup:
    toy = bool(args.world)
    world = args.world
    if toy and not os.path.isfile(os.path.join(world, layout.WORLD_MANIFEST)):
        raise LlavaLnError(f"--world {world}: not a toy world (no {layout.WORLD_MANIFEST}; make one with llava-ln toy)")
    recipe = TOY if toy else LLAVA_15
    data = args.data_path or recipe.stage2_data
    paths = {
        "model_name_or_path": args.model_name_or_path or (os.path.join(world, "llm") if toy else None),
        "vision_tower": args.vision_tower or (os.path.join(world, "vision") if toy else None),
        "image_folder": args.image_folder or (os.path.join(world, layout.IMAGES) if toy else None),
        "data_path": resolve_data(data, world),
        "stage1_data_path": args.stage1_data_path or (os.path.join(world, layout.PRETRAIN_JSON) if toy else None),
        "eval_data": args.eval_data or (os.path.join(world, layout.EVAL) if toy else None),
        "pretrain_mm_mlp_adapter": args.pretrain_mm_mlp_adapter,
    }
    needed = ["model_name_or_path", "vision_tower", "data_path", "eval_data"]
    needed += [] if args.pretrain_mm_mlp_adapter else ["stage1_data_path"]
    missing = [name for name in needed if not paths[name]]
    if missing:
        raise LlavaLnError("llava-ln compare needs " + ", ".join(f"--{m}" for m in missing) + " (or --world)")
    benchmarks = benchmark_list(args.benchmarks, "--benchmarks")
    tokens = {b: args.max_new_tokens or recipe.answer_lengths.of(b) for b in benchmarks}

    def given_or_recipe(name: str):
        value = getattr(args, name)
        return getattr(recipe, name) if value is None else value

    return Setup(
        toy=toy, recipe=recipe, paths=paths, seed=given_or_recipe("seed"),
        stage1_steps=given_or_recipe("stage1_steps"), stage2_steps=given_or_recipe("stage2_steps"),
        stage1_lr=given_or_recipe("stage1_lr"), batch_size=given_or_recipe("per_device_train_batch_size"),
        model_max_length=given_or_recipe("model_max_length"), warmup_ratio=given_or_recipe("warmup_ratio"),
        lora=(given_or_recipe("lora_r"), given_or_recipe("lora_alpha")), max_new_tokens=tokens,
        eval_batch_size=given_or_recipe("eval_batch_size"), benchmarks=benchmarks,
    )


def resolve_data(spec: str | None, world: str | None) -> str | None:
    """A toy mix (conversation,detail:300) becomes the world's files; anything else is --data_path as is."""
    if not spec or not world:
        return spec
    kinds = {item.partition(":")[0] for item in spec.split(",")}
    if kinds <= set(layout.INSTRUCT_JSON) | {"captions"}:
        return stage2_data_path(world, spec)
    return spec


def _steps_flags(steps: int | None) -> list:
    return ["--max_steps", str(steps)] if steps else ["--num_train_epochs", "1"]


def common_flags(args: CompareArguments, setup: Setup, output_dir: str) -> list:
    return [
        "--model_name_or_path", setup.paths["model_name_or_path"], "--vision_tower", setup.paths["vision_tower"],
        *(["--image_folder", setup.paths["image_folder"]] if setup.paths["image_folder"] else []),
        "--image_aspect_ratio", "pad", "--model_max_length", str(setup.model_max_length),
        "--per_device_train_batch_size", str(setup.batch_size),
        "--gradient_accumulation_steps", str(args.gradient_accumulation_steps),
        "--lr_scheduler_type", "cosine", "--warmup_ratio", str(setup.warmup_ratio),
        "--logging_steps", str(args.logging_steps), "--save_strategy", "steps", "--save_steps", str(args.save_steps),
        "--save_total_limit", "1", "--report_to", "none", "--seed", str(setup.seed), "--disable_tqdm", "true",
        "--output_dir", output_dir,
    ]


def stage1_flags(args, setup: Setup, output_dir: str) -> list:
    return common_flags(args, setup, output_dir) + [
        "--data_path", setup.paths["stage1_data_path"], "--conv_template", "plain", "--tune_mode", "connector",
        "--learning_rate", str(setup.stage1_lr), *_steps_flags(setup.stage1_steps),
        *shlex.split(args.train_args)]


def stage2_flags(args, setup: Setup, run: RunSpec, output_dir: str, stage1: str) -> list:
    curves = benchmark_list(args.curve_benchmarks, "--curve_benchmarks")
    return common_flags(args, setup, output_dir) + [
        "--data_path", resolve_data(run.data, args.world) if run.data else setup.paths["data_path"],
        "--conv_template", args.conv_template, "--pretrain_mm_mlp_adapter", stage1,
        *_steps_flags(run.steps or setup.stage2_steps),
        "--lora_r", str(setup.lora[0]), "--lora_alpha", str(setup.lora[1]),
        *(["--log_grad_stats", "true"] if args.log_grad_stats else []),
        *(["--eval_benchmarks", ",".join(curves), "--eval_data", setup.paths["eval_data"], "--eval_steps",
           str(args.curve_steps), "--eval_limit", str(args.curve_limit), "--eval_batch_size",
           str(setup.eval_batch_size)] if curves else []),
        *run.train_flags(), *shlex.split(args.train_args)]
