"""One run per folder: overwriting moves the earlier run aside; resume and pruning never touch another run's checkpoints."""
import json
import os
from types import SimpleNamespace

import pytest
from train_helpers import flags, stage1_run, train_world

from llava_ln.core.distributed import DistContext
from llava_ln.core.errors import LlavaLnError
from llava_ln.train import main
from llava_ln.training.checkpointing import prune_checkpoints
from llava_ln.training.guards.run_ownership import folder_run_id, start_run


def _checkpoint(run_dir: str, step: int, run_id: str | None) -> str:
    path = os.path.join(run_dir, f"checkpoint-{step}")
    os.makedirs(os.path.join(path, "resume"))
    run = {"tune_mode": "ln"} | ({"run_id": run_id} if run_id else {})
    with open(os.path.join(path, "resume", "trainer_state.json"), "w", encoding="utf-8") as handle:
        json.dump({"run": run, "state": {"global_step": step}}, handle)
    return path


def _owner(run_dir: str, run_id: str) -> None:
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "run_config.json"), "w", encoding="utf-8") as handle:
        json.dump({"resolved": {"run_id": run_id}}, handle)


def _args(output_dir: str, resume=None, overwrite=False):
    return SimpleNamespace(output_dir=output_dir, resume_from_checkpoint=resume, overwrite_output_dir=overwrite)


def _start(output_dir: str, resume=None, overwrite=False, inputs=()):
    return start_run(_args(output_dir, resume, overwrite), DistContext(), list(inputs))


def test_overwriting_moves_the_earlier_run_aside_whole(tmp_path):
    run = str(tmp_path / "run")
    _owner(run, "old")
    _checkpoint(run, 2, "old")
    with open(os.path.join(run, "manifest.json"), "w", encoding="utf-8") as handle:
        handle.write("{}")
    with pytest.raises(LlavaLnError, match="already holds a run.*--overwrite_output_dir to move it aside"):
        _start(run)
    start = _start(run, overwrite=True)
    assert start.resume_dir is None and start.run_id != "old"
    assert os.listdir(run) == []
    assert os.path.basename(start.moved_aside).startswith("run.previous-")
    assert sorted(os.listdir(start.moved_aside)) == ["checkpoint-2", "manifest.json", "run_config.json"]
    assert folder_run_id(start.moved_aside) == "old"


def test_overwriting_refuses_to_move_this_runs_inputs_or_resume_latest(tmp_path):
    run = str(tmp_path / "run")
    _checkpoint(run, 2, "old")
    data = tmp_path / "run" / "data.json"
    data.write_text("[]")
    with pytest.raises(LlavaLnError, match=r"--output_dir .*run contains --data_path .*data\.json"):
        _start(run, overwrite=True, inputs=[("--data_path", str(data))])
    with pytest.raises(LlavaLnError, match="cannot resume `latest`"):
        _start(run, resume="latest", overwrite=True)
    assert sorted(os.listdir(run)) == ["checkpoint-2", "data.json"]


def test_latest_and_pruning_stay_within_one_run(tmp_path):
    run = str(tmp_path / "run")
    _owner(run, "mine")
    _checkpoint(run, 2, "mine")
    _checkpoint(run, 4, "mine")
    start = _start(run, resume="latest")
    assert start.resume_dir.endswith("checkpoint-4") and start.run_id == "mine"
    _checkpoint(run, 8, "someone-else")  # copied in by hand: never resumed, never pruned
    with pytest.raises(LlavaLnError, match=r"more than one run \(checkpoint-8 belongs to another\)"):
        _start(run, resume="latest")
    prune_checkpoints(run, 1, "mine")
    assert sorted(os.listdir(run)) == ["checkpoint-4", "checkpoint-8", "run_config.json"]


def test_latest_sees_a_checkpoint_that_a_kill_caught_mid_replace_and_drops_leftovers(tmp_path):
    run = str(tmp_path / "run")
    _owner(run, "mine")
    _checkpoint(run, 2, "mine")
    os.rename(_checkpoint(run, 6, "mine"), os.path.join(run, ".old-checkpoint-6-abc123"))
    os.makedirs(os.path.join(run, ".tmp-checkpoint-6-def456"))
    (tmp_path / "run" / ".tmp-xyz.json").write_text("{")
    start = _start(run, resume="latest")
    assert start.resume_dir.endswith("checkpoint-6")
    assert sorted(os.listdir(run)) == ["checkpoint-2", "checkpoint-6", "run_config.json"]


def test_resuming_into_a_folder_of_another_run_is_refused_or_moves_it_aside(tmp_path):
    source, target = str(tmp_path / "a"), str(tmp_path / "b")
    checkpoint = _checkpoint(source, 2, "run-a")
    _owner(target, "run-c")
    _checkpoint(target, 4, "run-c")
    with pytest.raises(LlavaLnError, match=r"holds checkpoints of another run \(checkpoint-4\)"):
        _start(target, resume=checkpoint)
    start = _start(target, resume=checkpoint, overwrite=True)
    assert (start.resume_dir, start.run_id) == (checkpoint, "run-a")
    assert os.listdir(target) == [] and folder_run_id(start.moved_aside) == "run-c"


def test_resuming_an_earlier_checkpoint_into_its_own_folder_would_overwrite_newer_ones(tmp_path):
    run = str(tmp_path / "run")
    _owner(run, "mine")
    earlier = _checkpoint(run, 2, "mine")
    _checkpoint(run, 4, "mine")
    with pytest.raises(LlavaLnError, match=r"also holds newer checkpoints of this run \(checkpoint-4\)"):
        _start(run, resume=earlier)
    start = _start(str(tmp_path / "fork"), resume=earlier)  # into a new folder: fine, same run
    assert start.run_id == "mine"


def test_checkpoints_from_before_run_ids_still_resume(tmp_path):
    run = str(tmp_path / "run")
    _checkpoint(run, 2, None)
    start = _start(run, resume="latest")
    assert start.resume_dir.endswith("checkpoint-2") and start.run_id
    prune_checkpoints(run, 1, start.run_id)  # nothing of unknown ownership is pruned
    assert os.listdir(run) == ["checkpoint-2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def test_overwrite_then_prune_and_resume_stay_within_the_new_run(world, tmp_path):
    out = str(tmp_path / "run")
    common = dict(tune_mode="ln_simple", norm_lr=5e-2, pretrain_mm_mlp_adapter=stage1_run(world), save_steps=1)
    assert main(flags(world, out, max_steps=4, **common)) == 0
    first_id = folder_run_id(out)
    assert main(flags(world, out, max_steps=3, save_total_limit=1, overwrite_output_dir=True, **common)) == 0
    second_id = folder_run_id(out)
    assert second_id != first_id
    aside = [p for p in os.listdir(tmp_path) if p.startswith("run.previous-")]
    assert len(aside) == 1  # the first run, whole: its checkpoints (steps 1-3) and final weights
    kept = os.path.join(tmp_path, aside[0])
    assert sorted(n for n in os.listdir(kept) if n.startswith("checkpoint-")) == [f"checkpoint-{s}" for s in range(1, 4)]
    assert folder_run_id(kept) == first_id and os.path.exists(os.path.join(kept, "manifest.json"))
    assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")) == ["checkpoint-2"]
    # `latest` continues the new run (checkpoint-2, then one more step), under its id.
    assert main(flags(world, out, max_steps=3, resume_from_checkpoint="latest", **common)) == 0
    assert folder_run_id(out) == second_id
