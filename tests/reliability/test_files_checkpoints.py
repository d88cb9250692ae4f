"""Fault injection, checkpoint files: damaged, edited and planted files at every place a checkpoint is read.

Each case ends in one LlavaLnError line naming the file (or the field / tensor), with no side
effect of a planted pickle (its marker file never appears) and nothing already saved changed.
The cases and how to run the full set: docs/reliability.md ("Files and inputs").
"""
import json
import os

import pytest
import torch
from export_helpers import make_run
from fault_helpers import DAMAGES, copy_tree, flip_bit, plant_pickle, refused, snapshot
from model_helpers import build

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.checkpoint.manifest import read_manifest
from llava_ln.checkpoint.run_folder import load_connector
from llava_ln.checkpoint.tensors import load_torch_tensors_safely
from llava_ln.evaluation.model_loading import _load_native
from llava_ln.export.merge import check_output_dir, merge_checkpoint
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer, load_vision_tower
from llava_ln.model.builder import build_mllm


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llm, tiny_vision):
    root = tmp_path_factory.mktemp("fault_runs")
    made = {mode: make_run(str(root / mode), tiny_llm("llama"), tiny_vision("clip"), mode)
            for mode in ("ln", "ln_simple", "lora")}
    made["merged"] = str(root / "merged")
    merge_checkpoint(made["ln_simple"], made["merged"], log=lambda *_: None)
    return made


@pytest.fixture()
def marker(tmp_path):
    path = str(tmp_path / "PAYLOAD_RAN")
    yield path
    assert not os.path.exists(path), "a planted pickle ran code"



# ---- planted pickles ----

def test_the_planted_pickle_does_run_code_when_fully_unpickled(tmp_path):
    """Control: the payload really has a side effect, so its absence elsewhere means something."""
    marker = str(tmp_path / "ran")
    torch.load(plant_pickle(str(tmp_path / "x.bin"), marker), weights_only=False)
    assert os.path.exists(marker)


def test_tensor_reader_refuses_a_planted_pickle_and_reads_a_plain_one(tmp_path, marker):
    torch.save({"w": torch.ones(3)}, str(tmp_path / "ok.bin"))
    assert torch.equal(load_torch_tensors_safely(str(tmp_path / "ok.bin"))["w"], torch.ones(3))
    evil = plant_pickle(str(tmp_path / "mm_projector.bin"), marker)
    refused(lambda: load_torch_tensors_safely(evil), evil, "refusing to unpickle", "GLOBAL")
    torch.save([torch.ones(1)], str(tmp_path / "list.bin"))
    refused(lambda: load_torch_tensors_safely(str(tmp_path / "list.bin")), "holds a list")
    torch.save({"step": 3}, str(tmp_path / "int.bin"))
    refused(lambda: load_torch_tensors_safely(str(tmp_path / "int.bin")), "entry 'step' is a int")


def _base_without_safetensors(source: str, target: str, marker: str) -> str:
    copy_tree(source, target)
    for name in os.listdir(target):
        if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
            os.remove(os.path.join(target, name))
    plant_pickle(os.path.join(target, "pytorch_model.bin"), marker)
    return target


def test_base_llm_with_a_planted_pytorch_model_bin(tmp_path, tiny_llm, tiny_vision, marker):
    llm = _base_without_safetensors(tiny_llm("llama"), str(tmp_path / "llm"), marker)
    args = ModelArguments(model_name_or_path=llm, vision_tower=tiny_vision("clip"))
    refused(lambda: build_mllm(args, load_tokenizer(llm)), "--model_name_or_path", "GLOBAL")


def test_vision_tower_with_a_planted_pytorch_model_bin(tmp_path, tiny_vision, marker):
    tower = _base_without_safetensors(tiny_vision("clip"), str(tmp_path / "vision"), marker)
    refused(lambda: load_vision_tower(tower, torch.float32, "eager"), "--vision_tower", "GLOBAL")


def test_merged_folder_with_a_planted_pytorch_model_bin(tmp_path, runs, marker):
    merged = _base_without_safetensors(runs["merged"], str(tmp_path / "merged"), marker)
    refused(lambda: load_checkpoint(merged), "model.safetensors", "missing")


def test_transformers_llava_folder_with_a_planted_pytorch_model_bin(tmp_path, runs, marker):
    folder = _base_without_safetensors(runs["merged"], str(tmp_path / "hf"), marker)
    os.remove(os.path.join(folder, "manifest.json"))
    refused(lambda: _load_native(folder, torch.float32, "cpu", None), "--model_path", "GLOBAL")


def test_lora_adapter_as_a_planted_adapter_model_bin(tmp_path, runs, marker):
    run = copy_tree(runs["lora"], str(tmp_path / "lora"))
    os.remove(os.path.join(run, "adapter", "adapter_model.safetensors"))
    plant_pickle(os.path.join(run, "adapter", "adapter_model.bin"), marker)
    refused(lambda: load_checkpoint(run), "adapter_model.safetensors")


def test_stage1_connector_as_a_planted_bin(tmp_path, tiny_llm, tiny_vision, marker):
    model, _ = build(tiny_llm, tiny_vision, "llama", "ln")
    evil = plant_pickle(str(tmp_path / "mm_projector.bin"), marker)
    refused(lambda: load_connector(model, evil), "mm_projector.bin")


@pytest.mark.parametrize("name", ["trained.safetensors", "stage1_connector.safetensors"])
def test_safetensors_swapped_for_a_pickle(tmp_path, runs, marker, name):
    run = copy_tree(runs["ln_simple"], str(tmp_path / "run"))
    plant_pickle(os.path.join(run, name), marker)
    refused(lambda: load_checkpoint(run), name, "sha256")


# ---- damaged files (checksums) ----

SITES = {  # run -> file inside it
    "trained": ("ln", "trained.safetensors"),
    "stage1_connector": ("ln_simple", "stage1_connector.safetensors"),
    "adapter_weights": ("lora", "adapter/adapter_model.safetensors"),
    "adapter_config": ("lora", "adapter/adapter_config.json"),
    "merged_weights": ("merged", "model.safetensors"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("site", sorted(SITES))
def test_damaged_checkpoint_file_is_one_line_naming_it(tmp_path, runs, site, damage):
    source, relative = SITES[site]
    run = copy_tree(runs[source], str(tmp_path / "run"))
    DAMAGES[damage](os.path.join(run, relative))
    refused(lambda: load_checkpoint(run), relative.split("/")[-1])


def _rewrite_manifest(run: str, change) -> None:
    path = os.path.join(run, "manifest.json")
    with open(path, encoding="utf-8") as handle:
        payload = json.load(handle)
    change(payload)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)


@pytest.mark.parametrize("damage", ["truncated", "header_bit"])
def test_damage_without_recorded_checksums_is_still_one_line(tmp_path, runs, damage):
    """A pre-checksum (format 1) folder: safetensors' own header checks still catch structural damage."""
    run = copy_tree(runs["ln"], str(tmp_path / "run"))
    _rewrite_manifest(run, lambda m: (m.pop("files"), m.update(format_version=1)))
    DAMAGES[damage](os.path.join(run, "trained.safetensors"))
    refused(lambda: load_checkpoint(run), "trained.safetensors")


def test_a_file_not_covered_by_the_checksums_is_refused(tmp_path, runs):
    run = copy_tree(runs["ln"], str(tmp_path / "run"))
    _rewrite_manifest(run, lambda m: m["files"].pop("trained.safetensors"))
    refused(lambda: load_checkpoint(run), "trained.safetensors", "not covered")


# ---- the manifest itself ----

MANIFEST_EDITS = {
    "not_json": (None, "not valid JSON"),
    "a_list": (lambda m: [m], "not an object"),
    "stage_as_string": (lambda m: m.update(stage="2"), "field 'stage'"),
    "unknown_tune_mode": (lambda m: m.update(tune_mode="everything"), "field 'tune_mode'"),
    "lora_rank_as_string": (lambda m: m.update(lora={"r": "4", "alpha": 8, "dropout": 0.0}), "field 'lora'"),
    "trained_tensors_a_list": (lambda m: m.update(trained_tensors=[]), "field 'trained_tensors'"),
    "files_escaping": (lambda m: m["files"].update({"../x": "0" * 64}), "'../x'"),
    "files_bad_digest": (lambda m: m["files"].update({"trained.safetensors": "abc"}), "sha256"),
    "future_format": (lambda m: m.update(format_version=99), "upgrade llava-ln"),
    "v2_without_files": (lambda m: m.pop("files"), "files"),
    "edited_mode": (lambda m: m.update(tune_mode="ln_simple"), "tune_mode ln_simple"),
    "edited_embeddings_flag": (lambda m: m.update(tune_embeddings=False), "tune_embeddings False"),
    "edited_shape": (lambda m: m["trained_tensors"]["model.language_model.norm.weight"].insert(0, 2),
                     "model.language_model.norm.weight"),
    "edited_dtype": (lambda m: m["trained_tensors"]["model.language_model.norm.weight"].__setitem__(-1, "bfloat16"),
                     "bfloat16"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_EDITS))
def test_damaged_or_edited_manifest_is_one_line(tmp_path, runs, case):
    run = copy_tree(runs["ln"], str(tmp_path / "run"))
    change, expected = MANIFEST_EDITS[case]
    path = os.path.join(run, "manifest.json")
    if change is None:
        with open(path, "r+", encoding="utf-8") as handle:
            handle.truncate(len(handle.read()) // 2)
    else:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
        result = change(payload)
        payload = result if isinstance(result, list) else payload  # the edits mutate; one replaces the whole
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
    before = snapshot(run)
    refused(lambda: load_checkpoint(run), expected)
    assert snapshot(run) == before


# ---- export outputs never overlap inputs ----

@pytest.mark.parametrize("where", ["itself", "parent", "inside", "symlink", "base_llm"])
def test_merge_output_that_overlaps_an_input_is_refused_and_nothing_is_lost(tmp_path, runs, tiny_llm, where):
    run = copy_tree(runs["ln"], str(tmp_path / "runs" / "ln"))
    if where == "symlink":
        os.symlink(run, str(tmp_path / "link"))
    output = {"itself": run, "parent": os.path.dirname(run), "inside": os.path.join(run, "merged"),
              "symlink": str(tmp_path / "link"), "base_llm": tiny_llm("llama")}[where]
    before, base_before = snapshot(run), snapshot(tiny_llm("llama"))
    refused(lambda: merge_checkpoint(run, output, overwrite=True), "--output_dir", "choose a folder outside it")
    refused(lambda: check_output_dir(output, True, run), "--output_dir")
    assert snapshot(run) == before and snapshot(tiny_llm("llama")) == base_before


def test_a_healthy_copy_still_loads(tmp_path, runs):
    """The suite's copies are sound before they are damaged: each failure above is the damage's."""
    for mode in ("ln", "ln_simple", "lora", "merged"):
        run = copy_tree(runs[mode], str(tmp_path / mode))
        assert load_checkpoint(run).manifest.files
    assert read_manifest(runs["ln"]).format_version == 2


def test_flip_helper_changes_exactly_one_bit(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(200))
    flip_bit(str(path), "data")
    assert sum(bin(b).count("1") for b in path.read_bytes()) == 1
