"""Subset scoring (evaluation during training) gives what the official file-based scorers give on the same items."""
import os
import random

import pytest

from llava_ln.core.benchmarks import BENCHMARKS
from llava_ln.evaluation.benchmarks.common import DataFlags
from llava_ln.evaluation.benchmarks.registry import get_benchmark
from llava_ln.evaluation.subset_scores import evenly_spaced, headline, score_subset
from llava_ln.scoring.dispatch import score
from llava_ln.toy.generate import write_toy_world

WORDS = ["yes", "no", "Yes, there is.", "No.", "red", "two", "a circle", "blue square", "maybe", "3"]


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("subset") / "world")
    write_toy_world(out, seed=0, scale=0.05, backbones=False)
    return os.path.join(out, "eval")


def _answers(items, seed):
    rng = random.Random(seed)
    return {item.key: rng.choice(WORDS) for item in items}


# Captions go through the very same score_captions in both paths (only the image filter differs), and METEOR
# costs a minute of Java, so they are left out here.
@pytest.mark.parametrize("name", ["vqav2", "pope", "mme"])
def test_subset_of_everything_scores_like_the_official_scorer(eval_root, tmp_path, name):
    benchmark = get_benchmark(name)
    sources = benchmark.locate(DataFlags(data=os.path.join(eval_root, BENCHMARKS[name].folder)))
    items = benchmark.read_items(sources, benchmark.default_prompt)
    answers = _answers(items, seed=len(items))
    official = score(benchmark.write_outputs(sources, items, answers, str(tmp_path))["score"])
    ours = score_subset(name, sources, evenly_spaced(items, 0, name), answers)
    assert headline(name, ours) == pytest.approx(headline(name, official), abs=1e-9)


def test_evenly_spaced_keeps_order_and_mme_pairs():
    items = list(range(100))
    assert evenly_spaced(items, 4, "vqav2") == [0, 25, 50, 75]
    assert evenly_spaced(items, 0, "vqav2") == items and evenly_spaced(items[:3], 10, "pope") == [0, 1, 2]
    pairs = evenly_spaced(items, 6, "mme")  # 3 whole images, each its two consecutive questions
    assert pairs == [0, 1, 32, 33, 66, 67]


def test_subset_scores_only_its_own_items(eval_root):
    benchmark = get_benchmark("pope")
    sources = benchmark.locate(DataFlags(data=os.path.join(eval_root, "pope")))
    items = benchmark.read_items(sources, benchmark.default_prompt)
    subset = evenly_spaced(items, 9, "pope")
    labels = {}
    for split, path in sources["labels"].items():
        import json

        for line in open(path, encoding="utf-8"):
            record = json.loads(line)
            labels[f"{split}/{record['question_id']}"] = record["label"]
    perfect = {item.key: labels[item.key] for item in subset}  # right on the subset, nothing elsewhere
    assert headline("pope", score_subset("pope", sources, subset, perfect)) == pytest.approx(100.0)
