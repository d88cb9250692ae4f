"""`llava-ln export --format peft-lora`: a lora run's factors as an adapter plain PEFT applies to the base LLM."""
import json
import os
import shutil

import pytest
import torch
from export_helpers import make_run
from peft import PeftModel
from transformers import AutoModelForCausalLM

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.cli import main as cli_main
from llava_ln.export.peft_lora import export_peft_lora
from llava_ln.export.verify import ExportSettings

TEXT_IDS = torch.tensor([[5, 17, 42, 99, 23, 8, 150, 61]])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llm, tiny_vision):
    root = tmp_path_factory.mktemp("peft_lora_runs")
    return {mode: make_run(str(root / mode), tiny_llm("llama"), tiny_vision("clip"), mode) for mode in ("lora", "ln")}


def text_logits(model, vocab: int | None = None):
    with torch.no_grad():
        logits = model.eval()(input_ids=TEXT_IDS).logits[0].float()
    return logits if vocab is None else logits[:, :vocab]


def test_plain_peft_applies_the_exported_adapter_to_the_base_llm(tmp_path, runs, tiny_llm):
    out = str(tmp_path / "adapter")
    lines = []
    targets = export_peft_lora(runs["lora"], out, settings=ExportSettings(max_new_tokens=4), log=lines.append)
    assert any(line.startswith("verification: PeftModel.from_pretrained") for line in lines)  # fresh process, passed
    with open(os.path.join(out, "adapter_config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == tiny_llm("llama")
    assert all(t.startswith("model.layers.") for t in targets) and len(targets) == 2 * 7  # 2 blocks x 7 linears
    base = AutoModelForCausalLM.from_pretrained(tiny_llm("llama"), dtype=torch.float32)
    before = text_logits(base)
    adapted = text_logits(PeftModel.from_pretrained(base, out))
    ours = text_logits(load_checkpoint(runs["lora"]).model, before.shape[-1])
    assert (adapted - before).abs().max() > 1e-2  # the adapter changes the LLM...
    torch.testing.assert_close(adapted, ours, rtol=1e-5, atol=1e-5)  # ...into what our model computes on text
    assert any("not carried: the connector" in line for line in lines)


def test_only_lora_runs_without_a_multimodal_source_export(tmp_path, runs, capsys):
    assert cli_main(["export", "--checkpoint", runs["ln"], "--format", "peft-lora", "--output_dir",
                     str(tmp_path / "a")]) == 2
    assert "carries the LoRA factors of a lora run folder" in capsys.readouterr().err
    sourced = str(tmp_path / "sourced")
    shutil.copytree(runs["lora"], sourced)
    with open(os.path.join(sourced, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    manifest["source"] = {"kind": "hf_llava", "path": "/models/llava-1.5-7b-hf"}
    with open(os.path.join(sourced, "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    assert cli_main(["export", "--checkpoint", sourced, "--format", "peft-lora", "--output_dir",
                     str(tmp_path / "b")]) == 2
    assert "no plain base LLM" in capsys.readouterr().err
