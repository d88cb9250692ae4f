"""Stage 1 then stage 2 for every tuning mode, in-process on CPU (plain PyTorch strategy).

For each mode: the loss of the saved run (loaded back with load_checkpoint) is below the
starting model's on the training data; OUTPUT_DIR holds exactly the mode's trainable tensors;
N steps + resume + N steps gives bit-identical weights to 2N straight steps.
"""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from train_helpers import batch_loss, expected_trainable, flags, read_log, stage1_run, train_world, trained

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.checkpoint.manifest import read_manifest
from llava_ln.checkpoint.run_folder import load_connector
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.train import main
from llava_ln.tuning.modes import TUNE_MODES

# Rates that move a 2-block model visibly in 4 steps of 2 samples.
MODE_FLAGS = {
    "full": {"learning_rate": 1e-3},
    "lora": {"learning_rate": 1e-2, "mm_projector_lr": 1e-3},
    "ln": {"learning_rate": 1e-3, "norm_lr": 1e-2, "gradient_checkpointing": True, "gradient_checkpointing_ratio": 0.5},
    "ln_simple": {"learning_rate": 1e-3, "norm_lr": 5e-2},
    "attn_qv": {"learning_rate": 1e-3},
    "attn_mlp": {"learning_rate": 1e-3},
    "connector": {"learning_rate": 1e-1},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def _start_model(world, stage1: str):
    """The stage-2 starting point: base LLM + tower + the stage-1 connector (LoRA starts as a no-op)."""
    args = ModelArguments(model_name_or_path=world["llm"], vision_tower=world["vision"])
    model, _ = build_mllm(args, load_tokenizer(world["llm"]))
    load_connector(model, stage1)
    return model


def test_stage1_trains_the_connector_alone(world):
    out = stage1_run(world)
    assert set(trained(out)) == expected_trainable(world, "connector")
    assert sorted(f for f in os.listdir(out) if f.endswith(".safetensors")) == ["trained.safetensors"]
    manifest = read_manifest(out)
    assert (manifest.stage, manifest.tune_mode, manifest.conv_template) == (1, "connector", "plain")
    # Written at start: the resolved configuration and the trainable-parameter table; TensorBoard events.
    with open(os.path.join(out, "run_config.json"), encoding="utf-8") as handle:
        resolved = json.load(handle)["resolved"]
    assert (resolved["total_steps"], resolved["global_batch_size"], resolved["precision"]) == (4, 4, "fp32")
    with open(os.path.join(out, "trainable_parameters.txt"), encoding="utf-8") as handle:
        table = {line.split()[0]: line.split()[1:] for line in handle if line.strip()}
    connector_size = sum(t.numel() for t in trained(out).values())
    assert table["connector"] == [f"{connector_size:,}"] * 2 and table["llm_norms"][1] == "0"
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "runs")))
    # Every step sees all 4 captions, so the logged losses and the final one are on the same data.
    log = read_log(out)
    final = batch_loss(load_checkpoint(out).model, world, "captions", "plain")
    assert final < log[4]["loss"] < log[1]["loss"]


def test_stage1_resume_is_exact(world, tmp_path):
    straight = stage1_run(world)
    resumed = str(tmp_path / "stage1_resumed")
    assert main(flags(world, resumed, stage=1, resume_from_checkpoint=os.path.join(straight, "checkpoint-2"))) == 0
    _assert_same_tensors(trained(straight), trained(resumed))
    assert [read_log(resumed)[s]["loss"] for s in (3, 4)] == [read_log(straight)[s]["loss"] for s in (3, 4)]


@pytest.mark.parametrize("mode", list(TUNE_MODES))
def test_stage2_mode_trains_saves_and_resumes_exactly(world, tmp_path, mode):
    stage1 = stage1_run(world)
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    common = dict(tune_mode=mode, pretrain_mm_mlp_adapter=stage1, **MODE_FLAGS[mode])
    assert main(flags(world, straight, **common)) == 0

    # Exactly the mode's trainable tensors: LoRA factors in adapter/, the rest in trained.safetensors.
    expected = expected_trainable(world, mode)
    lora = {n for n in expected if ".lora_" in n}
    assert set(trained(straight)) == expected - lora
    adapter = os.path.join(straight, "adapter", "adapter_model.safetensors")
    assert os.path.exists(adapter) == bool(lora)
    if lora:
        assert len(load_file(adapter)) == len(lora)
    connector_trains = any(n.startswith("model.multi_modal_projector.") for n in expected)
    stage1_copy = os.path.join(straight, "stage1_connector.safetensors")
    assert os.path.exists(stage1_copy) == (not connector_trains)
    if not connector_trains:
        _assert_same_tensors(load_file(stage1_copy), trained(stage1))

    # The loss falls: the saved run, loaded back, beats the stage-2 starting point on the training data.
    assert batch_loss(load_checkpoint(straight).model, world) < batch_loss(_start_model(world, stage1), world)

    # Resume from the middle of the first epoch: same weights and losses as the straight run.
    assert main(flags(world, resumed, resume_from_checkpoint=os.path.join(straight, "checkpoint-2"),
                      **common)) == 0
    _assert_same_tensors(trained(straight), trained(resumed))
    if lora:
        _assert_same_tensors(load_file(adapter), load_file(os.path.join(resumed, "adapter",
                                                                        "adapter_model.safetensors")))
    assert [read_log(resumed)[s]["loss"] for s in (3, 4)] == [read_log(straight)[s]["loss"] for s in (3, 4)]


def test_pretrain_adapter_shape_mismatch_names_the_tensor(world, tmp_path):
    stage1 = trained(stage1_run(world))
    name = "model.multi_modal_projector.linear_2.weight"
    stage1[name] = torch.zeros(stage1[name].shape[0] + 1, stage1[name].shape[1])
    bad = str(tmp_path / "bad_connector.safetensors")
    save_file(stage1, bad)
    with pytest.raises(LlavaLnError, match=r"linear_2\.weight.*shape"):
        main(flags(world, str(tmp_path / "out"), tune_mode="ln", pretrain_mm_mlp_adapter=bad))
    assert not os.path.exists(os.path.join(tmp_path, "out", "manifest.json"))


def test_crash_during_a_save_leaves_the_previous_checkpoint_usable(world, tmp_path, monkeypatch):
    import llava_ln.training.checkpointing as checkpointing

    out = str(tmp_path / "run")
    real_save_run = checkpointing.save_run
    calls = []

    def save_run_that_dies_the_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real_save_run(*args, **kwargs)

    common = dict(tune_mode="ln_simple", pretrain_mm_mlp_adapter=stage1_run(world), norm_lr=5e-2)
    monkeypatch.setattr(checkpointing, "save_run", save_run_that_dies_the_second_time)
    # One line naming the checkpoint, the cause and what stayed intact (the write error reaches every rank).
    with pytest.raises(LlavaLnError, match=r"could not write .*checkpoint-4: disk full \(simulated\); nothing was "
                       r"lost: .*checkpoint-2 is intact"):
        main(flags(world, out, max_steps=6, save_steps=2, **common))
    monkeypatch.setattr(checkpointing, "save_run", real_save_run)
    assert sorted(os.listdir(out)) == ["checkpoint-2", "log.jsonl", "optimizer_groups.json", "run_config.json",
                                       "trainable_parameters.txt"]  # no half-written checkpoint-4, no temp folder
    assert load_checkpoint(os.path.join(out, "checkpoint-2")).manifest.global_step == 2
    assert main(flags(world, out, max_steps=6, save_steps=2, resume_from_checkpoint="latest", **common)) == 0
    assert read_manifest(out).global_step == 6


def test_partial_gradient_checkpointing_recomputes_the_first_blocks_only(world):
    """With half the blocks checkpointed, backward runs the first block a second time and not the second; the
    first then keeps only its input for backward, the second what it kept before; the gradients are the same."""
    from block_runs import count_block_runs, saves_by_block

    from llava_ln.kernels.accounting import SavedTensorBytes
    from llava_ln.model.parts import decoder_layers_of
    from llava_ln.training.memory.policy import enable_gradient_checkpointing
    from llava_ln.training.strategy import TrainingModule
    from llava_ln.tuning.args import TuningArguments
    from llava_ln.tuning.plan import apply_tune_mode

    batch = _first_batch(world)
    runs, kept, grads = {}, {}, {}
    for ratio in (None, 0.5):
        model, _ = apply_tune_mode(_start_model(world, stage1_run(world)), TuningArguments(tune_mode="ln"))
        if ratio is not None:
            assert enable_gradient_checkpointing(model, ratio) == 1
            assert [b.gradient_checkpointing for b in decoder_layers_of(model)] == [True, False]
        model.train()
        counted = count_block_runs(model)
        with SavedTensorBytes(model) as saved, saves_by_block(model, saved):
            loss = TrainingModule(model)(batch)
        forward_runs = list(counted)
        loss.backward()
        runs[ratio] = (forward_runs, list(counted))
        kept[ratio] = [saved.by_scope[index][0] for index in range(len(counted))]
        grads[ratio] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert runs[None] == ([1, 1], [1, 1])
    assert runs[0.5] == ([1, 1], [2, 1])  # forward once each; backward recomputes the checkpointed block only
    assert kept[0.5][1] == kept[None][1] and 0 < kept[0.5][0] < kept[None][0] / 4
    for name in grads[None]:  # recomputation changes memory, not the gradients
        torch.testing.assert_close(grads[0.5][name], grads[None][name], rtol=1e-5, atol=1e-7, msg=name)


def _first_batch(world) -> dict:
    from llava_ln.data import DataArguments, DataCollator, build_train_dataset, load_data_components

    data_args = DataArguments(data_path=world["instruct"], conv_template="vicuna_v1")
    parts = load_data_components(ModelArguments(model_name_or_path=world["llm"], vision_tower=world["vision"]),
                                 data_args)
    dataset = build_train_dataset(data_args, parts.tokenizer, parts.image_processor, parts.template,
                                  parts.image_token_id, parts.num_image_tokens, seed=0)
    return DataCollator(parts.tokenizer)([dataset[i] for i in range(4)])


def test_resume_refuses_a_different_global_batch(world, tmp_path):
    checkpoint = os.path.join(stage1_run(world), "checkpoint-2")
    with pytest.raises(LlavaLnError, match="global_batch_size"):
        main(flags(world, str(tmp_path / "out"), stage=1, per_device_train_batch_size=2,
                   resume_from_checkpoint=checkpoint))


def test_save_total_limit_keeps_the_newest_checkpoints(world, tmp_path):
    out = str(tmp_path / "run")
    assert main(flags(world, out, tune_mode="ln_simple", norm_lr=5e-2, pretrain_mm_mlp_adapter=stage1_run(world),
                      max_steps=5, save_steps=1, save_total_limit=2)) == 0
    assert sorted(f for f in os.listdir(out) if f.startswith("checkpoint-")) == ["checkpoint-3", "checkpoint-4"]


def test_a_finished_run_is_not_overwritten_by_accident(world):
    with pytest.raises(LlavaLnError, match="already holds a run"):
        main(flags(world, stage1_run(world), stage=1))


def _assert_same_tensors(first: dict, second: dict) -> None:
    assert set(first) == set(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name
