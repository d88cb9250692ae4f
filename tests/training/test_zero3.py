"""ZeRO-3 that partitions from the start: the build equals transformers' loading, training from a merged folder.

The partitioned build (deepspeed.zero.Init + shard-by-shard loading) is compared tensor by tensor,
bit for bit, with the loading path on 2 ranks, for LLM families with their quirks (vocabulary grown
for <image>, tied embeddings, a head bias, GPT-NeoX's embed_out), checkpoints in many shards, and
every multimodal start layout: merged folders (native and non-native connector), a transformers
LLaVA folder, an original LLaVA checkpoint. Training from a merged folder under 2-rank ZeRO-3
continues a one-process ZeRO-2 checkpoint exactly (ZeRO-2 -> 3, 1 -> 2 ranks); the reverse switch is
in test_deepspeed.py. The run then loads, merges and matches.
"""
import json
import os

import pytest
import torch
from launch_helpers import PARTITIONED_LOG, SUPPORT, deepspeed_launch, run_in_fresh_process
from llava_layouts import make_hf_llava, make_original_llava
from tiny import LLM_CONFIGS, make_bpe_tokenizer
from train_helpers import flags, read_log, stage1_run, train_world, trained

from llava_ln.checkpoint.loading import LoadedModel, load_checkpoint
from llava_ln.checkpoint.manifest import Manifest
from llava_ln.export.merge import merge_checkpoint, write_merged_folder
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.model.parts import unwrap

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {stage: os.path.join(REPO, "zero_configs", f"zero{stage}.json") for stage in (2, 3)}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


@pytest.fixture(scope="module")
def merged(world, tmp_path_factory):
    """The stage-1 run merged into one folder: a multimodal base with a trained connector."""
    out = str(tmp_path_factory.mktemp("merged") / "stage1_merged")
    merge_checkpoint(stage1_run(world), out, dtype="float32", log=lambda *_: None)
    return out


def _grown_llm(root: str, family: str) -> str:
    """A tiny LLM whose vocabulary is exactly the tokenizer's, so <image> grows it; saved in many shards."""
    from transformers import AutoModelForCausalLM

    path = os.path.join(root, f"{family}_grows")
    torch.manual_seed(1)
    config = LLM_CONFIGS[family]()
    tokenizer = make_bpe_tokenizer()
    config.vocab_size = len(tokenizer)
    AutoModelForCausalLM.from_config(config).save_pretrained(path, max_shard_size="40KB")
    tokenizer.save_pretrained(path)
    return path


def _non_native_merged(root: str, llm: str, vision: str) -> str:
    """A merged folder holding what the native class cannot: an mlp3x_gelu connector and Phi's head bias."""
    args = ModelArguments(model_name_or_path=llm, vision_tower=vision, mm_projector_type="mlp3x_gelu")
    tokenizer = load_tokenizer(llm)
    torch.manual_seed(2)
    model, spec = build_mllm(args, tokenizer)
    manifest = Manifest(kind="trained", llm=llm, tokenizer=llm, vision_tower=vision, mm_projector_type="mlp3x_gelu",
                        mm_vision_select_layer=-2, mm_vision_select_feature="patch", tune_mode="ln",
                        conv_template="vicuna_v1", image_aspect_ratio="pad", image_token_id=spec.image_token_id,
                        num_image_tokens=spec.num_image_tokens)
    path = os.path.join(root, "phi_mlp3x_merged")
    os.makedirs(path)
    non_native = write_merged_folder(model, LoadedModel(path=root, manifest=manifest, model=model, tokenizer=tokenizer), path)
    assert "lm_head.bias" in non_native and any("linear_3" in n for n in non_native)
    return path


def test_partitioned_build_is_bit_identical_to_loading(world, merged, tmp_path, tiny_vision):
    root = str(tmp_path)
    vision = tiny_vision("clip")
    cases = [{"name": family, "llm": _grown_llm(root, family), "vision": vision}
             for family in ("llama", "qwen2", "phi", "gpt_neox")]
    cases.append({"name": "siglip", "llm": world["llm"], "vision": tiny_vision("siglip")})
    cases.append({"name": "merged", "llm": merged})
    cases.append({"name": "merged_non_native", "llm": _non_native_merged(root, cases[2]["llm"], vision)})
    cases.append({"name": "hf_llava", "llm": make_hf_llava(root)})  # transformers' layout: all from one folder
    cases.append({"name": "original_llava", "llm": make_original_llava(root, vision)})  # LLaVA's: vocabulary grows
    spec = os.path.join(root, "cases.json")
    with open(spec, "w", encoding="utf-8") as handle:
        json.dump(cases, handle)
    deepspeed_launch([spec, root], script=os.path.join(SUPPORT, "zero3_build_check.py"))
    ranks = []
    for rank in (0, 1):
        with open(os.path.join(root, f"rank{rank}.json"), encoding="utf-8") as handle:
            ranks.append(json.load(handle))
    for case in cases:
        for result in (r[case["name"]] for r in ranks):
            assert result["differ"] == [], (case["name"], result["differ"][:3])
            assert result["compared"] > 20
        # Partitioned means partitioned: each rank holds about half of the LLM and tower, never the whole.
        assert all(r[case["name"]]["partitioned"] >= r[case["name"]]["compared"] - 8 for r in ranks), case["name"]
        local = [r[case["name"]]["local_bytes"] for r in ranks]
        assert max(local) < 0.6 * ranks[0][case["name"]]["total_bytes"], (case["name"], local)


def _assert_same_training(run: str, ref: str, steps, atol: float) -> None:
    run_log, ref_log = read_log(run), read_log(ref)
    for step in steps:
        assert run_log[step]["loss"] == pytest.approx(ref_log[step]["loss"], rel=1e-4), step
    got, want = trained(run), trained(ref)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=atol, rtol=1e-4, msg=name)


def test_zero3_from_a_merged_folder_continues_zero2_exactly_and_ships(world, merged, tmp_path):
    # No --vision_tower, no --pretrain_mm_mlp_adapter: the merged folder brings its tower and its connector.
    # The tower's norms train too (--vision_tune_mode ln): partitioned on 2 ranks, resumed across stages.
    common = dict(model_name_or_path=merged, vision_tower=None, tune_mode="ln", learning_rate=1e-3, norm_lr=2e-2,
                  vision_tune_mode="ln", mm_vision_tower_lr=2e-2)
    zero2 = str(tmp_path / "zero2_one_process")
    run_in_fresh_process([flags(world, zero2, deepspeed=CONFIGS[2], gradient_accumulation_steps=2, **common)],
                         str(tmp_path))
    with open(os.path.join(zero2, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    assert (manifest["stage"], manifest["llm"], manifest["vision_tower"]) == (2, merged, merged)

    zero3 = str(tmp_path / "zero3_resumed")
    output = deepspeed_launch(flags(world, zero3, deepspeed=CONFIGS[3],
                                    resume_from_checkpoint=os.path.join(zero2, "checkpoint-2"), **common))
    assert PARTITIONED_LOG in output
    # 2 ranks sum the two micro-batches in another order than one process with accumulation 2.
    _assert_same_training(zero3, zero2, steps=(3, 4), atol=2e-5)

    tower = {n for n in trained(zero3) if n.startswith("model.vision_tower.")}
    assert tower and all("layer_norm" in n or "layrnorm" in n for n in tower)
    assert not any(".layers.1." in n or "post_layernorm" in n for n in tower)  # unreachable at feature layer -2

    # The run loads on its merged base, and merging it again gives the same model.
    loaded = unwrap(load_checkpoint(zero3).model)
    for name, value in trained(zero3).items():
        assert torch.equal(dict(loaded.named_parameters())[name].detach(), value), name
    remerged = str(tmp_path / "remerged")
    merge_checkpoint(zero3, remerged, dtype="float32", log=lambda *_: None)
    again = dict(unwrap(load_checkpoint(remerged).model).named_parameters())
    for name, param in loaded.named_parameters():
        assert torch.equal(again[name].detach(), param.detach()), name
