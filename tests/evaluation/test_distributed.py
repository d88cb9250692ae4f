"""Two CPU ranks under torchrun: images split across ranks, gathered in-process, same files as one process."""
import json
import os
import subprocess
import sys

import pytest
from eval_helpers import session_assets, single_thread

from llava_ln.evaluation import answer_store
from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.runner import run_eval


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_llm, tiny_vision):
    return session_assets(tmp_path_factory, tiny_llm, tiny_vision)


def part_keys(output_dir, rank) -> list:
    with open(answer_store.part_path(str(output_dir), rank), encoding="utf-8") as handle:
        return [json.loads(line)["key"] for line in handle]


def image_of(key: str) -> int:
    return int(key) // 1000  # eval_helpers.write_vqav2: question_id = image_id * 1000 + k


@pytest.mark.slow
def test_two_ranks_split_the_questions_and_rank0_writes_the_same_results(assets, tmp_path):
    flags = ["--benchmark", "vqav2", "--model_path", assets["run"], "--data", assets["data"]["vqav2"],
             "--max_new_tokens", "5", "--batch_size", "4", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    process = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "llava_ln.cli", "eval", *flags, "--output_dir", str(tmp_path / "two"), "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    summary = json.loads(process.stdout[process.stdout.index("{"):])  # only rank 0 prints
    assert summary["generated_answers"] == 18

    assert summary["generation"] == {"path": "shared_prefix", "questions": 18, "prefix_fills": 9,
                                     "vision_tower_passes": 9}  # both ranks' counts, summed
    rank0, rank1 = part_keys(tmp_path / "two", 0), part_keys(tmp_path / "two", 1)
    # Whole images per rank (9 images of 2 questions): an image's questions and its prefix fill on one rank.
    assert sorted(map(len, (rank0, rank1))) == [8, 10] and not set(rank0) & set(rank1)
    assert not {image_of(k) for k in rank0} & {image_of(k) for k in rank1}

    with single_thread():
        single = run_eval(EvalArguments(benchmark="vqav2", model_path=assets["run"], data=assets["data"]["vqav2"],
                                        output_dir=str(tmp_path / "one"), max_new_tokens=5, batch_size=4, device="cpu"))
    assert open(summary["files"]["results"], "rb").read() == open(single["files"]["results"], "rb").read()
