"""Token-weighted loss: a step's gradient does not depend on how its samples are split into micro-batches and ranks.

The data: 8 samples whose supervised lengths differ by more than 10x (one-word answers and long
descriptions), so micro-batches of 2 hold very different token counts. One optimizer step takes
all 8 samples in every layout: one process at batch 8 x accumulation 1, one process at batch 2 x
accumulation 4, and 2 ranks (the deepspeed launcher, gloo on this CPU) at batch 2 x accumulation 2.

How the gradients are compared: tests/support/gradient_capture.py runs the real train.py and saves,
just before the first Strategy.optimizer_step, every trainable parameter's full gradient, i.e. what
the optimizer receives after all micro-batches and the ranks' averaging (DDP's .grad, DeepSpeed's
safe_get_full_grad). That is exact: no optimizer arithmetic stands between the loss weighting and
what is compared. fp32 throughout; with token weighting the three layouts agree to float rounding
(the sums run in a different order), with --loss_weighting llava they differ by far more.

The same runs' log.jsonl give the logged loss: with token weighting it is the mean over all 8
samples' supervised tokens, which the test computes by hand from per-sample forwards of the
starting model.
"""
import json
import logging
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from launch_helpers import deepspeed_launch
from safetensors.torch import load_file
from train_helpers import flags, read_log, stage1_run, train_world

from llava_ln.core.processes import run_in_group

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAPTURE = os.path.join(REPO, "tests", "support", "gradient_capture.py")
ZERO2 = os.path.join(REPO, "zero_configs", "zero2.json")
SHORT = "yes"
LONG = ("a red circle is left of a blue square and there are two green triangles below one yellow circle "
        "while the background stays white")
# (per-device batch, accumulation, ranks): 8 samples per step in each.
LAYOUTS = {"8x1": (8, 1, 1), "2x4": (2, 4, 1), "2x2x2ranks": (2, 2, 2)}
STRATEGIES = {"torch": None, "zero2": ZERO2}

pytestmark = pytest.mark.slow


def _write_skewed_data(root: str) -> str:
    records = []
    for index in range(8):
        answer = LONG if index % 4 == 0 else SHORT  # two long samples among six one-word ones
        record = {"id": f"s{index}", "conversations": [
            {"from": "human", "value": ("<image>\n" if index % 2 else "") + "describe it"},
            {"from": "gpt", "value": answer}]}
        if index % 2:
            record["image"] = f"img{index}.png"
        records.append(record)
    path = os.path.join(root, "skewed.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(records, handle)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llm, tiny_vision):
    """Every (strategy, weighting, layout) once: one fresh process for the one-rank runs, one 2-rank launch."""
    world = train_world(tmp_path_factory, tiny_llm, tiny_vision)
    root = str(tmp_path_factory.mktemp("loss_weighting"))
    data = _write_skewed_data(root)
    common = dict(data_path=data, image_folder=os.path.dirname(world["instruct"]), max_steps=1, save_strategy="no",
                  pretrain_mm_mlp_adapter=stage1_run(world))
    one_rank, two_ranks, found = [], [], {}
    for strategy, config in STRATEGIES.items():
        for weighting in ("token", "llava"):
            for layout, (batch, accumulation, ranks) in LAYOUTS.items():
                name = f"{strategy}_{weighting}_{layout}"
                output = os.path.join(root, name)
                argv = flags(world, output, per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, loss_weighting=weighting,
                             deepspeed=config, **common)
                found[(strategy, weighting, layout)] = (output, os.path.join(root, f"{name}.safetensors"))
                (two_ranks if ranks == 2 else one_rank).append([argv, found[(strategy, weighting, layout)][1]])
    two_ranks.sort(key=lambda run: "--deepspeed" not in run[0])  # DeepSpeed's group first; DDP then reuses it
    for spec_name, spec in (("one_rank.json", one_rank), ("two_ranks.json", two_ranks)):
        with open(os.path.join(root, spec_name), "w", encoding="utf-8") as handle:
            json.dump(spec, handle)
    run_in_fresh_process_capturing(os.path.join(root, "one_rank.json"))
    deepspeed_launch([os.path.join(root, "two_ranks.json")], script=CAPTURE)
    return {"world": world, "data": data, "runs": found}


def run_in_fresh_process_capturing(spec: str) -> None:
    """The one-rank runs, one after another in one fresh process (DeepSpeed's process group stays out of pytest's)."""
    done = run_in_group([sys.executable, CAPTURE, spec], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def _grads(runs, strategy: str, weighting: str, layout: str) -> dict:
    return load_file(runs["runs"][(strategy, weighting, layout)][1])


def _largest_relative_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-30)) for n in a)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_token_weighting_gives_one_gradient_whatever_the_split(runs, strategy):
    reference = _grads(runs, strategy, "token", "8x1")
    for layout in ("2x4", "2x2x2ranks"):
        got = _grads(runs, strategy, "token", layout)
        assert got.keys() == reference.keys()
        for name, grad in reference.items():
            torch.testing.assert_close(got[name], grad, rtol=2e-5, atol=1e-7, msg=f"{layout} {name}")


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_llava_weighting_depends_on_the_split(runs, strategy):
    reference = _grads(runs, strategy, "llava", "8x1")
    # One micro-batch of 8: llava's mean over it is the token mean, so the layouts meet there ...
    assert _largest_relative_difference(reference, _grads(runs, strategy, "token", "8x1")) < 1e-5
    # ... and part ways as soon as micro-batches of different token counts are averaged as equals.
    for layout in ("2x4", "2x2x2ranks"):
        assert _largest_relative_difference(_grads(runs, strategy, "llava", layout), reference) > 0.05, layout


def test_both_strategies_compute_the_same_token_weighted_gradient(runs):
    assert _largest_relative_difference(_grads(runs, "zero2", "token", "2x2x2ranks"),
                                        _grads(runs, "torch", "token", "8x1")) < 1e-5


def _token_mean_by_hand(runs) -> float:
    """Each sample alone through the starting model: the sum of its next-token losses over all 8 samples,
    divided by their supervised tokens."""
    from llava_ln.checkpoint.run_folder import load_connector
    from llava_ln.data import DataArguments, DataCollator, build_train_dataset, load_data_components
    from llava_ln.model.args import ModelArguments
    from llava_ln.model.backbones import load_tokenizer
    from llava_ln.model.builder import build_mllm
    from llava_ln.model.forward import multimodal_forward

    world = runs["world"]
    model_args = ModelArguments(model_name_or_path=world["llm"], vision_tower=world["vision"])
    model, _ = build_mllm(model_args, load_tokenizer(world["llm"]))
    load_connector(model, stage1_run(world))
    data_args = DataArguments(data_path=runs["data"], conv_template="vicuna_v1",
                              image_folder=os.path.dirname(world["instruct"]))
    parts = load_data_components(model_args, data_args)
    dataset = build_train_dataset(data_args, parts.tokenizer, parts.image_processor, parts.template,
                                  parts.image_token_id, parts.num_image_tokens, seed=0)
    collate = DataCollator(parts.tokenizer)
    total, tokens, per_sample = 0.0, 0, []
    with torch.no_grad():
        for index in range(len(dataset)):
            batch = collate([dataset[index]])
            labels = batch.pop("labels")[0, 1:]
            logits = multimodal_forward(model, **batch).logits[0, :-1].float()
            supervised = labels != -100
            total += float(F.cross_entropy(logits[supervised], labels[supervised], reduction="sum"))
            tokens += int(supervised.sum())
            per_sample.append(int(supervised.sum()))
    assert max(per_sample) >= 10 * min(per_sample), per_sample  # the lengths this test is about
    return total / tokens


def test_the_logged_loss_is_the_step_token_mean(runs):
    expected = _token_mean_by_hand(runs)
    for (strategy, weighting, layout), (output, _) in runs["runs"].items():
        record = read_log(output)[1]
        assert record["loss_weighting"] == weighting
        if weighting == "token" or layout == "8x1":  # llava's mean of one micro-batch of 8 is the token mean
            assert record["loss"] == pytest.approx(expected, rel=1e-5), (strategy, weighting, layout)
        else:  # the mean of micro-batch means: near the token mean (a random model's token losses are all close
            # to log(vocabulary)), yet apart by far more than float rounding
            assert abs(record["loss"] - expected) > 1e-5 * expected, (strategy, weighting, layout)
    with open(os.path.join(runs["runs"][("torch", "token", "8x1")][0], "run_config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["training"]["loss_weighting"] == "token"


def test_a_step_without_supervised_tokens_is_skipped_not_divided_by_zero(tmp_path_factory, tiny_llm, tiny_vision,
                                                                         tmp_path, monkeypatch, caplog):
    """Step 2's only micro-batch has every label ignored: token weighting skips that step (no update, a warning,
    counted as skipped) instead of dividing by a zero token count; the steps around it train."""
    import llava_ln.train as train_module
    from llava_ln.train import main

    world = train_world(tmp_path_factory, tiny_llm, tiny_vision)
    real_collator = train_module.DataCollator

    class SecondBatchUnsupervised(real_collator):
        calls = 0

        def __call__(self, samples):
            batch = super().__call__(samples)
            SecondBatchUnsupervised.calls += 1
            if SecondBatchUnsupervised.calls == 2:
                batch["labels"] = torch.full_like(batch["labels"], -100)
            return batch

    monkeypatch.setattr(train_module, "DataCollator", SecondBatchUnsupervised)
    out = str(tmp_path / "run")
    loop_logger = logging.getLogger("llava_ln.training.loop")
    loop_logger.addHandler(caplog.handler)  # llava_ln does not propagate
    try:
        assert main(flags(world, out, stage=1, max_steps=3, save_steps=1)) == 0
    finally:
        loop_logger.removeHandler(caplog.handler)
    assert "step 2: no micro-batch of this step has a supervised token on any rank" in caplog.text
    log = read_log(out)
    assert math.isfinite(log[1]["loss"]) and math.isnan(log[2]["loss"]) and math.isfinite(log[3]["loss"])
    assert log[3]["skipped_steps"] == 1
    masters = [load_file(os.path.join(out, f"checkpoint-{step}", "resume", "master.safetensors")) for step in (1, 2)]
    assert masters[0].keys() and all(torch.equal(masters[0][n], masters[1][n]) for n in masters[0])  # no update
