"""Fault injection, resume state and DeepSpeed shards: damaged, planted and misleading files.

Resume: every file of checkpoint-<step>/resume is covered by the checkpoint's checksums and
trainer_state.json is read field by field; a damaged one stops the resume with one line, and
the checkpoint is left as it was. ZeRO shards: read tensor-only and consolidated by llava-ln
itself; the layout is checked against DeepSpeed's own consolidation (synthetic shards here,
real 2-rank ZeRO-2/3 shards under the `faults` marker).
"""
import contextlib
import io
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from fault_helpers import DAMAGES, copy_tree, error_lines, plant_pickle, refused, run_cli, snapshot
from safetensors.torch import load_file
from train_helpers import flags, train_world

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.checkpoint.manifest import Manifest, write_manifest
from llava_ln.checkpoint.zero_shards import consolidate_zero_checkpoint, zero_checkpoint_dir
from llava_ln.core.processes import end_group, free_port, start_in_group
from llava_ln.training.checkpointing import TrainState
from llava_ln.training.guards.resume_files import read_trainer_state, verify_resume_files

RESUME_FILES = ["master.safetensors", "exp_avg.safetensors", "exp_avg_sq.safetensors", "rng.safetensors",
                "trainer_state.json"]
SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")



@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


@pytest.fixture(scope="module")
def trained_run(world):
    """A 3-step ln run with checkpoint-2 (resume state included)."""
    from llava_ln.train import main

    out = os.path.join(world["root"], "fault_ln")
    if not os.path.isdir(out):
        assert main(flags(world, out, max_steps=3, save_steps=2)) == 0
    return out


def _resume(checkpoint_dir: str) -> None:
    verify_resume_files(checkpoint_dir, "resume", ("master", "exp_avg", "exp_avg_sq", "rng"), "trainer_state.json")
    read_trainer_state(os.path.join(checkpoint_dir, "resume", "trainer_state.json"), TrainState)


def test_the_checkpoint_records_a_checksum_for_every_resume_file(trained_run):
    manifest = json.load(open(os.path.join(trained_run, "checkpoint-2", "manifest.json"), encoding="utf-8"))
    assert {f"resume/{name}" for name in RESUME_FILES} <= set(manifest["files"])
    _resume(os.path.join(trained_run, "checkpoint-2"))  # healthy: no error


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("name", RESUME_FILES)
def test_damaged_resume_file_stops_the_resume_with_one_line(tmp_path, trained_run, name, damage):
    checkpoint = copy_tree(os.path.join(trained_run, "checkpoint-2"), str(tmp_path / "checkpoint-2"))
    DAMAGES[damage](os.path.join(checkpoint, "resume", name))
    before = snapshot(checkpoint)
    refused(lambda: _resume(checkpoint), name, "sha256")
    assert snapshot(checkpoint) == before


def test_resume_shard_swapped_for_a_pickle(tmp_path, trained_run):
    checkpoint = copy_tree(os.path.join(trained_run, "checkpoint-2"), str(tmp_path / "checkpoint-2"))
    marker = str(tmp_path / "ran")
    plant_pickle(os.path.join(checkpoint, "resume", "master.safetensors"), marker)
    refused(lambda: _resume(checkpoint), "master.safetensors")
    assert not os.path.exists(marker)


TRAINER_STATES = {
    "torn": ('{"state": {"global_step": 2', "not valid JSON"),
    "a_list": ("[]", "not an object"),
    "step_as_string": (lambda s: s["state"].update(global_step="2"), "state.global_step"),
    "negative_step": (lambda s: s["state"].update(epoch=-1), "state.epoch"),
    "scheduler_missing": (lambda s: s.pop("scheduler"), "'scheduler'"),
    "rng_not_a_state": (lambda s: s["rng"].update({"0": [1, 2]}), "rng.0"),
    "optimizer_steps_float": (lambda s: s.update(optimizer_steps=2.5), "optimizer_steps"),
    "unknown_state_field": (lambda s: s["state"].update(steps_to_glory=1), "steps_to_glory"),
}


@pytest.mark.parametrize("case", sorted(TRAINER_STATES))
def test_trainer_state_is_checked_field_by_field(tmp_path, trained_run, case):
    """Even without checksums (a hand-edited or pre-checksum checkpoint), a bad field is one line."""
    source = os.path.join(trained_run, "checkpoint-2", "resume", "trainer_state.json")
    change, expected = TRAINER_STATES[case]
    path = str(tmp_path / "trainer_state.json")
    if isinstance(change, str):
        text = change
    else:
        state = json.load(open(source, encoding="utf-8"))
        change(state)
        text = json.dumps(state)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    refused(lambda: read_trainer_state(path, TrainState), "trainer_state.json", expected)


@pytest.mark.faults
@pytest.mark.parametrize("name", ["master.safetensors", "rng.safetensors", "trainer_state.json"])
def test_resume_through_the_cli_refuses_a_flipped_bit(tmp_path, world, trained_run, name):
    out = copy_tree(trained_run, str(tmp_path / "run"))
    DAMAGES["data_bit"](os.path.join(out, "checkpoint-2", "resume", name))
    before = snapshot(os.path.join(out, "checkpoint-2"))
    code, err = run_cli("train", *flags(world, out, max_steps=3, save_steps=2,  # the flags the run was saved with
                                        resume_from_checkpoint=os.path.join(out, "checkpoint-2")))
    errors = error_lines(err)
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err[-3000:]
    assert name in errors[0] and "sha256" in errors[0], errors
    assert snapshot(os.path.join(out, "checkpoint-2")) == before


# ---- DeepSpeed ZeRO shards ----

def _zero_shards(folder: str, tensors: dict, stage: int, ranks: int, groups: int = 2) -> str:
    """DeepSpeed's on-disk layout, written by hand (plain data only): ZeRO-1/2 or ZeRO-3, `ranks` shards."""
    step = os.path.join(folder, "global_step3")
    os.makedirs(step)
    names = sorted(tensors)
    split = [names[i::groups] for i in range(groups)]  # interleaved: groups are not contiguous in name order
    shapes = [{n: tensors[n].shape for n in group} for group in split]
    per_rank = [[] for _ in range(ranks)]
    for group in split:
        if stage == 3:
            pieces = [[] for _ in range(ranks)]
            for name in group:
                flat = tensors[name].reshape(-1)
                size = math.ceil(flat.numel() / ranks)
                flat = torch.cat([flat, torch.zeros(size * ranks - flat.numel())])
                for rank in range(ranks):
                    pieces[rank].append(flat[rank * size:(rank + 1) * size])
            for rank in range(ranks):
                per_rank[rank].append(torch.cat(pieces[rank]))
        else:
            flat = torch.cat([tensors[n].reshape(-1) for n in group])
            total = math.ceil(flat.numel() / (2 * ranks)) * 2 * ranks
            flat = torch.cat([flat, torch.zeros(total - flat.numel())])
            for rank, part in enumerate(flat.chunk(ranks)):
                per_rank[rank].append(part.clone())
    key = "fp32_flat_groups" if stage == 3 else "single_partition_of_fp32_groups"
    for rank in range(ranks):
        optim = {"zero_stage": stage, "partition_count": ranks if stage == 3 else [ranks] * groups,
                 key: per_rank[rank], "ds_version": "0.19.8"}
        torch.save({"optimizer_state_dict": optim}, os.path.join(step, f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"))
        model_file = "mp_rank_00_model_states.pt" if stage < 3 else f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt"
        if stage == 3 or rank == 0:
            torch.save({"module": {}, "buffer_names": [], "param_shapes": shapes, "shared_params": {},
                        "ds_version": "0.19.8"}, os.path.join(step, model_file))
    with open(os.path.join(folder, "latest"), "w") as handle:
        handle.write("global_step3")
    return step


def _odd_tensors():
    generator = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(*shape, generator=generator)
            for i, shape in enumerate([(7,), (3, 5), (1,), (4, 4), (9,), (2, 3, 2)])}


@pytest.mark.parametrize("stage,ranks", [(2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3)])
def test_consolidation_matches_deepspeeds_own_on_the_same_shards(tmp_path, stage, ranks):
    tensors = _odd_tensors()
    _zero_shards(str(tmp_path), tensors, stage, ranks)
    ours = consolidate_zero_checkpoint(str(tmp_path))
    assert set(ours) == set(tensors) and all(torch.equal(ours[n], tensors[n]) for n in tensors)
    deepspeed_utils = pytest.importorskip("deepspeed.utils.zero_to_fp32")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        reference = deepspeed_utils.get_fp32_state_dict_from_zero_checkpoint(str(tmp_path))
    assert all(torch.equal(ours[n], reference[n]) for n in tensors)


SHARD_FAULTS = {
    "planted_model_states": (lambda step, marker: plant_pickle(
        os.path.join(step, "mp_rank_00_model_states.pt"), marker), "GLOBAL"),
    "planted_optim_states": (lambda step, marker: plant_pickle(
        os.path.join(step, "zero_pp_rank_1_mp_rank_00_optim_states.pt"), marker), "GLOBAL"),
    "missing_rank": (lambda step, _: os.remove(os.path.join(step, "zero_pp_rank_1_mp_rank_00_optim_states.pt")),
                     "written by 2 ranks but 1"),
    "truncated_shard": (lambda step, _: DAMAGES["truncated"](
        os.path.join(step, "zero_pp_rank_0_mp_rank_00_optim_states.pt")), "zero_pp_rank_0"),
    "shapes_from_another_run": (lambda step, _: torch.save(
        {"param_shapes": [{"x": torch.Size([1000])}], "buffer_names": []},
        os.path.join(step, "mp_rank_00_model_states.pt")), "another"),
    "not_a_dict": (lambda step, _: torch.save([1, 2], os.path.join(step, "mp_rank_00_model_states.pt")),
                   "not a DeepSpeed shard"),
    "latest_climbs_out": (lambda step, _: open(os.path.join(os.path.dirname(step), "latest"), "w").write(
        "../global_step3"), "not a folder name"),
    "latest_names_a_subfolder": (lambda step, _: open(os.path.join(os.path.dirname(step), "latest"), "w").write(
        "sub/global_step3"), "not a folder name"),
    "latest_absolute": (lambda step, _: open(os.path.join(os.path.dirname(step), "latest"), "w").write(step),
                        "not a folder name"),
}


@pytest.mark.parametrize("case", sorted(SHARD_FAULTS))
def test_bad_zero_shards_are_one_line_and_run_no_code(tmp_path, case):
    folder = str(tmp_path / "ckpt")
    step = _zero_shards(folder, _odd_tensors(), 2, 2)
    marker = str(tmp_path / "ran")
    damage, expected = SHARD_FAULTS[case]
    damage(step, marker)
    refused(lambda: consolidate_zero_checkpoint(folder), expected)
    assert not os.path.exists(marker)


def test_a_shard_only_run_folder_loads_through_load_checkpoint(tmp_path, tiny_llm, tiny_vision):
    """The fallback end to end (synthetic shards of an ln_simple run): no DeepSpeed, no pickle."""
    from model_helpers import build, trained_tensors

    model, spec = build(tiny_llm, tiny_vision, "llama", "ln_simple")
    tensors = {name: torch.full_like(value.detach(), 0.5) for name, value in trained_tensors(model).items()}
    folder = str(tmp_path / "run")
    _zero_shards(folder, tensors, 3, 2)
    write_manifest(folder, Manifest(kind="trained", llm=tiny_llm("llama"), tokenizer=tiny_llm("llama"),
                                    vision_tower=tiny_vision("clip"), mm_projector_type="mlp2x_gelu",
                                    mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                                    tune_mode="ln_simple", conv_template="vicuna_v1", image_aspect_ratio="pad",
                                    image_token_id=spec.image_token_id, num_image_tokens=spec.num_image_tokens))
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = load_checkpoint(folder)
    params = dict(loaded.model.named_parameters())
    assert all(torch.equal(params[name], tensors[name]) for name in tensors)


@pytest.mark.faults
@pytest.mark.parametrize("stage", [2, 3])
def test_real_two_rank_shards_consolidate_to_what_deepspeed_gathered(tmp_path, tiny_llm, tiny_vision, stage):
    out = str(tmp_path / "ckpt")
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2", DS_ACCELERATOR="cpu")
    jobs = [start_in_group([sys.executable, os.path.join(SUPPORT, "zero_shards_job.py"), tiny_llm("llama"),
                            tiny_vision("clip"), out, str(stage), "ln"], env=dict(env, RANK=str(rank)),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    try:
        outputs = [job.communicate(timeout=900)[0] for job in jobs]
    finally:
        for job in jobs:
            end_group(job)
    assert all(job.returncode == 0 for job in jobs), outputs[0][-3000:] + outputs[1][-3000:]
    assert len(os.listdir(zero_checkpoint_dir(out))) >= 3
    expected = load_file(os.path.join(out, "expected.safetensors"))
    ours = consolidate_zero_checkpoint(out)
    assert set(ours) == set(expected) and all(torch.equal(ours[n], expected[n]) for n in expected)
