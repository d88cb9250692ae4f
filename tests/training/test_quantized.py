"""Stage 2 on a 4-bit (and 8-bit) frozen base, in-process on CPU with bitsandbytes.

Each mode that leaves the block linears frozen trains on the quantized base, its loss falls, and the
run folder holds exactly the tensors the mode trains on an unquantized base (nothing quantized is
saved); the modes that would train quantized weights, and ZeRO-3, are refused with one line.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import batch_loss, expected_trainable, flags, read_log, stage1_run, train_world, trained

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.checkpoint.manifest import read_manifest
from llava_ln.checkpoint.run_folder import load_connector
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.model.quantize import QuantSettings, block_linears, quantization_of, quantize_llm_linears
from llava_ln.train import main
from llava_ln.tuning.modes import TUNE_MODES

pytest.importorskip("bitsandbytes")

MODE_FLAGS = {
    "ln": {"learning_rate": 1e-3, "norm_lr": 1e-2, "gradient_checkpointing": True},
    "ln_simple": {"learning_rate": 1e-3, "norm_lr": 5e-2},
    "lora": {"learning_rate": 1e-2, "mm_projector_lr": 1e-3},
    "connector": {"learning_rate": 1e-1},
}
NF4 = QuantSettings(4, "nf4", True)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZERO_CONFIGS = {stage: os.path.join(REPO, "zero_configs", f"zero{stage}.json") for stage in (2, 3)}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def _quantized_start(world, stage1: str, settings: QuantSettings):
    model, _ = build_mllm(ModelArguments(model_name_or_path=world["llm"], vision_tower=world["vision"]),
                          load_tokenizer(world["llm"]))
    load_connector(model, stage1)
    quantize_llm_linears(model, settings)
    return model


def _as_trained(run: str, settings: QuantSettings):
    """The run applied to the base quantized again, as training saw it (LoRA folded after quantizing
    would differ, so LoRA stays unmerged on top of the quantized layers here)."""
    return load_checkpoint(run, quantization=settings).model


def test_every_mode_that_keeps_block_linears_frozen_is_covered():
    assert set(MODE_FLAGS) == {name for name, mode in TUNE_MODES.items() if not mode.trains_llm_linears}


@pytest.mark.parametrize("mode", list(MODE_FLAGS))
def test_mode_trains_on_a_4bit_base_and_saves_only_trained_tensors(world, tmp_path, mode):
    stage1 = stage1_run(world)
    out = str(tmp_path / "run")
    assert main(flags(world, out, tune_mode=mode, pretrain_mm_mlp_adapter=stage1, bits=4, **MODE_FLAGS[mode])) == 0

    expected = expected_trainable(world, mode)
    lora = {n for n in expected if ".lora_" in n}
    assert set(trained(out)) == expected - lora
    adapter = os.path.join(out, "adapter", "adapter_model.safetensors")
    assert os.path.exists(adapter) == bool(lora)
    if lora:
        assert set(load_file(adapter)) and len(load_file(adapter)) == len(lora)
    manifest = read_manifest(out)
    assert manifest.quantization == {"bits": 4, "quant_type": "nf4", "double_quant": True}

    # The loss falls on the quantized base the run trained on.
    before = batch_loss(_quantized_start(world, stage1, NF4), world)
    assert batch_loss(_as_trained(out, NF4), world) < before


def test_8bit_ln_trains_and_resumes_exactly(world, tmp_path):
    stage1 = stage1_run(world)
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    common = dict(tune_mode="ln", pretrain_mm_mlp_adapter=stage1, bits=8, **MODE_FLAGS["ln"])
    assert main(flags(world, straight, **common)) == 0
    assert set(trained(straight)) == expected_trainable(world, "ln")
    assert read_manifest(straight).quantization["bits"] == 8
    int8 = QuantSettings(8)
    assert batch_loss(_as_trained(straight, int8), world) < batch_loss(_quantized_start(world, stage1, int8), world)
    # Quantizing is deterministic, so a resumed run continues exactly.
    assert main(flags(world, resumed, resume_from_checkpoint=os.path.join(straight, "checkpoint-2"), **common)) == 0
    for name, value in trained(straight).items():
        assert (trained(resumed)[name] == value).all(), name
    assert [read_log(resumed)[s]["loss"] for s in (3, 4)] == [read_log(straight)[s]["loss"] for s in (3, 4)]


def test_only_block_linears_are_quantized(world):
    model = _quantized_start(world, stage1_run(world), NF4)
    quantized = {name for name, _ in block_linears(model)}
    assert quantized and all(".layers." in n and "language_model" in n for n in quantized)
    assert quantization_of(model) == NF4
    for name, param in model.named_parameters():
        packed = param.dtype == torch.uint8
        assert packed == (name.rpartition(".")[0] in quantized and name.endswith(".weight")), name


def _one_line_refusal(capsys, argv) -> str:
    """`llava-ln train` in this process: exit status 2 and one line on stderr (the refusal comes before
    any process group or model exists)."""
    from llava_ln.core.errors import run_command

    capsys.readouterr()
    assert run_command(main, argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("mode", [name for name, mode in TUNE_MODES.items() if mode.trains_llm_linears])
def test_modes_that_train_block_linears_are_refused_in_one_line(world, tmp_path, capsys, mode):
    line = _one_line_refusal(capsys, flags(world, str(tmp_path / "run"), tune_mode=mode, bits=4))
    assert f"--tune_mode {mode}" in line and "--bits 4" in line
    assert not os.path.exists(tmp_path / "run")


def test_zero3_is_refused_in_one_line(world, tmp_path, capsys):
    line = _one_line_refusal(capsys, flags(world, str(tmp_path / "run"), bits=4, deepspeed=ZERO_CONFIGS[3]))
    assert "ZeRO stage 3" in line and "zero2" in line


def test_apply_tune_mode_refuses_on_a_quantized_model(world):
    from llava_ln.tuning.args import TuningArguments
    from llava_ln.tuning.plan import apply_tune_mode

    with pytest.raises(LlavaLnError, match="--tune_mode full trains linear weights"):
        apply_tune_mode(_quantized_start(world, stage1_run(world), NF4), TuningArguments(tune_mode="full"))


@pytest.mark.slow
def test_zero2_trains_on_a_4bit_base(world, tmp_path):
    """DeepSpeed ZeRO-2 (one rank, gloo, in a fresh process) holds the quantized base as any frozen weight."""
    out = str(tmp_path / "zero2")
    argv = flags(world, out, tune_mode="ln", pretrain_mm_mlp_adapter=stage1_run(world), bits=4,
                 deepspeed=ZERO_CONFIGS[2], save_strategy="no", **MODE_FLAGS["ln"])
    done = subprocess.run([sys.executable, os.path.join(REPO, "tests", "support", "run_trainings.py"),
                           _write_runs(tmp_path, [argv])], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert set(trained(out)) == expected_trainable(world, "ln")
    before = batch_loss(_quantized_start(world, stage1_run(world), NF4), world)
    assert batch_loss(_as_trained(out, NF4), world) < before


def _write_runs(tmp_path, runs: list) -> str:
    path = str(tmp_path / "runs.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(runs, handle)
    return path
