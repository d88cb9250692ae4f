"""Issue 16, loosely and at small scale: a short 4-bit `ln` stage 2 on the toy world beats the untuned model.

The full-scale comparison with the unquantized run (the share of its VQA gain kept) is
bench/toy_quantized.py; its numbers are in the README.
"""
import os

import pytest

from llava_ln.demo.recipe import STAGE2_TEMPLATE, DemoRecipe, stage1_argv, stage2_argv
from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.runner import run_eval
from llava_ln.toy.generate import write_toy_world
from llava_ln.train import main as train_main

pytest.importorskip("bitsandbytes")


def vqa_accuracy(model_path, world, output_dir, conv_template=None, bits=16) -> float:
    summary = run_eval(EvalArguments(
        benchmark="vqav2", model_path=model_path, data=os.path.join(world, "eval", "vqav2"), output_dir=output_dir,
        score=True, batch_size=32, max_new_tokens=8, dtype="float32", device="cpu", conv_template=conv_template,
        bits=bits))
    return summary["scores"]["overall"]


@pytest.mark.slow
def test_short_4bit_ln_stage2_improves_toy_vqa_over_the_untuned_model(tmp_path):
    world = str(tmp_path / "world")
    write_toy_world(world, seed=0)
    recipe = DemoRecipe(stage1_steps=100, stage2_steps=100)
    stage1, stage2 = str(tmp_path / "stage1"), str(tmp_path / "stage2_4bit")
    assert train_main(stage1_argv(world, recipe, stage1)) == 0
    assert train_main(stage2_argv(world, recipe, stage2, stage1) + ["--bits", "4"]) == 0
    untuned = vqa_accuracy(stage1, world, str(tmp_path / "eval1"), conv_template=STAGE2_TEMPLATE)
    as_trained = vqa_accuracy(stage2, world, str(tmp_path / "eval2"), bits=4)
    shipped = vqa_accuracy(stage2, world, str(tmp_path / "eval3"))  # on the unquantized base, as merge writes
    # measured: 49.15 untuned, 55.90 as trained, 54.15 shipped (the unquantized run gains about 7 points, and
    # tests/demo/test_demo.py asks it for 3)
    assert as_trained > untuned + 3.0 and shipped > untuned + 3.0, (untuned, as_trained, shipped)
