"""`llava-ln describe` from config alone (no weights read), checked against hand-computed counts."""
import json
import subprocess
import sys

import pytest
from transformers import Gemma2Config

from llava_ln.commands.prepare import describe
from llava_ln.model.args import ModelArguments
from llava_ln.tuning.args import TuningArguments

# LLaVA-1.5-7B shape, by hand:
H, FFN, L, V = 4096, 11008, 32, 32000 + 1  # +1: the <image> token appended to Vicuna's vocabulary
LLM_BLOCK = 4 * H * H + 3 * H * FFN + 2 * H  # q,k,v,o + gate,up,down + two RMSNorm weights
NORMS = L * 2 * H + H  # = 266,240
EMBED = V * H
VISION_H, VISION_I, VISION_L, PATCHES = 1024, 4096, 24, (336 // 14) ** 2
VISION_LAYER = 4 * (VISION_H * VISION_H + VISION_H) + 2 * VISION_H * VISION_I + VISION_I + VISION_H + 4 * VISION_H
VISION = (
    3 * 14 * 14 * VISION_H + VISION_H + (PATCHES + 1) * VISION_H  # patch conv (no bias), CLS, positions
    + 2 * 2 * VISION_H  # pre- and post-layernorm (weight + bias)
    + VISION_L * VISION_LAYER
)
CONNECTOR = (VISION_H * H + H) + (H * H + H)  # = 20,979,712
TOTAL = L * LLM_BLOCK + H + 2 * EMBED + VISION + CONNECTOR


def run(config_only_7b, mode, with_names=False, **extra):
    llm, vision = config_only_7b
    return describe(ModelArguments(model_name_or_path=llm, vision_tower=vision), TuningArguments(tune_mode=mode, **extra),
                    with_names=with_names)


def test_hand_computed_constants_are_the_published_ones():
    assert NORMS == 266_240 and CONNECTOR == 20_979_712


def test_7b_ln_simple_and_connector(config_only_7b):
    ln_simple = run(config_only_7b, "ln_simple")
    assert ln_simple["total"] == TOTAL
    assert ln_simple["trainable"] == NORMS == ln_simple["groups"]["llm_norms"]
    assert run(config_only_7b, "connector")["trainable"] == CONNECTOR


def test_7b_ln_and_full_and_lora(config_only_7b):
    ln = run(config_only_7b, "ln")
    assert ln["groups"] == {"vision_norms": 0, "vision_other": 0, "vision_lora": 0, "connector": CONNECTOR,
                            "llm_norms": NORMS, "embeddings": EMBED, "lm_head": EMBED, "llm_other": 0, "lora": 0}
    assert sum(ln["group_totals"][g] for g in ("vision_norms", "vision_other")) == VISION
    full = run(config_only_7b, "full")
    assert full["trainable"] == TOTAL - VISION
    lora = run(config_only_7b, "lora")
    r = 128
    lora_params = L * r * (4 * (H + H) + 3 * (H + FFN))  # A: r x in, B: out x r for q,k,v,o,gate,up,down
    assert lora["groups"]["lora"] == lora_params
    assert lora["trainable"] == lora_params + CONNECTOR
    assert lora["total"] == TOTAL + lora_params


# The tower's norms by hand at the default feature layer -2: LLaVA reads hidden_states[-2], the output of
# encoder layer 23 of 24, so layer 24 (index 23) cannot change the features, and post_layernorm acts on
# nothing LLaVA reads (hidden_states come before it) at any feature layer. What can train:
#   23 reachable layers x 2 LayerNorms (layer_norm1, layer_norm2) x (1024 weight + 1024 bias) = 94,208
#   + pre_layrnorm (1024 weight + 1024 bias)                                                 =  2,048
#                                                                                              = 96,256
# At feature layer -1 all 24 layers reach the features: 24 x 2 x 2048 + 2048 = 100,352.
TOWER_NORMS_AT_MINUS_2 = 23 * 2 * (VISION_H + VISION_H) + 2 * VISION_H
TOWER_NORMS_AT_MINUS_1 = 24 * 2 * (VISION_H + VISION_H) + 2 * VISION_H


def test_7b_tower_ln_counts_exactly_the_reachable_tower_norms(config_only_7b):
    assert (TOWER_NORMS_AT_MINUS_2, TOWER_NORMS_AT_MINUS_1) == (96_256, 100_352)
    frozen, tower_ln = run(config_only_7b, "ln"), run(config_only_7b, "ln", vision_tune_mode="ln", with_names=True)
    assert tower_ln["groups"]["vision_norms"] == TOWER_NORMS_AT_MINUS_2
    assert tower_ln["trainable"] == frozen["trainable"] + TOWER_NORMS_AT_MINUS_2
    assert tower_ln["total"] == frozen["total"] == TOTAL and tower_ln["vision_tune_mode"] == "ln"
    tower_names = [n for n in tower_ln["names"] if n.startswith("model.vision_tower.")]
    assert len(tower_names) == 23 * 2 * 2 + 2
    assert not any(".layers.23." in n or "post_layernorm" in n for n in tower_names)
    # The full tower: everything but layer 24 and post_layernorm; static memory (plain PyTorch, bf16) then
    # counts 4 + 4 + 8 bytes per trained tower weight instead of a frozen bf16 weight's 2.
    reachable = VISION - VISION_LAYER - 2 * VISION_H
    full = run(config_only_7b, "ln", vision_tune_mode="full")
    assert full["groups"]["vision_norms"] + full["groups"]["vision_other"] == reachable
    added_gib = reachable * (16 - 2) / 2**30  # about 3.94 GiB
    assert full["memory_gib_per_gpu"]["total_static"] - frozen["memory_gib_per_gpu"]["total_static"] == \
        pytest.approx(added_gib, abs=0.011)
    llm, vision = config_only_7b
    last = describe(ModelArguments(model_name_or_path=llm, vision_tower=vision, mm_vision_select_layer=-1),
                    TuningArguments(tune_mode="ln", vision_tune_mode="ln"))
    assert last["groups"]["vision_norms"] == TOWER_NORMS_AT_MINUS_1


def test_gemma2_extra_norms_count_as_llm_norms(tmp_path, config_only_7b):
    Gemma2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8).save_pretrained(tmp_path / "gemma2")
    result = describe(ModelArguments(model_name_or_path=str(tmp_path / "gemma2"), vision_tower=config_only_7b[1]),
                      TuningArguments(tune_mode="ln_simple"), with_names=True)
    # four norms per Gemma2 block (input, post-attention, pre- and post-feedforward) + the final norm
    assert result["trainable"] == (2 * 4 + 1) * 32
    assert any("pre_feedforward_layernorm" in n for n in result["names"])


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "llava_ln.cli", "describe", *args], capture_output=True, text=True)


def test_cli_prints_one_json_object(config_only_7b):
    llm, vision = config_only_7b
    done = _cli("--model_name_or_path", llm, "--vision_tower", vision, "--tune_mode", "ln_simple", "--names")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["trainable"] == NORMS and len(payload["names"]) == 2 * L + 1


@pytest.mark.parametrize("args,message", [
    (["--tune_mode", "bogus"], "--tune_mode 'bogus'"),
    (["--model_name_or_path", "/nonexistent/llm"], "/nonexistent/llm"),
    (["--frobnicate", "1"], "unknown flag"),
])
def test_cli_errors_are_one_line_exit_2(config_only_7b, args, message):
    llm, vision = config_only_7b
    done = _cli("--model_name_or_path", llm, "--vision_tower", vision, *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr


def test_worker_error_is_reduced_to_its_own_line():
    from llava_ln.core.errors import LlavaLnError, one_line

    wrapped = LlavaLnError(
        "Caught LlavaLnError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        f"{LlavaLnError.__module__}.LlavaLnError: data.json record 7: image a.png is corrupt\n"
    )
    assert one_line(wrapped) == "data.json record 7: image a.png is corrupt"
    assert one_line(LlavaLnError("plain message")) == "plain message"


def test_static_memory_estimate_by_hand(config_only_7b):
    from llava_ln.training.memory.policy import GIB, static_memory_per_gpu

    ln = run(config_only_7b, "ln")
    torch_plan = ln["memory_gib_per_gpu"]
    frozen, trainable = TOTAL - ln["trainable"], ln["trainable"]
    assert torch_plan["frozen_weights"] == round(frozen * 2 / GIB, 2)
    assert torch_plan["trainable_weights_and_states"] == round(trainable * 16 / GIB, 2)
    # ZeRO-3 on 8 GPUs: everything sharded; ZeRO-2 keeps the bf16 weights whole on every GPU
    zero3 = static_memory_per_gpu(frozen, trainable, "zero3", num_gpus=8)
    assert zero3["total_static"] == round((frozen * 2 / 8 + trainable * (4 / 8 + 12 / 8)) / GIB, 2)
    zero2 = static_memory_per_gpu(frozen, trainable, "zero2", num_gpus=8)
    assert zero2["frozen_weights"] == torch_plan["frozen_weights"] > zero3["frozen_weights"]
    # measured on an H200 (bench/results): ln peaked at 29.0 GiB with activations; static part is below
    assert 12 < torch_plan["total_static"] < 29.0


def test_memory_estimate_flags_reach_the_json(config_only_7b):
    llm, vision = config_only_7b
    done = _cli("--model_name_or_path", llm, "--vision_tower", vision, "--tune_mode", "full",
                "--strategy", "zero3", "--num_gpus", "8")
    payload = json.loads(done.stdout)["memory_gib_per_gpu"]
    assert payload["strategy"] == "zero3" and payload["num_gpus"] == 8
    assert payload["total_static"] < 16  # 7B full fine-tuning fits 8 x 80 GB under ZeRO-3 (static part)
    bad = _cli("--model_name_or_path", llm, "--vision_tower", vision, "--strategy", "zero9")
    assert bad.returncode == 2 and "strategy must be one of" in bad.stderr


def test_recompute_plan_for_a_micro_batch(tiny_llm, tiny_vision):
    """Given a micro-batch, describe shows what --gradient_checkpointing would pick and the estimated peak."""
    from llava_ln.commands.args import DescribeArguments

    args = ModelArguments(model_name_or_path=tiny_llm("llama"), vision_tower=tiny_vision("clip"))
    plain = describe(args, TuningArguments(tune_mode="ln"), memory=DescribeArguments(bf16=False))
    assert "recompute" not in plain  # only when a micro-batch is given
    planned = describe(args, TuningArguments(tune_mode="ln"), memory=DescribeArguments(
        bf16=False, per_device_train_batch_size=8, model_max_length=512, memory_budget_gib=1000.0,
        gradient_checkpointing="auto"))
    recompute = planned["recompute"]
    peaks = recompute["estimated_peak_gib_by_checkpointed_blocks"]
    blocks = recompute["total_blocks"]
    assert (recompute["requested"], recompute["checkpointed_blocks"], recompute["budget_gib"]) == ("auto", 0, 1000.0)
    assert recompute["estimated_peak_gib"] == peaks["0"] > peaks[str(blocks)] > 0
    assert recompute["estimated_peak_gib"] > planned["memory_gib_per_gpu"]["total_static"]
    assert recompute["tokens_per_micro_batch"] == 8 * 512 and recompute["saved_bytes_per_token_per_block"] > 0
