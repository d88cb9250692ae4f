"""The toy world, a short stage-1 run and its VQA score, built once per test session for the demo tests; a tiny
world and recipe for whole `llava-ln demo` runs."""
import os

from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.runner import run_eval
from llava_ln.experiments.recipe import STAGE2_TEMPLATE, TOY, DemoRecipe, stage1_argv

SHORT_RECIPE = DemoRecipe(stage1_steps=100, stage2_steps=100)
# A whole `llava-ln demo` in seconds: a few steps (stage 2 long enough to be stopped after its first checkpoint),
# the benchmarks that need no Java, on 2% of the evaluation sets.
TINY_DEMO_FLAGS = ("--stage1_steps", "2", "--stage2_steps", "8", "--batch_size", "4", "--save_steps", "3",
                   "--model_max_length", "256", "--stage2_data", "conversation,captions:20",
                   "--benchmarks", "vqav2,mme", "--eval_scale", "0.02")
_CACHE = {}


def tiny_demo_world(tmp_path_factory) -> str:
    """A toy world at 5% of its size (seed 0, the demo's), written once per session."""
    if "tiny_world" not in _CACHE:
        from llava_ln.toy.generate import write_toy_world

        world = str(tmp_path_factory.mktemp("tiny_demo_world") / "toy_world")
        write_toy_world(world, seed=0, scale=0.05)
        _CACHE["tiny_world"] = world
    return _CACHE["tiny_world"]


def vqa_accuracy(model_path, world, output_dir, conv_template=None, bits=16) -> float:
    summary = run_eval(EvalArguments(
        benchmark="vqav2", model_path=model_path, data=os.path.join(world, "eval", "vqav2"), output_dir=output_dir,
        score=True, batch_size=TOY.eval_batch_size,
        max_new_tokens=TOY.answer_lengths.of("vqav2"), dtype="float32", device="cpu", conv_template=conv_template,
        bits=bits))
    return summary["scores"]["overall"]


def short_stage1(tmp_path_factory) -> dict:
    """{"world", "stage1", "untuned_vqa"}: the toy world (seed 0), 100 connector steps, and that model's VQA
    accuracy asked in the stage-2 template (so it sees the prompts the stage-2 models see)."""
    if "stage1" not in _CACHE:
        from llava_ln.toy.generate import write_toy_world
        from llava_ln.train import main as train_main

        root = tmp_path_factory.mktemp("demo_short")
        world, stage1 = str(root / "world"), str(root / "stage1")
        write_toy_world(world, seed=0)
        assert train_main(stage1_argv(world, SHORT_RECIPE, stage1)) == 0
        untuned = vqa_accuracy(stage1, world, str(root / "eval_stage1"), conv_template=STAGE2_TEMPLATE)
        _CACHE["stage1"] = {"world": world, "stage1": stage1, "untuned_vqa": untuned}
    return _CACHE["stage1"]
