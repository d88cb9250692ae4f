"""`llava-ln export --format peft-ln`: norm deltas as a PEFT LN-tuning adapter that PEFT loads as-is."""
import json
import os

import pytest
import torch
from export_helpers import make_run
from peft import PeftModel
from transformers import AutoModelForCausalLM

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.cli import main as cli_main
from llava_ln.core.errors import LlavaLnError
from llava_ln.export.peft_ln import export_peft_ln
from llava_ln.export.verify import ExportSettings

# PEFT itself warns that norm classes are "unsupported layer types" when it loads LN tuning.
pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type")
TEXT_IDS = torch.tensor([[5, 17, 42, 99, 23, 8, 150, 61]])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llm, tiny_vision):
    root = tmp_path_factory.mktemp("peft_runs")
    return {mode: make_run(str(root / mode), tiny_llm("llama"), tiny_vision("clip"), mode)
            for mode in ("ln", "ln_simple", "lora")}


def text_logits(model):
    with torch.no_grad():
        return model(input_ids=TEXT_IDS).logits[0].float()


def peft_logits(base_path, adapter):
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
    plain = text_logits(base)  # before PEFT injects its layers into `base`
    return text_logits(PeftModel.from_pretrained(base, adapter).eval()), plain


@pytest.mark.slow
def test_ln_simple_adapter_is_verified_in_a_fresh_process_and_matches_our_model(tmp_path, runs, tiny_llm):
    out = str(tmp_path / "adapter")
    lines = []
    result = export_peft_ln(runs["ln_simple"], out, settings=ExportSettings(max_new_tokens=4), log=lines.append)
    assert result.verified and [c.name for c in result.comparisons] == ["text_only", "text_turns"]
    assert all(c.problem is None for c in result.comparisons)
    assert len(result.target_modules) == 5 and result.not_carried == {}
    with open(os.path.join(out, "adapter_config.json")) as handle:
        config = json.load(handle)
    assert config["peft_type"] == "LN_TUNING" and config["base_model_name_or_path"] == tiny_llm("llama")
    # ln_simple trains norms only, so for text the adapter is the whole run.
    ours = text_logits(load_checkpoint(runs["ln_simple"]).model)
    adapted, base = peft_logits(tiny_llm("llama"), out)
    torch.testing.assert_close(adapted, ours, rtol=1e-5, atol=1e-5)
    assert (adapted - base).abs().max() > 1e-2
    assert any("not carried: the connector" in line for line in lines)


def test_ln_adapter_says_what_it_does_not_carry(tmp_path, runs, tiny_llm, capsys):
    out = str(tmp_path / "adapter")
    code = cli_main(["export", "--checkpoint", runs["ln"], "--format", "peft-ln", "--output_dir", out,
                     "--verify", "false"])
    printed = capsys.readouterr().out
    assert code == 0
    for group in ("embeddings", "lm_head", "connector"):
        assert f"not carried: {group}" in printed
    adapted, base = peft_logits(tiny_llm("llama"), out)
    assert (adapted - base).abs().max() > 1e-2  # the norms travelled
    full_run = text_logits(load_checkpoint(runs["ln"]).model)
    assert (adapted - full_run).abs().max() > 1e-2  # ... and the trained embeddings / head did not


def test_peft_ln_refuses_runs_that_trained_more_than_norms(tmp_path, runs):
    with pytest.raises(LlavaLnError, match="carries the norm deltas of an ln or ln_simple run"):
        export_peft_ln(runs["lora"], str(tmp_path / "adapter"))
