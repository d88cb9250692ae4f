"""Training with --packing: resumes bit for bit, runs under 2-rank ZeRO-3, refuses what cannot be right.

The packed forward's equivalence with unpacked samples is tests/model/test_packed_forward.py; the packer's
properties are tests/data/test_packing.py. Here the whole run: train.py, the loop, checkpoints, DeepSpeed.
"""
import json
import os

import pytest
from launch_helpers import PARTITIONED_LOG, deepspeed_launch
from train_helpers import flags, read_log, train_world, trained

from llava_ln.cli import main as cli_main
from llava_ln.core.errors import LlavaLnError
from llava_ln.train import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The toy instruct samples hold about 200-240 tokens: two of them fill a micro-batch.
PACKED = dict(packing="true", max_tokens_per_batch=512, per_device_train_batch_size=None)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def _config(directory: str) -> dict:
    with open(os.path.join(directory, "run_config.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_a_packed_run_resumes_bit_for_bit(world, tmp_path, monkeypatch):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    assert main(flags(world, straight, **PACKED)) == 0
    log = read_log(straight)
    # Two samples per micro-batch, never more than the budget; a step reads a token budget, not a sample count.
    assert all(300 < log[step]["tokens"] <= 512 for step in (1, 2, 3, 4)), log
    resolved = _config(straight)["resolved"]
    assert resolved["tokens_per_step"] == 512 and resolved["global_batch_size"] is None
    assert main(flags(world, resumed, resume_from_checkpoint=os.path.join(straight, "checkpoint-2"), **PACKED)) == 0
    for name, tensor in trained(straight).items():
        assert tensor.equal(trained(resumed)[name]), name
    assert [read_log(resumed)[s]["loss"] for s in (3, 4)] == [log[s]["loss"] for s in (3, 4)]
    assert [read_log(resumed)[s]["tokens"] for s in (3, 4)] == [log[s]["tokens"] for s in (3, 4)]
    # The same flags on a machine where auto picks FlashAttention pack one row per micro-batch, other micro-batches
    # than the checkpoint's data position counts in: refused, not silently reading other samples.
    monkeypatch.setattr("llava_ln.train.one_row_for", lambda model: True)
    with pytest.raises(LlavaLnError, match=r"saved with packed_row_tokens=\d+ but this run has 512 \(the attention"):
        main(flags(world, str(tmp_path / "other_rows"), resume_from_checkpoint=os.path.join(straight, "checkpoint-2"),
                   **PACKED))


@pytest.mark.slow
def test_packing_under_two_rank_zero3_reads_what_one_process_reads(world, tmp_path):
    zero3, single = str(tmp_path / "zero3"), str(tmp_path / "single")
    common = dict(max_steps=2, save_steps=100, **PACKED)
    output = deepspeed_launch(flags(world, zero3, deepspeed=os.path.join(REPO, "zero_configs", "zero3.json"),
                                    **common))
    assert PARTITIONED_LOG in output
    assert main(flags(world, single, gradient_accumulation_steps=2, **common)) == 0
    ranks, one = read_log(zero3), read_log(single)
    # Two ranks with one packed micro-batch each read, per step, the samples one process reads in two.
    assert [ranks[s]["tokens"] for s in (1, 2)] == [one[s]["tokens"] for s in (1, 2)]
    assert ranks[1]["loss"] == pytest.approx(one[1]["loss"], rel=1e-5)
    assert _config(zero3)["resolved"]["tokens_per_step"] == 2 * 512


REFUSED = [
    ({"group_by_modality_length": "true"}, "--group_by_modality_length sorts padded batches by length"),
    ({"per_device_train_batch_size": 4}, "--per_device_train_batch_size counts samples; with --packing"),
    ({"packing": None}, "--max_tokens_per_batch sizes packed micro-batches: add --packing"),
    ({"max_tokens_per_batch": None}, "--packing needs --max_tokens_per_batch"),
    ({"max_tokens_per_batch": 64}, "instruct.json: record 'ins1' (#1): 249 tokens, more than --max_tokens_per_batch 64"),
]


@pytest.mark.parametrize("overrides,message", REFUSED, ids=[m.split(":")[0][:40] for _, m in REFUSED])
def test_combinations_that_cannot_be_right_are_one_line(world, tmp_path, capsys, overrides, message):
    out = str(tmp_path / "run")
    assert cli_main(["train", *flags(world, out, **{**PACKED, **overrides})]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("llava-ln: error:")]
    assert len(errors) == 1 and message in errors[0], errors


def test_describe_plans_memory_in_tokens_per_packed_micro_batch(tiny_llm, tiny_vision, tmp_path):
    from llava_ln.commands.args import DescribeArguments
    from llava_ln.commands.prepare import describe
    from llava_ln.model.args import ModelArguments
    from llava_ln.tuning.args import TuningArguments

    args = ModelArguments(model_name_or_path=tiny_llm("llama"), vision_tower=tiny_vision("clip"))
    memory = dict(bf16=False, model_max_length=512, memory_budget_gib=1000.0, gradient_checkpointing="auto")
    packed = describe(args, TuningArguments(tune_mode="ln"), memory=DescribeArguments(
        packing=True, max_tokens_per_batch=3000, **memory))["recompute"]
    assert packed["tokens_per_micro_batch"] == 3000  # the budget in rows of at most --model_max_length
    assert packed["micro_batch"] == {"rows": 6, "tokens_per_row": 500, "packed": True}
    padded = describe(args, TuningArguments(tune_mode="ln"), memory=DescribeArguments(
        per_device_train_batch_size=6, **memory))["recompute"]
    assert padded["tokens_per_micro_batch"] == 6 * 512 and padded["estimated_peak_gib"] > packed["estimated_peak_gib"]
    with pytest.raises(LlavaLnError, match="--packing needs --max_tokens_per_batch"):
        describe(args, TuningArguments(tune_mode="ln"), memory=DescribeArguments(packing=True, **memory))
    with pytest.raises(LlavaLnError, match="--per_device_train_batch_size counts samples; with --packing"):
        describe(args, TuningArguments(tune_mode="ln"), memory=DescribeArguments(
            packing=True, max_tokens_per_batch=3000, per_device_train_batch_size=6, **memory))
    # An LLM whose packed samples would see each other gets train's refusal, not a memory plan.
    from transformers import OPTConfig

    opt = str(tmp_path / "opt")
    OPTConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
              max_position_embeddings=128, word_embed_proj_dim=32, tie_word_embeddings=False).save_pretrained(opt)
    with pytest.raises(LlavaLnError, match="--packing: OPT.* does not pass the position ids"):
        describe(ModelArguments(model_name_or_path=opt, vision_tower=tiny_vision("clip")),
                 TuningArguments(tune_mode="ln"), memory=DescribeArguments(packing=True, max_tokens_per_batch=3000,
                                                                           **memory))
