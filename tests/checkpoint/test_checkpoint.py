"""Run-folder format: trained-only tensors round-trip; atomic writes; mismatches name the tensor."""
import os

import pytest
import torch
from model_helpers import build, trained_tensors

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.checkpoint.manifest import Manifest, read_manifest
from llava_ln.checkpoint.run_folder import load_connector, load_trained_tensors, save_run
from llava_ln.checkpoint.tensors import load_tensors, save_tensors
from llava_ln.core.atomic import atomic_directory, write_json_atomic
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.parts import unwrap
from llava_ln.tuning.modes import get_tune_mode, resolve_tune_embeddings


def perturb_trainable(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in unwrap(model).named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def manifest_for(llm, vision, spec, mode, lora=None):
    return Manifest(kind="trained", llm=llm, tokenizer=llm, vision_tower=vision, mm_projector_type="mlp2x_gelu",
                    mm_vision_select_layer=-2, mm_vision_select_feature="patch", tune_mode=mode,
                    tune_embeddings=resolve_tune_embeddings(get_tune_mode(mode), None),
                    conv_template="vicuna_v1", image_aspect_ratio="pad", lora=lora,
                    image_token_id=spec.image_token_id, num_image_tokens=spec.num_image_tokens)


def probe_logits(model, spec):
    ids = torch.arange(5, 17).unsqueeze(0)
    ids[0, 1 : 1 + spec.num_image_tokens] = spec.image_token_id
    pixels = torch.linspace(-1, 1, 3 * 28 * 28).reshape(1, 3, 28, 28)
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits


@pytest.mark.parametrize("mode", ["ln", "ln_simple", "lora"])
def test_run_folder_holds_only_trained_tensors_and_reloads_identically(tmp_path, tiny_llm, tiny_vision, mode):
    model, spec = build(tiny_llm, tiny_vision, "llama", mode)
    perturb_trainable(model)
    trainable = set(trained_tensors(model))
    connector = None
    if mode == "ln_simple":  # stage 2 did not train the connector: the run keeps the stage-1 copy
        connector = {n: p.detach().clone() for n, p in unwrap(model).named_parameters() if "multi_modal_projector" in n}
    lora = {"r": 4, "alpha": 8, "dropout": 0.05} if mode == "lora" else None
    save_run(str(tmp_path), model, manifest_for(tiny_llm("llama"), tiny_vision("clip"), spec, mode, lora),
             tensors=trained_tensors(model), stage1_connector=connector)
    assert set(load_trained_tensors(str(tmp_path))) == trainable
    assert set(read_manifest(str(tmp_path)).trained_tensors) == trainable
    assert os.path.isdir(tmp_path / "adapter") is (mode == "lora")
    reloaded = load_checkpoint(str(tmp_path))
    torch.testing.assert_close(probe_logits(reloaded.model, spec), probe_logits(model, spec), rtol=0, atol=0)


def test_tensor_from_another_model_is_named(tmp_path, tiny_llm, tiny_vision):
    model, spec = build(tiny_llm, tiny_vision, "llama", "ln_simple")
    save_run(str(tmp_path), model, manifest_for(tiny_llm("llama"), tiny_vision("clip"), spec, "ln_simple"),
             tensors=trained_tensors(model))
    bad = load_trained_tensors(str(tmp_path))
    bad["model.language_model.norm.weight"] = torch.ones(64)
    save_run(str(tmp_path), model, manifest_for(tiny_llm("llama"), tiny_vision("clip"), spec, "ln_simple"),
             tensors=bad)
    with pytest.raises(LlavaLnError, match=r"model\.language_model\.norm\.weight has shape \(64,\)"):
        load_checkpoint(str(tmp_path))


def test_connector_shape_mismatch_is_named(tmp_path, tiny_llm, tiny_vision):
    model, _ = build(tiny_llm, tiny_vision, "llama", "connector")
    save_tensors(str(tmp_path), "trained", {"model.multi_modal_projector.linear_1.weight": torch.zeros(8, 8),
                                            "model.multi_modal_projector.linear_1.bias": torch.zeros(8),
                                            "model.multi_modal_projector.linear_2.weight": torch.zeros(8, 8),
                                            "model.multi_modal_projector.linear_2.bias": torch.zeros(8)})
    with pytest.raises(LlavaLnError, match=r"linear_1\.(bias|weight) has shape"):
        load_connector(model, str(tmp_path))


def test_llava_sequential_projector_names_are_understood(tmp_path, tiny_llm, tiny_vision):
    model, _ = build(tiny_llm, tiny_vision, "llama", "connector")
    weights = {"model.mm_projector.0.weight": torch.full((32, 32), 0.5), "model.mm_projector.0.bias": torch.zeros(32),
               "model.mm_projector.2.weight": torch.eye(32), "model.mm_projector.2.bias": torch.ones(32)}
    save_tensors(str(tmp_path), "mm_projector", weights)
    load_connector(model, str(tmp_path / "mm_projector.safetensors"))
    assert torch.equal(unwrap(model).model.multi_modal_projector.linear_2.bias, torch.ones(32))


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    (tmp_path / "trained.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LlavaLnError, match="trained.safetensors is not a readable safetensors file"):
        load_tensors(str(tmp_path / "trained.safetensors"))


def test_sharded_save_round_trips(tmp_path):
    tensors = {f"t{i}": torch.full((256,), float(i)) for i in range(5)}
    names = save_tensors(str(tmp_path), "trained", tensors, max_shard_bytes=2048)
    assert len(names) == 4  # three shards of <= 2 tensors (1 KiB each) + the index
    assert {k: v[0].item() for k, v in load_tensors(str(tmp_path / "trained")).items()} == {f"t{i}": i for i in range(5)}


def test_crash_inside_atomic_directory_keeps_previous_version(tmp_path):
    target = tmp_path / "checkpoint-10"
    with atomic_directory(str(target)) as tmp:
        write_json_atomic(os.path.join(tmp, "state.json"), {"step": 10})
    with pytest.raises(RuntimeError):
        with atomic_directory(str(target)) as tmp:
            write_json_atomic(os.path.join(tmp, "state.json"), {"step": 20})
            raise RuntimeError("killed mid-save")
    assert (target / "state.json").read_text().count('"step": 10') == 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10"]


def test_folder_without_manifest_is_refused(tmp_path):
    with pytest.raises(LlavaLnError, match="no manifest.json"):
        load_checkpoint(str(tmp_path))
