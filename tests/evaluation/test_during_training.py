"""Evaluation during training: scores in log.jsonl equal `llava-ln eval` on the saved run; two ZeRO-3 ranks agree with one."""
import json
import logging
import os
import sys

import pytest
from eval_helpers import toy_assets

from llava_ln.core.benchmarks import BENCHMARKS
from llava_ln.core.processes import free_port, run_in_group
from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.runner import run_eval
from llava_ln.evaluation.subset_scores import headline
from llava_ln.train import main

pytestmark = pytest.mark.slow
FOLDERS = {name: BENCHMARKS[name].folder for name in ("pope", "mme", "vqav2")}  # the curves this test scores
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZERO3 = os.path.join("zero_configs", "zero3.json")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return toy_assets(tmp_path_factory)["world"]


def _flags(world: str, out: str, **extra) -> list:
    values = {
        "model_name_or_path": os.path.join(world, "llm"), "vision_tower": os.path.join(world, "vision"),
        "image_folder": os.path.join(world, "images"), "data_path": os.path.join(world, "data/instruct_conversation.json"),
        "conv_template": "vicuna_v1", "tune_mode": "ln", "per_device_train_batch_size": 2, "max_steps": 2,
        # Rates 0: the weights stay as built, so every evaluation sees the same model.
        "learning_rate": 0.0, "norm_lr": 0.0, "mm_projector_lr": 0.0, "logging_steps": 1, "save_strategy": "no",
        "disable_tqdm": "true", "seed": 3, "output_dir": out, "eval_benchmarks": ",".join(FOLDERS),
        "eval_data": os.path.join(world, "eval"), "eval_steps": 1, "eval_limit": 0, "eval_batch_size": 8, **extra}
    return [part for key, value in values.items() for part in (f"--{key}", str(value))]


def _evals(out: str) -> dict:
    with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as handle:
        return {r["step"]: r["eval"] for r in map(json.loads, handle) if "eval" in r}


def test_scores_during_training_equal_the_official_evaluation_of_the_run(world, tmp_path):
    out = str(tmp_path / "one")
    assert main(_flags(world, out)) == 0
    evals = _evals(out)
    assert sorted(evals) == [1, 2]  # every --eval_steps and after the last step
    for name, folder in FOLDERS.items():
        summary = run_eval(EvalArguments(benchmark=name, model_path=out, data=os.path.join(world, "eval", folder),
                                         output_dir=str(tmp_path / "eval" / name), score=True, batch_size=4,
                                         max_new_tokens=16, device="cpu"))
        assert evals[2][f"{name}_items"] == summary["questions"]
        assert evals[2][name] == pytest.approx(headline(name, summary["scores"]), abs=1e-6), name
        assert evals[1][name] == evals[2][name]


@pytest.fixture(scope="module")
def one_rank(world, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("one_rank") / "run")
    assert main(_flags(world, out, max_steps=1, eval_limit=12)) == 0
    return _evals(out)


def test_two_zero3_ranks_share_the_questions_and_report_what_one_rank_reports(world, one_rank, tmp_path):
    """ZeRO-3 gathers parameters in every forward, so both ranks must generate in step (the hardest case;
    DDP runs the same code without that)."""
    out = str(tmp_path / "two")
    # Two ranks at batch 1 read what one rank at batch 2 reads.
    flags = _flags(world, out, max_steps=1, eval_limit=12, per_device_train_batch_size=1)
    command = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "2", "--master_port",
               str(free_port()), "llava_ln/train.py", *flags, "--deepspeed", os.path.join(REPO, ZERO3)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    done = run_in_group(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert _evals(out) == one_rank
    assert one_rank[1]["pope_items"] == 12


def test_stage1_plain_template_evaluates_question_by_question(world, tmp_path, caplog):
    """The "plain" template renders the image tags alone: nothing follows the image to answer from a shared
    prefix (the shared path used to crash there), so stage 1's evaluation takes the per-question path."""
    out = str(tmp_path / "stage1")
    flags = _flags(world, out, conv_template="plain", tune_mode="connector", max_steps=1, eval_limit=4,
                   eval_benchmarks="pope", data_path=os.path.join(world, "data", "pretrain.json"))
    answering_log = logging.getLogger("llava_ln.evaluation.answering")
    answering_log.addHandler(caplog.handler)  # training's logging setup stops llava_ln's records propagating
    try:
        assert main(flags) == 0
    finally:
        answering_log.removeHandler(caplog.handler)
    assert _evals(out)[1]["pope_items"] == 4
    assert "prompts that end with the image (conversation template 'plain')" in caplog.text
