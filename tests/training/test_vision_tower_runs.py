"""Training with the vision tower tuned: a LLaVA-NeXT command line, exact resume, what the run folder holds,
and the original-LLaVA export of a tuned tower (tests/training/test_zero3.py trains the tower's norms on
2 ZeRO-3 ranks, resumed from a one-process ZeRO-2 run)."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import flags, read_log, train_world, trained

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.cli import main
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.model.parts import unwrap
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode

TOWER = "model.vision_tower."


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def expected_tower_tensors(world, **tuning) -> set:
    """The tower tensors the plan trains, from the tuning module on a meta model."""
    model, _ = build_mllm(ModelArguments(model_name_or_path=world["llm"], vision_tower=world["vision"]),
                          load_tokenizer(world["llm"]), on_meta=True)
    _, plan = apply_tune_mode(model, TuningArguments(tune_mode="ln", vision_lora_r=2, vision_lora_alpha=4, **tuning))
    return {n for n in plan.trainable if n.startswith(TOWER)}


def base_tensors(world) -> dict:
    model, _ = build_mllm(ModelArguments(model_name_or_path=world["llm"], vision_tower=world["vision"]),
                          load_tokenizer(world["llm"]))
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_same(first: dict, second: dict) -> None:
    assert set(first) == set(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def resumes_exactly(world, straight: str, resumed: str, argv_extra: list, **overrides) -> None:
    assert main(["train", *flags(world, resumed, resume_from_checkpoint=os.path.join(straight, "checkpoint-2"),
                                 **overrides), *argv_extra]) == 0
    assert_same(trained(straight), trained(resumed))
    adapter = os.path.join(straight, "adapter", "adapter_model.safetensors")
    if os.path.exists(adapter):
        assert_same(load_file(adapter), load_file(os.path.join(resumed, "adapter", "adapter_model.safetensors")))
    assert [read_log(resumed)[s]["loss"] for s in (3, 4)] == [read_log(straight)[s]["loss"] for s in (3, 4)]


def test_a_llava_next_command_line_trains_the_reachable_tower_and_resumes_exactly(world, tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    # LLaVA-NeXT's flags as its scripts write them; the tower recomputes under gradient checkpointing.
    next_flags = ["--version", "v1", "--unfreeze_mm_vision_tower", "True", "--mm_vision_tower_lr", "5e-3",
                  "--gradient_checkpointing", "True"]
    assert main(["train", *flags(world, straight), *next_flags]) == 0
    saved = trained(straight)
    expected = expected_tower_tensors(world, vision_tune_mode="full")
    assert {n for n in saved if n.startswith(TOWER)} == expected
    assert not any(".layers.1." in n or "post_layernorm" in n for n in expected)  # unreachable at layer -2
    with open(os.path.join(straight, "optimizer_groups.json"), encoding="utf-8") as handle:
        rates = {g["name"]: g["lr"] for g in json.load(handle)}
    assert {k: v for k, v in rates.items() if k.startswith("vision")} == {
        "vision_norms_no_decay": 5e-3, "vision_other_decay": 5e-3, "vision_other_no_decay": 5e-3}
    with open(os.path.join(straight, "manifest.json"), encoding="utf-8") as handle:
        assert json.load(handle)["vision_tune_mode"] == "full"

    # Every tensor the run did not train is the base's, bit for bit; every tower tensor it trained moved.
    base = base_tensors(world)
    loaded = {n: p.detach() for n, p in unwrap(load_checkpoint(straight).model).named_parameters()}
    assert {n for n in base if not torch.equal(base[n], loaded[n])} <= set(saved)
    assert all(not torch.equal(base[n], loaded[n]) for n in expected)

    resumes_exactly(world, straight, resumed, next_flags)


def test_tower_lora_and_norms_runs_save_resume_and_export_in_llava_layout(world, tmp_path, capsys):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    tower = dict(vision_tune_mode="lora", vision_lora_r=2, vision_lora_alpha=4)
    assert main(["train", *flags(world, straight, **tower)]) == 0
    adapter = load_file(os.path.join(straight, "adapter", "adapter_model.safetensors"))
    assert adapter and all("vision_tower" in n for n in adapter)
    assert {t.shape[0] for n, t in adapter.items() if "lora_A" in n} == {2}  # --vision_lora_r
    assert not any(n.startswith(TOWER) for n in trained(straight))  # the tower's base weights stay the base's
    resumes_exactly(world, straight, resumed, [], **tower)

    norms = str(tmp_path / "tower_ln")
    assert main(["train", *flags(world, norms, vision_tune_mode="ln", max_steps=2, conv_template="vicuna_v1")]) == 0
    assert {n for n in trained(norms) if n.startswith(TOWER)} == expected_tower_tensors(world, vision_tune_mode="ln")
    exported = str(tmp_path / "llava_layout")  # verified inside: read back as an original LLaVA checkpoint
    assert main(["export", "--checkpoint", norms, "--format", "llava", "--output_dir", exported,
                 "--max_new_tokens", "2"]) == 0
    with open(os.path.join(exported, "config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["mm_vision_tower"] == os.path.join(os.path.abspath(exported), "vision_tower")
    tower_copy = {n.removeprefix("vision_model."): t
                  for n, t in load_file(os.path.join(exported, "vision_tower", "model.safetensors")).items()}
    for name, value in trained(norms).items():
        if name.startswith(TOWER):
            assert torch.equal(tower_copy[name[len(TOWER):]], value), name

    # Both runs tune the LLM's norms: the refusal names the tower, which no adapter format carries, rather than
    # pointing a peft-lora export at peft-ln, which would refuse it in turn.
    capsys.readouterr()
    for export_format, run in (("peft-lora", straight), ("peft-lora", norms), ("peft-ln", norms)):
        code = main(["export", "--checkpoint", run, "--format", export_format, "--output_dir",
                     str(tmp_path / export_format)])
        assert code == 2 and not os.path.exists(tmp_path / export_format)
        assert f"--format {export_format}: {run} tuned the vision tower" in capsys.readouterr().err


def test_export_verification_fails_on_image_features_the_logits_would_hide():
    from types import SimpleNamespace

    from llava_ln.export.verify import Tolerance, compare_probe

    features = torch.linspace(-1, 1, 2 * 3 * 4).reshape(2, 3, 4)
    reference = SimpleNamespace(name="probe", input_ids=torch.tensor([1, 2]), pixel_values=None,
                                logits=torch.zeros(2, 5), generated=[3], image_features=features)
    same = {"input_ids": torch.tensor([1, 2]), "logits": torch.zeros(2, 5), "generated": [3],
            "image_features": features.clone()}
    assert compare_probe(reference, same, Tolerance(), tokenizer=None).problem is None
    moved = dict(same, image_features=features + 1e-2)  # an untuned tower: logits equal, features not
    result = compare_probe(reference, moved, Tolerance(), tokenizer=None)
    assert "image features (vision tower + connector) differ by up to 0.01" in result.problem
    assert "max|dfeature| 1.00e-02" in result.line()
    missing = compare_probe(reference, dict(same, image_features=None), Tolerance(), tokenizer=None)
    assert "image features of shape None" in missing.problem
