"""What `llava-ln compare`'s flags (experiments/args.py) resolve to (toy world or LLaVA-1.5-7B), and each run's train.py flags.

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
from dataclasses import dataclass

from llava_ln.core.args import default_of
from llava_ln.core.benchmarks import benchmark_list
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.args import ImageFileArguments
from llava_ln.experiments.args import CompareArguments
from llava_ln.experiments.recipe import LLAVA_15, TOY, Recipe, stage2_data_path
from llava_ln.experiments.runs import RunSpec
from llava_ln.toy import layout


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
    args.require_output_dir("llava-ln compare")
    toy = bool(args.world)
    world = args.world
    if toy and not os.path.isfile(os.path.join(world, layout.WORLD_MANIFEST)):
        raise LlavaLnError(f"--world {world}: not a toy world (no {layout.WORLD_MANIFEST}; make one with llava-ln toy)")
    recipe = TOY if toy else LLAVA_15
    data = args.data_path or recipe.stage2_data
    paths = {
        "model_name_or_path": args.model_name_or_path or (os.path.join(world, "llm") if toy else None),
        "tokenizer_name_or_path": args.tokenizer_name_or_path,
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
        *(["--tokenizer_name_or_path", setup.paths["tokenizer_name_or_path"]]
          if setup.paths["tokenizer_name_or_path"] else []),
        *(["--image_folder", setup.paths["image_folder"]] if setup.paths["image_folder"] else []),
        # Passed only when set, so that a default run's flags (and a reused run's check) stay as they were.
        *(["--max_image_pixels", str(args.max_image_pixels)]
          if args.max_image_pixels != default_of(ImageFileArguments, "max_image_pixels") else []),
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
