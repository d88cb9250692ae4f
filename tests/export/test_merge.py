"""`llava-ln merge`: standalone folders that reproduce the run; mismatching checkpoints fail by name."""
import json
import os

import pytest
import torch
from export_helpers import make_run, multimodal_logits, save_wide_llama
from safetensors import safe_open

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.checkpoint.manifest import read_manifest
from llava_ln.cli import main as cli_main
from llava_ln.core.errors import LlavaLnError
from llava_ln.export.merge import merge_checkpoint
from llava_ln.model.args import BaseOverrides
from llava_ln.model.parts import unwrap

MODES = ("lora", "ln", "ln_simple", "full")
TOWER_MODES = ("ln", "lora", "full")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llm, tiny_vision):
    root = tmp_path_factory.mktemp("merge_runs")
    made = {mode: make_run(str(root / mode), tiny_llm("llama"), tiny_vision("clip"), mode, aspect_ratio="pad")
            for mode in MODES}
    made["mlp3x_gelu"] = make_run(str(root / "mlp3"), tiny_llm("llama"), tiny_vision("clip"), "lora",
                                  projector="mlp3x_gelu")
    made["linear"] = make_run(str(root / "linear"), tiny_llm("llama"), tiny_vision("clip"), "ln", projector="linear")
    for tower in TOWER_MODES:  # the tower tuned too (LoRA: one adapter with the LLM's, its own rank)
        made[f"tower_{tower}"] = make_run(str(root / f"tower_{tower}"), tiny_llm("llama"), tiny_vision("siglip"),
                                          "lora" if tower == "lora" else "ln", aspect_ratio="pad",
                                          vision_tune_mode=tower)
    return made


def weight_names(folder):
    names = set()
    for file in os.listdir(folder):
        if file.startswith("model") and file.endswith(".safetensors"):
            with safe_open(os.path.join(folder, file), "pt") as handle:
                names |= set(handle.keys())
    return names


@pytest.mark.parametrize("mode", MODES + tuple(f"tower_{t}" for t in TOWER_MODES))
def test_merged_folder_reproduces_the_run(tmp_path, runs, mode):
    out = str(tmp_path / "merged")
    result = merge_checkpoint(runs[mode], out, log=lambda *_: None)
    assert result.folded_lora is (mode in ("lora", "tower_lora"))
    assert result.non_native == []
    run_logits = multimodal_logits(load_checkpoint(runs[mode]).model)
    merged = load_checkpoint(out)
    torch.testing.assert_close(multimodal_logits(merged.model), run_logits, rtol=1e-5, atol=1e-5)
    # The folder stands alone: its manifest points at itself, LoRA is gone, provenance is kept.
    assert merged.manifest.kind == "merged" and merged.manifest.llm == os.path.abspath(out)
    with open(os.path.join(out, "manifest.json")) as handle:
        on_disk = json.load(handle)
    assert (on_disk["llm"], on_disk["vision_tower"], on_disk["lora"]) == (".", ".", None)
    assert not any("lora_" in name for name in weight_names(out))
    with open(os.path.join(out, "merged_from.json")) as handle:
        assert json.load(handle)["tune_mode"] == read_manifest(runs[mode]).tune_mode
    if mode.startswith("tower_"):  # the merged tower is the tuned one, not the base checkpoint's
        base = load_checkpoint(runs[mode]).manifest.vision_tower
        from safetensors.torch import load_file

        base_tower = {n.removeprefix("vision_model."): t for n, t in load_file(os.path.join(base, "model.safetensors")).items()}
        merged_tower = unwrap(merged.model).model.vision_tower.state_dict()
        changed = [n for n, t in base_tower.items() if n in merged_tower and not torch.equal(merged_tower[n], t)]
        assert changed and not any(part in n for n in changed for part in (".layers.1.", "post_layernorm", "head."))
    assert os.path.exists(os.path.join(out, "preprocessor_config.json"))


@pytest.mark.parametrize("kind", ["mlp3x_gelu", "linear"])
def test_connectors_the_native_class_cannot_express_survive_merge(tmp_path, runs, kind):
    out = str(tmp_path / "merged")
    result = merge_checkpoint(runs[kind], out, log=lambda *_: None)
    assert result.non_native and all(n.startswith("model.multi_modal_projector.") for n in result.non_native)
    assert os.path.exists(os.path.join(out, "non_native.safetensors"))
    merged = load_checkpoint(out)
    assert type(merged.model.model.multi_modal_projector).__name__ == "MLPConnector"
    torch.testing.assert_close(multimodal_logits(merged.model), multimodal_logits(load_checkpoint(runs[kind]).model),
                               rtol=1e-5, atol=1e-5)


def test_bfloat16_merge_writes_bfloat16_weights(tmp_path, runs):
    out = str(tmp_path / "merged")
    merge_checkpoint(runs["ln_simple"], out, dtype="bfloat16", log=lambda *_: None)
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"BF16"}
    merged = load_checkpoint(out, dtype=torch.bfloat16)
    assert next(merged.model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("mode,pattern", [
    ("lora", r"adapter_model\.safetensors: tensor .*down_proj\.lora_B\.weight has shape \(32, 4\) but the base "
             r"layer .* needs \(48, 4\)"),
    ("ln", r"trained\.safetensors: tensor lm_head\.weight has shape \(300, 32\) but the base model has \(300, 48\)"),
    ("ln_simple", r"stage1_connector\.safetensors: tensor model\.multi_modal_projector\.linear_1\.bias has shape "
                  r"\(32,\) but the base model has \(48,\)"),
])
def test_checkpoint_with_other_shapes_names_the_first_mismatching_tensor(tmp_path, runs, tiny_root, mode, pattern):
    wide = save_wide_llama(tiny_root)
    with pytest.raises(LlavaLnError, match=pattern):
        merge_checkpoint(runs[mode], str(tmp_path / "out"), BaseOverrides(model_name_or_path=wide))
    assert not os.path.exists(tmp_path / "out")


def test_checkpoint_from_another_model_family_fails_on_the_cli_with_one_line(tmp_path, runs, tiny_llm, capsys):
    phi = tiny_llm("phi")
    capsys.readouterr()  # building the tiny base prints progress bars; only the command's output matters
    code = cli_main(["merge", "--checkpoint", runs["ln"], "--output_dir", str(tmp_path / "out"),
                     "--model_name_or_path", phi])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "tensor model.language_model.layers.0.post_attention_layernorm.weight does not exist" in err
    assert not os.path.exists(tmp_path / "out")


def test_a_tower_of_another_kind_with_the_same_shapes_is_refused(tmp_path, runs, tiny_vision):
    """The tiny CLIP and SigLIP towers share every encoder tensor's name and shape (the SigLIP run trains its
    LoRA there): nothing but the recorded kind tells them apart, and merging would apply SigLIP-trained
    tensors (and a connector fitted to SigLIP's features) to CLIP."""
    with pytest.raises(LlavaLnError, match="the run trained with a siglip_vision_model vision tower, but .* is a "
                                           "clip_vision_model"):
        merge_checkpoint(runs["tower_lora"], str(tmp_path / "out"), BaseOverrides(vision_tower=tiny_vision("clip")))
    assert not os.path.exists(tmp_path / "out")


def test_merge_refuses_to_overwrite_and_to_remerge(tmp_path, runs):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(LlavaLnError, match="exists and is not empty"):
        merge_checkpoint(runs["ln_simple"], str(out))
    assert (out / "keep.txt").read_text() == "user data"
    merged = str(tmp_path / "merged")
    merge_checkpoint(runs["ln_simple"], merged, log=lambda *_: None)
    with pytest.raises(LlavaLnError, match="already a merged checkpoint"):
        merge_checkpoint(merged, str(tmp_path / "again"))
