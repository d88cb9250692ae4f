"""`llava-ln eval --bits 4` evaluates a run on the quantized base it trained on.

The run's tensors (and a LoRA adapter, kept unmerged: QLoRA as trained) go onto the base whose block
linears were quantized first; without --bits the same folder is evaluated on the unquantized base.
"""
import json
import os

import pytest
import torch
from eval_helpers import eval_cli, make_run_folder, single_thread, toy_assets

from llava_ln.evaluation.model_loading import load_eval_model
from llava_ln.model.parts import unwrap
from llava_ln.model.quantize import QuantSettings, block_linears, quantization_of

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_assets(tmp_path_factory)


def test_eval_bits_4_answers_every_question_and_records_the_setting(capsys, toy, tmp_path):
    out = tmp_path / "vqav2"
    printed = eval_cli(capsys, "--benchmark", "vqav2", "--model_path", toy["run"], "--data",
                       os.path.join(toy["eval"], "vqav2"), "--output_dir", str(out), "--max_new_tokens", "4",
                       "--batch_size", "16", "--device", "cpu", "--bits", "4")
    assert printed["generated_answers"] == printed["questions"] > 0
    settings = json.load(open(next(os.path.join(root, f) for root, _, files in os.walk(out) for f in files
                                   if f == "settings.json"), encoding="utf-8"))
    assert settings["bits"] == 4


def test_qlora_run_is_evaluated_with_its_adapter_on_the_4bit_layers(toy, tmp_path):
    world = toy["world"]
    run = make_run_folder(str(tmp_path / "qlora"), os.path.join(world, "llm"), os.path.join(world, "vision"),
                          tune_mode="lora", scale=0.02)
    quantized = load_eval_model(run, torch.device("cpu"), bits=4).model
    plain = load_eval_model(run, torch.device("cpu")).model
    assert quantization_of(quantized) == QuantSettings(4) and quantization_of(plain) is None
    assert quantized is not unwrap(quantized)  # the adapter stays unmerged on the quantized base
    adapted = [module for module in quantized.modules() if hasattr(module, "lora_A")]
    assert adapted and all(isinstance(m.base_layer, bnb.nn.Linear4bit) for m in adapted)
    assert len(adapted) == len(block_linears(plain))
    assert plain is unwrap(plain)  # merged into the unquantized base, as before
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        difference = (quantized(input_ids=ids).logits - plain(input_ids=ids).logits).abs().max()
    assert 0 < difference < 1.0  # 4-bit rounding moves the logits a little, not a lot
