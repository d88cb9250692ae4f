"""Merge and export of runs trained on a 4-bit base.

merge and `export --format hf` write the UNQUANTIZED base plus the trained tensors (plain transformers
loads full-precision weights, no quantization config); `export --format hf --bits 4` writes a folder
that plain transformers loads as 4-bit through its bitsandbytes config, verified against llava-ln's own
quantization of the same weights.
"""
import json
import os

import pytest
import torch
from train_helpers import flags, train_world

import llava_ln.toy
from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.export.hf import export_hf
from llava_ln.export.merge import merge_checkpoint
from llava_ln.export.verify import ExportSettings
from llava_ln.model.quantize import QuantSettings
from llava_ln.train import main

pytest.importorskip("bitsandbytes")
FAST = dict(max_new_tokens=4)


# The toy world's LLM: every block linear has out_features % 32 == 0. bitsandbytes 0.50 on an AVX512-BF16
# CPU repacks 4-bit weights for inference and needs that; the session's tiny LLaMA has 16-wide k/v.
TOY_LLM = os.path.join(os.path.dirname(llava_ln.toy.__file__), "assets", "llm")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llm, tiny_vision):
    """A 4-bit ln run and a QLoRA run of the toy LLM, 4 steps each on the session's tiny data."""
    world = train_world(tmp_path_factory, tiny_llm, tiny_vision)
    root = tmp_path_factory.mktemp("quantized_runs")
    done = {}
    for mode, rates in (("ln", dict(learning_rate=1e-3, norm_lr=1e-2)),
                        ("lora", dict(learning_rate=1e-2, mm_projector_lr=1e-3))):
        out = str(root / mode)
        assert main(flags(world, out, model_name_or_path=TOY_LLM, tune_mode=mode, bits=4, save_strategy="no",
                          image_aspect_ratio="pad", **rates)) == 0
        done[mode] = out
    return done


def _ids(tokenizer):
    return torch.tensor([tokenizer("USER: how many circles are there ? ASSISTANT:")["input_ids"]])


def test_merge_writes_the_unquantized_base_that_plain_transformers_loads(runs, tmp_path):
    from transformers import LlavaForConditionalGeneration

    for mode, run in runs.items():
        out = str(tmp_path / mode)
        merge_checkpoint(run, out, dtype="float32", log=lambda *_: None)
        with open(os.path.join(out, "config.json"), encoding="utf-8") as handle:
            assert "quantization_config" not in json.load(handle)
        plain = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
        assert all(p.is_floating_point() for p in plain.parameters())
        ours = load_checkpoint(run)  # the unquantized base + the run (LoRA unmerged)
        assert ours.manifest.quantization == QuantSettings(4).to_dict()
        ids = _ids(ours.tokenizer)
        with torch.no_grad():
            torch.testing.assert_close(plain(input_ids=ids).logits, ours.model(input_ids=ids).logits,
                                       rtol=1e-4, atol=1e-4, msg=mode)


@pytest.mark.slow
def test_qlora_run_exports_unquantized_and_verifies(runs, tmp_path):
    result = export_hf(runs["lora"], str(tmp_path / "hf"), settings=ExportSettings(**FAST), log=lambda *_: None)
    assert result.verified and result.quantization is None
    assert all(c.problem is None and c.answers_equal for c in result.comparisons)


@pytest.mark.slow
def test_4bit_export_loads_as_4bit_in_plain_transformers(runs, tmp_path):
    import bitsandbytes as bnb
    from transformers import LlavaForConditionalGeneration

    out = str(tmp_path / "hf4")
    result = export_hf(runs["ln"], out, settings=ExportSettings(bits=4, **FAST), log=lambda *_: None)
    # verified twice in a fresh process: unquantized, then 4-bit against llava-ln's own quantization
    assert result.verified and result.quantization == QuantSettings(4, "nf4", True)
    assert all(c.problem is None and c.answers_equal for c in result.comparisons)
    with open(os.path.join(out, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)["quantization_config"]
    assert (config["load_in_4bit"], config["bnb_4bit_quant_type"], config["bnb_4bit_use_double_quant"]) == \
        (True, "nf4", True)
    model = LlavaForConditionalGeneration.from_pretrained(out)
    quantized = sorted(n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit))
    assert quantized and all(".language_model.layers." in n for n in quantized)
    assert len(quantized) == 7 * model.config.text_config.num_hidden_layers
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
    # smaller than the unquantized export of the same run
    plain = str(tmp_path / "hf16")
    export_hf(runs["ln"], plain, settings=ExportSettings(verify=False, **FAST), log=lambda *_: None)
    assert os.path.getsize(os.path.join(out, "model.safetensors")) < os.path.getsize(
        os.path.join(plain, "model.safetensors"))


def test_export_bits_is_checked_before_loading(runs, tmp_path):
    from llava_ln.core.errors import LlavaLnError

    with pytest.raises(LlavaLnError, match="export --bits 8"):
        export_hf(runs["ln"], str(tmp_path / "x"), settings=ExportSettings(bits=8))
