"""The demo's training recipe on the toy world: every hyperparameter in one place.

The values were chosen so that the whole demo fits in a few minutes on a 2-core CPU while
stage 2 still clearly beats the connector-only model (see bench/toy_learnability.py for the
sweep that picked them). They are ordinary `llava-ln train` flags.
"""
import os
from dataclasses import dataclass

from llava_ln.toy import layout

STAGE2_TEMPLATE = "vicuna_v1"  # the toy LLM was pretrained on Vicuna-v1 conversations


@dataclass
class DemoRecipe:
    tune_mode: str = "ln"
    seed: int = 0
    batch_size: int = 16
    stage1_steps: int = 300
    stage1_lr: float = 2e-3
    stage2_steps: int = 600
    stage2_lr: float = 2e-3
    stage2_norm_lr: float = 1e-2
    stage2_connector_lr: float = 1e-3
    # Conversation data (the paper's finding: the most effective type) plus some captions, as
    # LLaVA-1.5's mix has; without them the tuned model forgets how to caption.
    stage2_data: str = "conversation,captions:300"
    model_max_length: int = 512
    warmup_ratio: float = 0.1


def _common(world: str, recipe: DemoRecipe, output_dir: str) -> list[str]:
    return [
        "--model_name_or_path", os.path.join(world, "llm"),
        "--vision_tower", os.path.join(world, "vision"),
        "--image_folder", os.path.join(world, layout.IMAGES),
        "--image_aspect_ratio", "pad",
        "--model_max_length", str(recipe.model_max_length),
        "--per_device_train_batch_size", str(recipe.batch_size),
        "--lr_scheduler_type", "cosine", "--warmup_ratio", str(recipe.warmup_ratio),
        "--logging_steps", "10", "--save_strategy", "no", "--report_to", "none",
        "--seed", str(recipe.seed), "--output_dir", output_dir, "--overwrite_output_dir",
    ]


def stage1_argv(world: str, recipe: DemoRecipe, output_dir: str) -> list[str]:
    """Stage 1: the connector alone on captions, plain template."""
    return _common(world, recipe, output_dir) + [
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


def stage2_argv(world: str, recipe: DemoRecipe, output_dir: str, stage1_dir: str) -> list[str]:
    """Stage 2: instruction tuning in recipe.tune_mode from the stage-1 connector."""
    return _common(world, recipe, output_dir) + [
        "--data_path", stage2_data_path(world, recipe.stage2_data),
        "--conv_template", STAGE2_TEMPLATE, "--tune_mode", recipe.tune_mode,
        "--pretrain_mm_mlp_adapter", stage1_dir,
        "--max_steps", str(recipe.stage2_steps), "--learning_rate", str(recipe.stage2_lr),
        "--norm_lr", str(recipe.stage2_norm_lr), "--mm_projector_lr", str(recipe.stage2_connector_lr),
    ]
