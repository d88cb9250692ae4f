"""Fast checks of the training plumbing: DeepSpeed config filling, the data order, flag validation."""
import json
import os
from dataclasses import replace

import pytest

from llava_ln.cli import main as cli_main
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.index import ModalityLengthGroupedSampler
from llava_ln.training.args import TrainingArguments, check_training_args, steps_from
from llava_ln.training.data_order import DataOrder
from llava_ln.training.zero.strategy import fill_zero_config, load_zero_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = [os.path.join(REPO, "zero_configs", f) for f in ("zero2.json", "zero3.json", "zero3_offload.json")]
ARGS = TrainingArguments(output_dir="out", per_device_train_batch_size=4, gradient_accumulation_steps=3,
                         max_grad_norm=0.7, bf16=True, learning_rate=3e-4, adam_beta2=0.95, weight_decay=0.1)


def _leaves(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaves(value)
    elif isinstance(node, list):
        for value in node:
            yield from _leaves(value)
    else:
        yield node


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_configs_fill_every_auto_from_the_flags(path):
    config = fill_zero_config(load_zero_config(path), ARGS, world_size=8, hidden_size=4096)
    assert "auto" not in set(map(str, _leaves(config)))
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 3
    assert config["train_batch_size"] == 4 * 3 * 8
    assert config["gradient_clipping"] == 0.7
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False
    assert config["zero_optimization"]["reduce_bucket_size"] == 4096 * 4096
    if config["zero_optimization"]["stage"] == 3:
        # About one decoder block gathered at a time (LLaVA's fixed 1e9 would hold a small model whole).
        assert config["zero_optimization"]["stage3_max_live_parameters"] == 12 * 4096 * 4096
        assert config["zero_optimization"]["stage3_max_reuse_distance"] == 12 * 4096 * 4096
        big = fill_zero_config(load_zero_config(path), ARGS, world_size=8, hidden_size=10240)["zero_optimization"]
        assert big["stage3_max_live_parameters"] == big["stage3_max_reuse_distance"] == 10**9
    assert "scheduler" not in config
    if "optimizer" in config:
        assert config["optimizer"]["params"] == {"lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}
    else:
        assert config["zero_allow_untested_optimizer"] is True


def test_a_config_without_clipping_gets_it_from_the_flag():
    config = fill_zero_config({"zero_optimization": {"stage": 2}}, ARGS, world_size=1, hidden_size=64)
    assert config["gradient_clipping"] == 0.7


@pytest.mark.parametrize("config,message", [
    ({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 16}, "train_micro_batch_size_per_gpu"),
    ({"zero_optimization": {"stage": 2}, "gradient_clipping": 1.0}, "gradient_clipping"),
    ({"zero_optimization": {"stage": 2}, "bf16": {"enabled": False}}, "enabled"),
    ({"zero_optimization": {"stage": 2}, "scheduler": {"type": "WarmupLR"}}, "scheduler"),
    ({"zero_optimization": {"stage": 0}}, "stage"),
    ({"zero_optimization": {"stage": 2, "some_bucket": "auto"}}, "some_bucket"),
])
def test_config_values_that_would_silently_break_training_are_refused(config, message):
    with pytest.raises(LlavaLnError, match=message):
        fill_zero_config(config, ARGS, world_size=1, hidden_size=64)


def test_unreadable_config_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LlavaLnError, match="not valid JSON"):
        load_zero_config(str(bad))
    with pytest.raises(LlavaLnError, match="no such file"):
        load_zero_config(str(tmp_path / "missing.json"))


def test_one_process_with_accumulation_sees_what_several_ranks_see_per_step():
    single = DataOrder(dataset_size=21, batch_size=2, world_size=1, accumulation=4, seed=3)
    ranks = [DataOrder(dataset_size=21, batch_size=2, world_size=4, accumulation=1, seed=3) for _ in range(4)]
    assert single.steps_per_epoch() == ranks[0].steps_per_epoch() == 3  # 11 batches topped up to 12
    for epoch in range(2):
        mine = single.rank_batches(epoch, 0, 0)
        per_rank = [order.rank_batches(epoch, rank, 0) for rank, order in enumerate(ranks)]
        for step in range(3):
            assert mine[step * 4:(step + 1) * 4] == [per_rank[r][step] for r in range(4)]
        assert set(sum(mine, [])) == set(range(21))  # every sample every epoch
    assert single.rank_batches(0, 0, 0) != single.rank_batches(1, 0, 0)  # reshuffled per epoch


def test_the_data_position_is_a_step_count():
    order = DataOrder(dataset_size=40, batch_size=2, world_size=2, accumulation=2, seed=0)
    for rank in range(2):
        full = order.rank_batches(1, rank, 0)
        assert order.rank_batches(1, rank, 3) == full[3 * 2:]


def test_grouped_batches_stay_modality_pure_and_accumulation_matches_ranks():
    has_image = [i % 3 != 0 for i in range(30)]

    def data_order(world_size, accumulation):
        # As train.py builds it: the sampler groups across all micro-batches of an optimizer step.
        sampler = ModalityLengthGroupedSampler(list(range(30)), has_image, batch_size=2,
                                               world_size=world_size * accumulation, seed=1)
        return DataOrder(dataset_size=30, batch_size=2, world_size=world_size, accumulation=accumulation, seed=1,
                         grouped_sampler=sampler)

    single, ranks = data_order(1, 2), data_order(2, 1)
    mine = single.rank_batches(0, 0, 0)
    theirs = [ranks.rank_batches(0, r, 0) for r in range(2)]
    assert mine == [b for step in zip(*theirs) for b in step]
    for batch in mine:
        assert len({has_image[i] for i in batch}) == 1


@pytest.mark.parametrize("change,message", [
    (dict(bf16=True, fp16=True), "exclusive"),
    (dict(evaluation_strategy="steps"), "evaluation_strategy"),
    (dict(report_to="mlflow"), "report_to"),
    (dict(gradient_checkpointing_ratio=1.5), "gradient_checkpointing_ratio"),
    (dict(output_dir=None), "output_dir"),
    (dict(kernels="triton"), "--kernels"),
    (dict(gradient_checkpointing="sometimes"), "--gradient_checkpointing"),
    (dict(memory_budget_gib=0.0), "--memory_budget_gib"),
    (dict(optim_state_dtype="fp8"), "--optim_state_dtype"),
    (dict(loss_weighting="sum"), "--loss_weighting 'sum' is not one of token, llava"),
    (dict(optim_state_dtype="bf16", deepspeed="zero_configs/zero2.json"), "plain PyTorch strategy"),
    (dict(sparse_embedding_grad=True, deepspeed="zero_configs/zero3.json"), "plain PyTorch strategy"),
])
def test_impossible_flags_are_refused_before_loading_anything(change, message):
    from llava_ln.core.flag_domains import check_flag_domains

    args = replace(ARGS, **change)
    with pytest.raises(LlavaLnError, match=message):  # as train.py runs them: each flag's domain, then combinations
        check_flag_domains(args)
        check_training_args(args)


@pytest.mark.parametrize("argv,expected", [
    ([], False), (["--gradient_checkpointing"], True), (["--gradient_checkpointing", "True"], True),
    (["--gradient_checkpointing", "false"], False), (["--gradient_checkpointing", "auto"], "auto"),
])
def test_gradient_checkpointing_takes_llava_booleans_and_auto(argv, expected):
    from llava_ln.core.flags import parse_flags
    from llava_ln.training.args import TrainingArguments

    (args,) = parse_flags(["--output_dir", "x", *argv], (TrainingArguments,), prog="t")
    assert args.gradient_checkpointing is expected if isinstance(expected, bool) else args.gradient_checkpointing == expected
    check_training_args(args)


def test_interval_flags_follow_hf_semantics():
    assert steps_from(10, 1000) == 10
    assert steps_from(0.25, 1000) == 250
    assert steps_from(0, 1000) == 0


def test_cli_train_rejects_unknown_flags_in_one_line(capsys):
    assert cli_main(["train", "--output_dir", "x", "--not_a_flag", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--not_a_flag" in err[0]


def test_shipped_configs_are_plain_json():
    for path in SHIPPED:
        with open(path, encoding="utf-8") as handle:
            assert isinstance(json.load(handle), dict)
