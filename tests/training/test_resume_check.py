"""Resume compares the flags that define the run with the checkpoint's: a one-line diff, or a recorded change."""
import json
import os

import pytest
from train_helpers import flags, read_log, stage1_run, train_world

from llava_ln.core.errors import LlavaLnError
from llava_ln.train import main
from llava_ln.training.guards.resume_check import changed_flags


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def _checkpoint(world) -> str:
    return os.path.join(stage1_run(world), "checkpoint-2")


def test_a_changed_seed_and_rate_are_refused_with_a_diff(world, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(LlavaLnError) as caught:
        main(flags(world, out, stage=1, seed=8, learning_rate=0.02, logging_steps=2, loss_weighting="llava",
                   resume_from_checkpoint=_checkpoint(world)))
    message = str(caught.value)
    assert "\n" not in message
    assert "--learning_rate 0.02 (checkpoint: 0.01)" in message and "--seed 8 (checkpoint: 7)" in message
    assert '--loss_weighting "llava" (checkpoint: "token")' in message
    assert "logging_steps" not in message and "--allow_changed_flags" in message  # reporting flags are free
    assert not os.path.exists(os.path.join(out, "run_config.json"))  # refused before anything was built


def test_data_of_the_same_size_but_other_content_is_a_change(world, tmp_path):
    with open(world["captions"], encoding="utf-8") as handle:
        records = json.load(handle)
    records[0]["conversations"][1]["value"] = "a blue circle is right of a red square"
    edited = tmp_path / "captions.json"
    edited.write_text(json.dumps(records))
    with pytest.raises(LlavaLnError, match=r"--data_path \(content\) \[[0-9a-f]{12}\] \(checkpoint: \[[0-9a-f]{12}\]\)"):
        main(flags(world, str(tmp_path / "out"), stage=1, data_path=str(edited),
                   resume_from_checkpoint=_checkpoint(world)))
    # The same bytes under another name are the same data (beside the images, which the records name).
    moved = os.path.join(os.path.dirname(world["captions"]), f"copy_{tmp_path.name}.json")
    with open(world["captions"], "rb") as source, open(moved, "wb") as target:
        target.write(source.read())
    assert main(flags(world, str(tmp_path / "same"), stage=1, data_path=moved,
                      resume_from_checkpoint=_checkpoint(world))) == 0


def test_allowed_changes_are_used_and_recorded(world, tmp_path):
    out = str(tmp_path / "out")
    assert main(flags(world, out, stage=1, learning_rate=0.005, allow_changed_flags=True,
                      resume_from_checkpoint=_checkpoint(world))) == 0
    with open(os.path.join(out, "run_config.json"), encoding="utf-8") as handle:
        resolved = json.load(handle)["resolved"]
    assert resolved["changed_flags"] == {"--learning_rate": {"checkpoint": 0.01, "now": 0.005}}
    assert resolved["resumed_from"] == _checkpoint(world)
    with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as handle:
        events = [json.loads(line) for line in handle if '"event"' in line]
    assert events == [{"step": 2, "event": "resume", **{k: resolved[k] for k in
                                                         ("run_id", "resumed_from", "moved_aside", "changed_flags")}}]
    # The new rate is the one used from the resume on (constant schedule), and the log says so.
    log = read_log(out)
    assert [log[s]["lr"] for s in (3, 4)] == [0.005, 0.005]
    assert {rate for s in (3, 4) for rate in log[s]["lrs"].values()} == {0.005}


def test_a_checkpoint_that_predates_the_loss_weighting_flag_trained_with_llavas():
    before = {"--seed": 7}  # what a checkpoint written before --loss_weighting existed records
    assert changed_flags(before, {"--seed": 7, "--loss_weighting": "llava"}) == {}
    assert changed_flags(before, {"--seed": 7, "--loss_weighting": "token"}) == {
        "--loss_weighting": {"checkpoint": "llava", "now": "token"}}


def test_tuning_the_tower_from_a_frozen_checkpoint_is_one_change_that_no_flag_allows(world, tmp_path):
    """A frozen tower records no tower settings: the diff names the mode only, as frozen, not a row of nulls; and
    what trains cannot change even with --allow_changed_flags (refused before the model is built)."""
    tower = dict(stage=1, vision_tune_mode="ln", resume_from_checkpoint=_checkpoint(world))
    with pytest.raises(LlavaLnError) as caught:
        main(flags(world, str(tmp_path / "out"), **tower))
    assert '--vision_tune_mode "ln" (checkpoint: "frozen"); resume' in str(caught.value)
    assert "--vision_lora_r" not in str(caught.value) and "null" not in str(caught.value)
    with pytest.raises(LlavaLnError, match='--vision_tune_mode "ln" .checkpoint: "frozen".: what trains cannot change '
                                           "at a resume, not even with --allow_changed_flags"):
        main(flags(world, str(tmp_path / "allowed"), allow_changed_flags=True, **tower))
    assert not os.path.exists(os.path.join(tmp_path / "allowed", "run_config.json"))
    # A checkpoint from before tower tuning existed records no tower flag at all: it trained a frozen tower.
    assert changed_flags({"--seed": 7}, {"--seed": 7, "--vision_tune_mode": "frozen"}) == {}
    assert changed_flags({"--seed": 7, "--vision_tune_mode": "ln", "--vision_lora_r": 16},
                         {"--seed": 7, "--vision_tune_mode": "ln", "--vision_lora_r": 8}) == {
        "--vision_lora_r": {"checkpoint": 16, "now": 8}}
