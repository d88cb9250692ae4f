"""Stage 2 from a multimodal checkpoint, through `llava-ln train`, and back out through merge and export.

A run with learning rate 0 leaves every weight where it started, so its run folder, rebuilt from the
manifest, must compute exactly what the source model computes: that checks the start (flags decided
by the source, no --pretrain_mm_mlp_adapter needed), the run folder and the rebuild in one go. The
same runs then go out through merge (plain transformers loads it), export --format hf and
export --format llava (the original layout: the exported tensors are the source's, bit for bit).
"""
import json
import os

import pytest
import torch
from eval_helpers import single_thread
from llava_layouts import (
    LLAVA_IMAGE_TOKEN_INDEX,
    make_hf_llava,
    make_original_llava,
    original_llava_logits,
    with_image_tokens,
)
from safetensors.torch import load_file
from train_helpers import _write_data

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.cli import main
from llava_ln.model.parts import unwrap

IDS = torch.tensor([[5, 17, 33, LLAVA_IMAGE_TOKEN_INDEX, 40, 41, 90, 7]])
PIXELS = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(11))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_vision):
    root = str(tmp_path_factory.mktemp("multimodal_start"))
    vision = tiny_vision("clip")
    return {"root": root, "vision": vision, "data": _write_data(os.path.join(root, "data"))["instruct"],
            "hf": make_hf_llava(root), "llava": make_original_llava(root, vision, fmt="bin")}


def train(world, source: str, output: str, mode: str, lr: float = 0.0, steps: int = 1, *extra) -> str:
    out = os.path.join(world["root"], output)
    assert main(["train", "--model_name_or_path", source, "--tune_mode", mode, "--data_path", world["data"],
                 "--output_dir", out, "--per_device_train_batch_size", "2", "--max_steps", str(steps),
                 "--learning_rate", str(lr), "--lr_scheduler_type", "constant", "--save_strategy", "no",
                 "--disable_tqdm", "true", "--lora_r", "4", "--lora_alpha", "8", *extra]) == 0
    return out


@torch.no_grad()
def logits_of(model, vocab: int | None = None) -> torch.Tensor:
    config = unwrap(model).config
    ids = with_image_tokens(IDS, config.image_token_id, config.image_seq_length)
    out = model.eval()(input_ids=ids, pixel_values=PIXELS).logits
    return out if vocab is None else out[..., :vocab]


def reference_logits(world, kind: str) -> torch.Tensor:
    if kind == "hf":
        from transformers import LlavaForConditionalGeneration

        return logits_of(LlavaForConditionalGeneration.from_pretrained(world["hf"]))
    return original_llava_logits(world["llava"], world["vision"], IDS, PIXELS)


@pytest.fixture(scope="module")
def still_runs(world):
    """lr-0 stage-2 runs: ln from the transformers folder, lora from the original-layout checkpoint."""
    return {"hf": train(world, world["hf"], "hf_ln", "ln"), "llava": train(world, world["llava"], "llava_lora", "lora")}


@pytest.mark.parametrize("kind", ["hf", "llava"])
def test_a_stage2_run_starts_from_exactly_the_source_model(world, still_runs, kind):
    run = still_runs[kind]
    manifest = json.load(open(os.path.join(run, "manifest.json"), encoding="utf-8"))
    assert manifest["source"] == {"kind": {"hf": "hf_llava", "llava": "llava"}[kind], "path": world[kind]}
    assert manifest["stage"] == 2 and manifest["pretrain_mm_mlp_adapter"] is None and manifest["llm"] == world[kind]
    expected = reference_logits(world, kind)
    assert torch.equal(logits_of(load_checkpoint(run).model, expected.shape[-1]), expected)


@pytest.mark.parametrize("kind", ["hf", "llava"])
def test_runs_from_a_source_merge_into_what_transformers_loads(world, still_runs, kind):
    from transformers import LlavaForConditionalGeneration

    run, expected = still_runs[kind], reference_logits(world, kind)
    merged = run + "_merged"
    assert main(["merge", "--checkpoint", run, "--output_dir", merged]) == 0
    assert torch.equal(logits_of(LlavaForConditionalGeneration.from_pretrained(merged), expected.shape[-1]), expected)


def test_a_run_from_a_transformers_folder_exports_back_to_that_format(still_runs):
    # export verifies the folder in a fresh process with plain transformers and fails (exit 3) on a mismatch.
    assert main(["export", "--checkpoint", still_runs["hf"], "--format", "hf", "--output_dir",
                 still_runs["hf"] + "_hf"]) == 0


def test_a_run_from_an_original_checkpoint_exports_back_to_its_layout_bit_for_bit(world, still_runs):
    exported = still_runs["llava"] + "_llava"
    assert main(["export", "--checkpoint", still_runs["llava"], "--format", "llava", "--output_dir", exported]) == 0
    source = {}
    for name in sorted(os.listdir(world["llava"])):
        if name.endswith(".bin"):
            source.update(torch.load(os.path.join(world["llava"], name), weights_only=True))
    source = {n: t for n, t in source.items() if "vision_tower" not in n}  # LLaVA never reads those
    written = load_file(os.path.join(exported, "model.safetensors"))
    assert set(written) == set(source)
    assert all(torch.equal(written[n], source[n]) for n in source)
    config = json.load(open(os.path.join(exported, "config.json"), encoding="utf-8"))
    original = json.load(open(os.path.join(world["llava"], "config.json"), encoding="utf-8"))
    for key in ("mm_vision_tower", "mm_projector_type", "mm_vision_select_layer", "mm_hidden_size", "vocab_size",
                "hidden_size", "num_hidden_layers"):
        assert config[key] == original[key], key
    assert config["architectures"] == ["LlavaLlamaForCausalLM"]
    from transformers import AutoTokenizer

    assert "<image>" not in AutoTokenizer.from_pretrained(exported).get_vocab()


def test_any_tune_mode_trains_on_top_of_the_source(world):
    run = train(world, world["hf"], "hf_ln_trained", "ln", 1e-2, 2)
    trained = load_file(os.path.join(run, "trained.safetensors"))
    from transformers import LlavaForConditionalGeneration

    source = dict(LlavaForConditionalGeneration.from_pretrained(world["hf"]).named_parameters())
    norms = [n for n in trained if n.endswith("norm.weight")]
    assert norms and all(not torch.equal(trained[n], source[n].detach()) for n in norms)
    assert not torch.equal(logits_of(load_checkpoint(run).model), reference_logits(world, "hf"))


@pytest.mark.parametrize("which", ["merged", "run"])
def test_our_own_folders_are_sources_too(world, still_runs, which):
    # A merged folder (self-contained) and a LoRA run folder (base + adapter, itself started from a source).
    source = still_runs["hf"] + "_merged" if which == "merged" else still_runs["llava"]
    if which == "merged" and not os.path.isdir(source):
        assert main(["merge", "--checkpoint", still_runs["hf"], "--output_dir", source]) == 0
    expected = logits_of(load_checkpoint(source).model)
    run = train(world, source, f"from_{which}", "ln_simple")
    manifest = json.load(open(os.path.join(run, "manifest.json"), encoding="utf-8"))
    assert manifest["source"] == {"kind": "llava_ln", "path": source}
    assert torch.equal(logits_of(load_checkpoint(run).model), expected)
