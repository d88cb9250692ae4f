"""The demo continues where it stopped: killed in stage 2 and run again, it reuses stage 1, resumes stage 2
from its checkpoint and measures exactly what an uninterrupted run measures; --restart starts over.

One tiny recipe (a few steps, two benchmarks on 2% of the sets) and one world shared by every run. The
output of the stopped and the resumed run is also checked for library noise (deprecation warnings, progress
bars per model loaded)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from demo_helpers import TINY_DEMO_FLAGS, tiny_demo_world

from llava_ln.commands.demo import demo_main
from llava_ln.experiments.demo_state import STATE_FILE

STAGE1, STAGE2 = "stage1_connector", "stage2_ln"


def _user_env() -> dict:
    """The environment a user's shell gives: without what an in-process command of this session set."""
    return {key: value for key, value in os.environ.items() if key != "HF_HUB_DISABLE_PROGRESS_BARS"}


def _demo_process(out: str) -> subprocess.Popen:
    """`llava-ln demo` in a process group of its own (so the test can signal the whole group, as a terminal does)."""
    return subprocess.Popen([sys.executable, "-m", "llava_ln.cli", "demo", "--out", out, *TINY_DEMO_FLAGS],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=_user_env())


def _wait_for_checkpoint(process: subprocess.Popen, run_dir: str, timeout: float = 300.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [name for name in (os.listdir(run_dir) if os.path.isdir(run_dir) else [])
                 if name.startswith("checkpoint-") and name[11:].isdigit()]
        if found:
            return found[0]
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"stage 2 wrote no checkpoint (demo exit {process.poll()}): {process.communicate()[0][-3000:]}")


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """An uninterrupted demo, and a demo stopped in stage 2 then run again (its outputs and folders)."""
    root = tmp_path_factory.mktemp("demo_resume")
    world = tiny_demo_world(tmp_path_factory)
    whole, stopped = str(root / "whole"), str(root / "stopped")
    for out in (whole, stopped):
        shutil.copytree(world, os.path.join(out, "toy_world"))
    assert demo_main(["--out", whole, *TINY_DEMO_FLAGS]) == 0

    process = _demo_process(stopped)
    _wait_for_checkpoint(process, os.path.join(stopped, STAGE2))
    os.killpg(process.pid, signal.SIGTERM)
    stop_output = process.communicate(timeout=300)[0]
    stage1_manifest = os.path.join(stopped, STAGE1, "manifest.json")
    stage1_written = os.stat(stage1_manifest).st_mtime_ns
    again = subprocess.run([sys.executable, "-m", "llava_ln.cli", "demo", "--out", stopped, *TINY_DEMO_FLAGS],
                           capture_output=True, text=True, timeout=600, env=_user_env())
    return {"whole": whole, "stopped": stopped, "stop_code": process.returncode, "stop_output": stop_output,
            "again": again, "stage1_rewritten": os.stat(stage1_manifest).st_mtime_ns != stage1_written}


def _result(out: str) -> dict:
    with open(os.path.join(out, "demo_result.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_a_demo_stopped_in_stage_2_says_how_to_continue(demos):
    assert demos["stop_code"] == 128 + signal.SIGTERM, demos["stop_output"][-3000:]
    last = demos["stop_output"].strip().splitlines()[-1]
    assert last.startswith("llava-ln: stopped: SIGTERM stopped the demo in stage 2"), last
    assert f"run `llava-ln demo --out {demos['stopped']}" in last and "again to continue" in last
    assert "--resume_from_checkpoint" not in last


def test_run_again_it_reuses_stage_1_resumes_stage_2_and_scores_as_an_uninterrupted_run(demos):
    again = demos["again"]
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stage 2 of 5: stage 1: connector on captions (done earlier, reused)" in again.stdout
    assert "stage 3 of 5: stage 2: --tune_mode ln (continuing from checkpoint-" in again.stdout
    assert not demos["stage1_rewritten"]
    with open(os.path.join(demos["stopped"], STAGE2, "log.jsonl"), encoding="utf-8") as handle:
        assert any(json.loads(line).get("event") == "resume" for line in handle)
    assert _result(demos["stopped"])["scores"] == _result(demos["whole"])["scores"]
    # Nothing moved aside: a rerun continues in the same folders.
    assert not [name for name in os.listdir(demos["stopped"]) if ".previous-" in name]


# What a demo used to print besides its own lines: transformers' deprecation warnings for APIs llava-ln called,
# DeepSpeed's accelerator notice (imported where unused), a progress bar per model loaded.
NOISE = ("FutureWarning", "gradient_checkpointing_enable", "is_gradient_checkpointing", "Setting accelerator to CPU",
         "Loading weights")


def test_the_demo_prints_no_library_noise(demos):
    printed = demos["stop_output"] + demos["again"].stdout + demos["again"].stderr
    assert [noise for noise in NOISE if noise in printed] == []


def test_a_third_run_reuses_everything(demos, capsys):
    out = demos["stopped"]
    scores = _result(out)["scores"]
    assert demo_main(["--out", out, *TINY_DEMO_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(done earlier, reused)") == 4, printed  # two stages, two evaluations
    assert _result(out)["scores"] == scores


def test_another_recipe_in_the_same_folder_is_refused_in_one_line(demos, capsys):
    from llava_ln.cli import main

    flags = list(TINY_DEMO_FLAGS)
    flags[flags.index("--stage1_steps") + 1] = "5"
    assert main(["demo", "--out", demos["whole"], *flags]) == 2
    line = capsys.readouterr().err.strip()
    assert "holds stage 1: connector on captions of another recipe (--max_steps 2, now 5)" in line
    assert "--restart" in line and "\n" not in line


def test_restart_removes_what_the_demo_wrote_and_trains_again(demos, capsys, monkeypatch):
    import llava_ln.train

    out = demos["stopped"]

    def first_training(argv):
        raise SystemExit("training started")

    monkeypatch.setattr(llava_ln.train, "main", first_training)
    with pytest.raises(SystemExit, match="training started"):
        demo_main(["--out", out, "--restart", *TINY_DEMO_FLAGS])
    assert "stage 2 of 5: stage 1: connector on captions (training)" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(["toy_world", "eval_sets_x0.02", STATE_FILE])
    with open(os.path.join(out, STATE_FILE), encoding="utf-8") as handle:
        assert list(json.load(handle)["steps"]) == ["stage 1: connector on captions"]  # recorded as it starts


def test_a_folder_the_demo_did_not_record_is_not_taken_for_a_finished_stage(tmp_path, tmp_path_factory):
    from llava_ln.core.errors import LlavaLnError
    from llava_ln.experiments.demo_state import DemoState

    run_dir = tmp_path / STAGE1
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text("{}")
    state = DemoState(str(tmp_path))
    with pytest.raises(LlavaLnError, match="did not record"):
        state.training_plan("stage 1", str(run_dir), ["--max_steps", "4"])
    state.start_training("stage 1", ["--max_steps", "4"])
    assert os.path.isfile(tmp_path / STATE_FILE)
    assert DemoState(str(tmp_path)).training_plan("stage 1", str(run_dir), ["--max_steps", "4"]) == "done"
    (run_dir / "manifest.json").unlink()  # the folder alone is not a finished stage
    assert DemoState(str(tmp_path)).training_plan("stage 1", str(run_dir), ["--max_steps", "4"]) == "start"


def test_a_stop_outside_training_also_says_how_to_continue():
    from llava_ln.commands.demo import Progress, stop_says_how_to_continue
    from llava_ln.training.guards.stop_signals import Interrupted

    progress = Progress()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as stopped:
        with stop_says_how_to_continue(progress, "llava-ln demo --out d"):
            with progress.step("evaluate the stage-2 model (ln)", "answering and scoring"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises at once
    assert str(stopped.value) == ("SIGTERM stopped the demo in evaluate the stage-2 model (ln); run `llava-ln demo "
                                  "--out d` again to continue (add --restart to start over)")
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
