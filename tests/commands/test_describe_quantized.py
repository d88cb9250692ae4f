"""`llava-ln describe --bits 4|8` counts the block linears at their quantized size (config only)."""
import json
import math

import pytest

from llava_ln.commands.prepare import describe
from llava_ln.model.args import ModelArguments
from llava_ln.training.memory.policy import GIB
from llava_ln.tuning.args import TuningArguments

H, FFN, L = 4096, 11008, 32  # LLaVA-1.5-7B's LLM
LINEAR_SHAPES = [(H, H)] * 4 + [(FFN, H), (FFN, H), (H, FFN)]  # q, k, v, o, gate, up, down
QUANTIZED = L * sum(a * b for a, b in LINEAR_SHAPES)


def run(config_only_7b, mode, bits=16, **extra):
    llm, vision = config_only_7b
    return describe(ModelArguments(model_name_or_path=llm, vision_tower=vision, bits=bits, **extra),
                    TuningArguments(tune_mode=mode))


def _nf4_double_quant_bytes(out_features: int, in_features: int) -> float:
    """By hand: packed nibbles, one 8-bit absmax per 64, one fp32 absmax per 256 of those, the tables."""
    n = out_features * in_features
    blocks = math.ceil(n / 64)
    return n / 2 + blocks + 4 * math.ceil(blocks / 256) + 4 * 256 + 4 + 4 * 16


def test_7b_ln_simple_at_4_bits_fits_6_gib(config_only_7b):
    plain, quantized = run(config_only_7b, "ln_simple"), run(config_only_7b, "ln_simple", bits=4)
    assert quantized["total"] == plain["total"] and quantized["trainable"] == plain["trainable"]
    assert quantized["quantization"]["params"] == QUANTIZED
    expected = L * sum(_nf4_double_quant_bytes(*shape) for shape in LINEAR_SHAPES)
    assert quantized["quantization"]["bytes"] == round(expected)
    assert 0.51 < quantized["quantization"]["bytes_per_param"] < 0.52
    memory = quantized["memory_gib_per_gpu"]
    # what a 4-bit base is for: a 7B `ln_simple` run's static memory fits a 6 GiB card
    assert memory["total_static"] <= 6.0
    assert memory["quantized_weights"] == round(expected / GIB, 2)
    frozen_plain = (plain["total"] - plain["trainable"] - QUANTIZED) * 2
    assert memory["frozen_weights"] == round((frozen_plain + expected) / GIB, 2)
    assert plain["memory_gib_per_gpu"]["total_static"] - memory["total_static"] == pytest.approx(
        (QUANTIZED * 2 - expected) / GIB, abs=0.02)


def test_bits_order_the_memory_and_double_quant_saves(config_only_7b):
    totals = {bits: run(config_only_7b, "ln", bits=bits)["memory_gib_per_gpu"]["total_static"] for bits in (4, 8, 16)}
    assert totals[4] < totals[8] < totals[16]
    single = run(config_only_7b, "ln", bits=4, double_quant=False)["quantization"]
    assert single["bytes"] > run(config_only_7b, "ln", bits=4)["quantization"]["bytes"]
    assert single["bytes_per_param"] == pytest.approx(0.5 + 4 / 64, abs=1e-4)
    int8 = run(config_only_7b, "ln", bits=8)["quantization"]
    assert int8["bytes"] == L * sum(a * b + 4 * a for a, b in LINEAR_SHAPES)


def test_qlora_counts_the_base_linears_not_the_adapters(config_only_7b):
    lora = run(config_only_7b, "lora", bits=4)
    assert lora["quantization"]["params"] == QUANTIZED and lora["groups"]["lora"] > 0


@pytest.mark.parametrize("args,message", [
    (["--tune_mode", "full", "--bits", "4"], "--tune_mode full trains linear weights"),
    (["--tune_mode", "ln", "--bits", "4", "--strategy", "zero3"], "ZeRO-3"),
    (["--tune_mode", "ln", "--bits", "3"], "--bits 3: must be one of 4, 8, 16"),
    (["--tune_mode", "ln", "--bits", "4", "--quant_type", "int4"], "--quant_type 'int4'"),
])
def test_refusals_are_one_line(config_only_7b, capsys, args, message):
    from llava_ln.commands.prepare import describe_main
    from llava_ln.core.errors import run_command

    llm, vision = config_only_7b
    assert run_command(describe_main, ["--model_name_or_path", llm, "--vision_tower", vision, *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_cli_reports_the_quantization(config_only_7b, capsys):
    from llava_ln.cli import main

    llm, vision = config_only_7b
    capsys.readouterr()
    assert main(["describe", "--model_name_or_path", llm, "--vision_tower", vision, "--tune_mode", "ln_simple",
                 "--bits", "4", "--strategy", "zero2", "--num_gpus", "4"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["quantization"]["quant_type"] == "nf4" and payload["quantization"]["double_quant"] is True
    assert payload["memory_gib_per_gpu"]["strategy"] == "zero2" and payload["memory_gib_per_gpu"]["total_static"] <= 6


def test_the_recompute_plan_spends_the_memory_quantization_frees(config_only_7b):
    """--gradient_checkpointing auto plans with the quantized static figure: fewer blocks recompute."""
    from llava_ln.commands.args import DescribeArguments

    llm, vision = config_only_7b
    memory = DescribeArguments(per_device_train_batch_size=8, model_max_length=2048, memory_budget_gib=22.0,
                               gradient_checkpointing="auto")
    plans = {bits: describe(ModelArguments(model_name_or_path=llm, vision_tower=vision, bits=bits),
                            TuningArguments(tune_mode="ln_simple"), memory=memory)["recompute"] for bits in (16, 4)}
    assert plans[4]["checkpointed_blocks"] < plans[16]["checkpointed_blocks"]
    assert plans[4]["estimated_peak_gib"] <= 22.0 and plans[16]["estimated_peak_gib"] <= 22.0
