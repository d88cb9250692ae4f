"""The flags of `llava-ln compare`, the recipe they resolve to (toy world or LLaVA-1.5-7B), and each run's train.py flags.

--world fills every path from a toy world and switches to the toy recipe (the demo's batch, length,
warmup and rates; LoRA r=4, which is the share of the toy LLM's linear weights that r=128 is at 7B;
short answers and captions as core.benchmarks.TOY_ANSWER_LENGTHS says); without it the defaults are LLaVA-1.5-7B's (scripts/*.sh).
Every run gets the same common flags (model, data order, batch, schedule, checkpoints every
--save_steps so an interrupted run resumes, logging); stage-2 runs add the stage-1 connector, the
step count, gradient statistics, evaluation during training (the learning curves) and their own
mode and rates (runs.py). --train_args come last, so they override any of these.
"""
import os
import shlex
from dataclasses import dataclass, field
from typing import Optional

from llava_ln.core.benchmarks import BENCHMARKS, LLAVA_ANSWER_LENGTHS, TOY_ANSWER_LENGTHS, benchmark_list
from llava_ln.core.errors import LlavaLnError
from llava_ln.experiments.recipe import stage2_data_path
from llava_ln.experiments.runs import RunSpec
from llava_ln.toy import layout
from llava_ln.tuning.modes import TUNE_MODES


@dataclass
class CompareArguments:
    output_dir: str = field(metadata={"help": "Where the runs, comparison.json/.md and the plots go (restartable)."})
    world: Optional[str] = field(default=None, metadata={
        "help": "A toy world (llava-ln toy): fills every path below and uses the toy recipe."})
    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "The base LLM."})
    vision_tower: Optional[str] = field(default=None, metadata={"help": "The vision tower."})
    image_folder: Optional[str] = field(default=None, metadata={"help": "Root of the training images."})
    data_path: Optional[str] = field(default=None, metadata={
        "help": "Stage-2 data (--data_path syntax); with --world a toy mix such as conversation,detail:300 "
                "(default conversation,detail,reasoning: the toy LLaVA-Instruct)."})
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
        "help": "Stage-1 optimizer steps (toy default 300; else one epoch)."})
    stage2_steps: Optional[int] = field(default=None, metadata={
        "help": "Stage-2 optimizer steps of every run (toy default 300; else one epoch)."})
    stage1_lr: Optional[float] = field(default=None, metadata={"help": "Stage-1 rate (toy 2e-3, else 1e-3)."})
    per_device_train_batch_size: Optional[int] = field(default=None, metadata={"help": "Toy 16, else 16."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-steps per optimizer step."})
    model_max_length: Optional[int] = field(default=None, metadata={"help": "Toy 512, else 2048."})
    warmup_ratio: Optional[float] = field(default=None, metadata={"help": "Toy 0.1, else 0.03."})
    lora_r: Optional[int] = field(default=None, metadata={
        "help": "LoRA rank (toy 4: the share of the LLM's linear weights that r=128 is at 7B; else 128)."})
    lora_alpha: Optional[int] = field(default=None, metadata={"help": "LoRA alpha (toy 8, else 256)."})
    seed: int = field(default=0, metadata={"help": "Seed of every run (data order, initialisation)."})
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
    eval_batch_size: int = field(default=32, metadata={"help": "Questions per generate call."})
    max_new_tokens: int = field(default=0, metadata={
        "help": f"Longest answer in the final evaluation (0: toy {TOY_ANSWER_LENGTHS.short} for short answers and "
                f"{TOY_ANSWER_LENGTHS.caption} for captions; else {LLAVA_ANSWER_LENGTHS.short} and "
                f"{LLAVA_ANSWER_LENGTHS.caption})."})
    threads: int = field(default=0, metadata={"help": "CPU threads per process (0: torch's default)."})
    parallel: int = field(default=1, metadata={
        "help": "Runs trained at once (CPU: with --threads 1, 2 on a 2-core machine beats one run on 2 threads "
                "for small models; their times then share the CPU). GPUs: keep 1."})


@dataclass
class Setup:
    """The comparison's resolved settings (flags + the toy or 7B recipe)."""

    toy: bool
    paths: dict
    stage1_steps: int | None
    stage2_steps: int | None
    stage1_lr: float
    batch_size: int
    model_max_length: int
    warmup_ratio: float
    lora: tuple
    max_new_tokens: dict
    benchmarks: list


def resolve(args: CompareArguments) -> Setup:
    toy = bool(args.world)
    world = args.world
    if toy and not os.path.isfile(os.path.join(world, layout.WORLD_MANIFEST)):
        raise LlavaLnError(f"--world {world}: not a toy world (no {layout.WORLD_MANIFEST}; make one with llava-ln toy)")
    data = args.data_path or ("conversation,detail,reasoning" if toy else None)
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
    lengths = TOY_ANSWER_LENGTHS if toy else LLAVA_ANSWER_LENGTHS
    tokens = {b: args.max_new_tokens or lengths.of(b) for b in benchmarks}
    default = 300 if toy else None
    return Setup(
        toy=toy, paths=paths,
        stage1_steps=args.stage1_steps if args.stage1_steps is not None else default,
        stage2_steps=args.stage2_steps if args.stage2_steps is not None else default,
        stage1_lr=args.stage1_lr or (2e-3 if toy else 1e-3),
        batch_size=args.per_device_train_batch_size or 16,
        model_max_length=args.model_max_length or (512 if toy else 2048),
        warmup_ratio=args.warmup_ratio if args.warmup_ratio is not None else (0.1 if toy else 0.03),
        lora=(args.lora_r or (4 if toy else 128), args.lora_alpha or (8 if toy else 256)),
        max_new_tokens=tokens, benchmarks=benchmarks,
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
        "--save_total_limit", "1", "--report_to", "none", "--seed", str(args.seed), "--disable_tqdm", "true",
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
           str(args.eval_batch_size)] if curves else []),
        *run.train_flags(), *shlex.split(args.train_args)]
