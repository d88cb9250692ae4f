"""Fault injection into real training runs on the toy world: kill -9, SIGTERM/SIGINT, ENOSPC, non-finite steps.

Each case ends in a bit-identical resume (the final trained tensors equal an uninterrupted run's) or
in a one-line error, and nothing already saved is lost: every checkpoint on disk is complete, the
earlier ones survive, and leftovers of killed saves are gone once the run continues. The faults go
into a separate training process (tests/support/faulty_training.py, under plain python or the
deepspeed launcher with 2 ranks on gloo); the run is then finished as a user would (resume `latest`,
in-process when one rank suffices). The fast cases run in `make test`; the randomized set is marked
`faults` (`make test-faults`). docs/reliability.md ("Runs") lists the cases.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from run_faults import (
    assert_same,
    checkpoints,
    command,
    error_lines,
    finish,
    leftovers,
    toy_flags,
    toy_world,
    train,
    train_and_signal,
    trained,
)
from safetensors.torch import load_file

from llava_ln.core.errors import LlavaLnError
from llava_ln.train import main

pytestmark = pytest.mark.slow
SAVES = (2, 4)  # --max_steps 6 --save_steps 2
FILES_AT_START = 3  # run_config.json, trainable_parameters.txt, optimizer_groups.json


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return toy_world(str(tmp_path_factory.mktemp("reliability_runs")))


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """The uninterrupted run, in a training process that also counts its fault points."""
    out = str(tmp_path_factory.mktemp("reference") / "run")
    report = out + ".events"
    done = train(toy_flags(world, out), fault={"report": report})
    assert done.returncode == 0, done.stderr[-3000:]
    with open(report + ".rank0", encoding="utf-8") as handle:
        counts = json.load(handle)
    return {"dir": out, "tensors": trained(out), "counts": counts,
            "files_per_checkpoint": (counts["file"] - FILES_AT_START - 2) // len(SAVES)}


def _first_file_of_checkpoint(reference, index: int) -> int:
    """The `file` event number of the first file written for the index-th (0-based) checkpoint."""
    return FILES_AT_START + index * reference["files_per_checkpoint"] + 1


def _assert_nothing_saved_was_lost(out: str, last_saved: int) -> dict:
    """Every checkpoint up to last_saved is there and complete (checkpoints() checks each one)."""
    found = checkpoints(out)
    assert [s for s in SAVES if s <= last_saved] == [s for s in sorted(found) if s in SAVES]
    return found


def _finish_and_compare(world, out: str, reference) -> None:
    has_checkpoint = any(n.startswith("checkpoint-") for n in os.listdir(out))
    assert main(toy_flags(world, out, **({"resume_from_checkpoint": "latest"} if has_checkpoint else {}))) == 0
    assert leftovers(out) == []
    assert_same(trained(out), reference["tensors"])


def test_kill_9_in_the_middle_of_a_save(world, reference, tmp_path):
    out = str(tmp_path / "run")
    fault = {"action": "kill", "event": "file", "n": _first_file_of_checkpoint(reference, 1) + 2}
    done = train(toy_flags(world, out), fault=fault)
    assert done.returncode == -signal.SIGKILL
    assert [n.startswith(".tmp-checkpoint-4-") for n in leftovers(out)] == [True]  # the interrupted save
    _assert_nothing_saved_was_lost(out, last_saved=2)
    _finish_and_compare(world, out, reference)


def test_sigterm_in_the_middle_of_a_save_finishes_it_then_checkpoints_the_next_step(world, reference, tmp_path):
    out = str(tmp_path / "run")
    fault = {"action": "term", "event": "file", "n": _first_file_of_checkpoint(reference, 1) + 1}
    done = train(toy_flags(world, out), fault=fault)
    assert done.returncode == 143
    assert error_lines(done.stderr) == [f"llava-ln: stopped: SIGTERM after step 5: checkpoint {out}/checkpoint-5 "
                                        "written; continue with --resume_from_checkpoint latest"]
    assert sorted(_assert_nothing_saved_was_lost(out, last_saved=4)) == [2, 4, 5]
    _finish_and_compare(world, out, reference)


def test_disk_full_during_a_save_is_one_line_and_loses_nothing(world, reference, tmp_path):
    out = str(tmp_path / "run")
    fault = {"action": "enospc", "event": "file", "n": _first_file_of_checkpoint(reference, 1) + 3}
    done = train(toy_flags(world, out), fault=fault)
    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert line.startswith(f"llava-ln: error: could not write {out}/checkpoint-4: No space left on device (")
    assert f"nothing was lost: {out}/checkpoint-2 is intact, and the partial files were removed" in line
    assert leftovers(out) == []
    _assert_nothing_saved_was_lost(out, last_saved=2)
    _finish_and_compare(world, out, reference)


def _mount_tmpfs(path: str, size: str) -> bool:
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True).returncode == 0


def test_a_real_full_disk_on_a_small_tmpfs(world, reference, tmp_path):
    disk = str(tmp_path / "disk")
    checkpoint_bytes = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in
                           os.walk(os.path.join(reference["dir"], "checkpoint-2")) for f in files)
    # Room for the first checkpoint and the run's small files, not for the second checkpoint.
    if not _mount_tmpfs(disk, str(int(checkpoint_bytes * 1.6))):
        pytest.skip("cannot mount a tmpfs here (needs root); the simulated ENOSPC case covers the logic")
    try:
        out = os.path.join(disk, "run")
        with pytest.raises(LlavaLnError, match=rf"could not write {out}/checkpoint-4: No space left on device .*"
                                               rf"nothing was lost: {out}/checkpoint-2 is intact"):
            main(toy_flags(world, out))
        assert leftovers(out) == []
        _assert_nothing_saved_was_lost(out, last_saved=2)
        subprocess.run(["mount", "-o", "remount,size=64m", disk], check=True)
        _finish_and_compare(world, out, reference)
    finally:
        subprocess.run(["umount", disk], capture_output=True)


def test_a_diverging_run_stops_in_one_line_and_writes_nothing_non_finite(world, reference, tmp_path):
    """A run that diverges: a huge learning rate. Here `ln` at 1e4 gives NaN gradients from step 2 on."""
    out = str(tmp_path / "run")
    done = train(toy_flags(world, out, tune_mode="ln", learning_rate=1e4, lr_scheduler_type="constant",
                           warmup_steps=0, pretrain_mm_mlp_adapter=reference["dir"], save_steps=1, max_steps=8,
                           data_path=os.path.join(world, "data", "instruct_conversation.json"),
                           conv_template="vicuna_v1"))
    assert done.returncode == 3
    [line] = error_lines(done.stderr)
    assert line.startswith("llava-ln: error: step ") and "not finite, on 4 steps in a row (--max_nonfinite_steps " \
        "3); the run diverged and stopped without saving" in line
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    for root, _, files in os.walk(out):
        for name in files:
            if name.endswith(".safetensors"):
                for tensor_name, value in load_file(os.path.join(root, name)).items():
                    assert bool(torch.isfinite(value).all()), (name, tensor_name)


# ---- 2 ranks, ZeRO-3, on the CPU (gloo) through the deepspeed launcher ----

@pytest.fixture(scope="module")
def zero3_reference(world, reference, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("zero3_reference") / "run")
    done = train(toy_flags(world, out, per_device_train_batch_size=2), ranks=2)
    assert done.returncode == 0, done.stderr[-4000:]
    return {"dir": out, "tensors": trained(out)}


def test_zero3_two_ranks_sigterm_to_the_job_checkpoints_collectively_and_resumes_exactly(world, zero3_reference,
                                                                                         tmp_path):
    """SIGTERM to every process of the job (ranks and launcher) at the start of step 3, as a scheduler sends it."""
    out = str(tmp_path / "run")
    flags = toy_flags(world, out, per_device_train_batch_size=2)
    done = train(flags, fault={"action": "term_job", "event": "step", "n": 3}, ranks=2)
    # The ranks exit 143; the launcher's own status is its reaction to the signal (the single-node
    # `deepspeed` runner does not catch SIGTERM: -15).
    assert done.returncode in (143, -signal.SIGTERM), done.stderr[-3000:]
    # Both ranks say the same line (the launcher forwarded the signal again: ignored).
    assert set(error_lines(done.stderr)) == {f"llava-ln: stopped: SIGTERM after step 3: checkpoint {out}/checkpoint-3 "
                                             "written; continue with --resume_from_checkpoint latest"}, done.stderr[-4000:]
    assert sorted(checkpoints(out)) == [2, 3]
    finish(flags, ranks=2)
    assert leftovers(out) == []
    assert_same(trained(out), zero3_reference["tensors"])


# ---- the full, randomized set: `make test-faults` ----

def _check_outcome(done, action: str, out: str, limit: int | None = None, saves=SAVES) -> None:
    """What any single fault may end in: the process killed, a checkpoint and a stop line, a finished run, or a
    one-line write error; whatever it is, the checkpoints on disk are complete and none is missing."""
    lines = set(error_lines(done.stderr))
    found = checkpoints(out)
    regular = [s for s in sorted(found) if s in saves]
    if limit is None:
        assert regular == list(saves[:len(regular)])
    else:  # pruning follows the commit of a new checkpoint: a kill in between leaves one more
        assert len(found) <= limit + 1
    name, code = {"kill": ("SIGKILL", 137), "term": ("SIGTERM", 143), "int": ("SIGINT", 130)}.get(action, ("", 2))
    if os.path.exists(os.path.join(out, "manifest.json")) and not lines:
        # The run had finished: the signal came during the final save (exit 0) or after main returned.
        assert done.returncode in (0, code, -getattr(signal, name, 0)), done.returncode
        return
    if action == "kill":
        assert done.returncode != 0  # -9, or what a launcher makes of it
    elif action in ("term", "int"):
        assert done.returncode in (code, -signal.SIGTERM), done.stderr[-3000:]
        [line] = lines
        if "being set up" in line:
            assert line == f"llava-ln: stopped: {name} while the run was being set up: nothing to save"
        else:
            step = int(line.split("after step ")[1].split(":")[0])
            assert line.startswith(f"llava-ln: stopped: {name} after step {step}: checkpoint {out}/checkpoint-{step}")
            assert step in found
    else:
        assert done.returncode == 2, done.stderr[-3000:]
        [line] = lines
        assert line.startswith(("llava-ln: error: could not write ", "llava-ln: error: the disk is full: ")), line
        assert "No space left on device" in line
        assert leftovers(out) == []


@pytest.mark.faults
@pytest.mark.parametrize("case", range(16))
def test_a_fault_at_a_random_point(world, reference, tmp_path, case):
    rng = random.Random(1000 + case)
    action = rng.choice(["kill", "term", "int", "enospc"])
    event = rng.choice(["file", "commit"] if action == "enospc" else ["file", "commit", "step"])
    fault = {"action": action, "event": event, "n": rng.randint(1, reference["counts"][event])}
    out = str(tmp_path / "run")
    limit = rng.choice([None, 1])
    done = train(toy_flags(world, out, save_total_limit=limit), fault=fault)
    print(f"case {case}: {fault} -> exit {done.returncode}")
    _check_outcome(done, action, out, limit)
    _finish_and_compare(world, out, reference)


LONG = dict(max_steps=24, save_steps=4)  # a few seconds of training, for signals sent by the clock


@pytest.fixture(scope="module")
def long_reference(world, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("long_reference") / "run")
    assert main(toy_flags(world, out, **LONG)) == 0
    return {"tensors": trained(out)}


@pytest.mark.faults
@pytest.mark.parametrize("case", range(8))
def test_a_signal_to_the_whole_job_at_a_random_moment(world, long_reference, tmp_path, case):
    rng = random.Random(2000 + case)
    signum = rng.choice([signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
    out = str(tmp_path / "run")
    # DataLoader workers get the signal too; they must neither die nor save (only the main process does).
    flags = toy_flags(world, out, dataloader_num_workers=rng.choice([0, 1]), **LONG)
    done, seconds = train_and_signal(flags, signum, delay=rng.uniform(0, 2))
    print(f"case {case}: {signal.Signals(signum).name} -> exit {done.returncode} after {seconds:.1f} s")
    action = {signal.SIGKILL: "kill", signal.SIGTERM: "term", signal.SIGINT: "int"}[signum]
    _check_outcome(done, action, out, saves=tuple(range(4, 24, 4)))
    has_checkpoint = any(n.startswith("checkpoint-") for n in os.listdir(out))
    assert main(toy_flags(world, out, **LONG, **({"resume_from_checkpoint": "latest"} if has_checkpoint else {}))) == 0
    assert leftovers(out) == []
    assert_same(trained(out), long_reference["tensors"])


def _zero3_case(world, zero3_reference, out: str, fault: dict, expect: str):
    flags = toy_flags(world, out, per_device_train_batch_size=2)
    done = train(flags, fault=fault, ranks=2)
    print(f"zero3 {fault} -> exit {done.returncode}")
    _check_outcome(done, expect, out)
    finish(flags, ranks=2)
    assert leftovers(out) == []
    assert_same(trained(out), zero3_reference["tensors"])
    return done


@pytest.mark.faults
def test_zero3_kill_9_of_rank_0_in_the_middle_of_a_save(world, reference, zero3_reference, tmp_path):
    n = _first_file_of_checkpoint(reference, 1) + 1
    _zero3_case(world, zero3_reference, str(tmp_path / "run"), {"action": "kill", "event": "file", "n": n}, "kill")


@pytest.mark.faults
def test_zero3_disk_full_on_rank_0_stops_both_ranks_with_the_same_line(world, reference, zero3_reference, tmp_path):
    n = _first_file_of_checkpoint(reference, 1) + 2
    done = _zero3_case(world, zero3_reference, str(tmp_path / "run"), {"action": "enospc", "event": "file", "n": n},
                       "enospc")
    assert len([line for line in done.stderr.splitlines() if line.startswith("llava-ln: error: could not")]) == 2


@pytest.mark.faults
def test_zero3_sigterm_to_one_rank_stops_both_after_the_same_step(world, zero3_reference, tmp_path):
    done = _zero3_case(world, zero3_reference, str(tmp_path / "run"),
                       {"action": "term", "event": "step", "n": 3, "rank": 1}, "term")
    assert "after step 3:" in done.stderr


@pytest.mark.faults
def test_zero3_sigterm_to_the_job_in_the_middle_of_a_save(world, reference, zero3_reference, tmp_path):
    n = _first_file_of_checkpoint(reference, 1) + 1  # rank 0 is writing checkpoint-4
    done = _zero3_case(world, zero3_reference, str(tmp_path / "run"), {"action": "term_job", "event": "file", "n": n},
                       "term")
    assert "after step 5:" in done.stderr  # checkpoint-4 completed, step 5 ran, then the stop checkpoint


@pytest.mark.faults
def test_zero3_nan_on_one_rank_is_skipped_on_both_and_resumes_exactly(world, tmp_path):
    out, resumed = str(tmp_path / "run"), str(tmp_path / "resumed")
    done = train(toy_flags(world, out, per_device_train_batch_size=2), ranks=2,
                 fault={"action": "nan", "event": "step", "n": 3, "rank": 1})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 3: the loss is not finite; step skipped, no update" in done.stderr
    with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as handle:
        assert json.loads(handle.readlines()[-1])["skipped_steps"] == 1
    before, after = (load_file(os.path.join(out, f"checkpoint-{s}", "resume", "master.safetensors")) for s in (2, 4))
    assert any(not torch.equal(before[n], after[n]) for n in before)  # step 4 trained again
    finish_flags = toy_flags(world, resumed, per_device_train_batch_size=2,
                             resume_from_checkpoint=os.path.join(out, "checkpoint-4"))
    assert train(finish_flags, ranks=2).returncode == 0
    assert_same(trained(resumed), trained(out))


@pytest.mark.faults
@pytest.mark.parametrize("case", range(2))
def test_zero3_a_signal_to_the_whole_job_at_a_random_moment(world, zero3_reference, tmp_path, case):
    rng = random.Random(3000 + case)
    signum = rng.choice([signal.SIGKILL, signal.SIGTERM])
    out = str(tmp_path / "run")
    flags = toy_flags(world, out, per_device_train_batch_size=2)
    done, seconds = train_and_signal(flags, signum, delay=rng.uniform(0, 3), ranks=2)
    print(f"zero3 case {case}: {signal.Signals(signum).name} -> exit {done.returncode} after {seconds:.1f} s")
    _check_outcome(done, "kill" if signum == signal.SIGKILL else "term", out)
    if os.path.exists(os.path.join(out, "manifest.json")):
        assert_same(trained(out), zero3_reference["tensors"])
        return
    finish(flags, ranks=2)
    assert_same(trained(out), zero3_reference["tensors"])


# ---- the folder as a shared resource, inputs that change, cluster signals (docs/reliability.md "Commands") ----

@pytest.mark.faults
def test_two_trainings_started_at_once_on_one_folder_one_runs_the_other_is_refused(world, reference, tmp_path):
    out = str(tmp_path / "run")
    first, second = (subprocess.Popen(command(toy_flags(world, out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=dict(os.environ, FAULT_JSON="{}")) for _ in range(2))
    results = [(process.pid, process.wait(timeout=600), process.stderr.read()) for process in (first, second)]
    codes = sorted(code for _, code, _ in results)
    assert codes == [0, 2], [(code, stderr[-2000:]) for _, code, stderr in results]
    winner = next(pid for pid, code, _ in results if code == 0)
    [line] = error_lines(next(stderr for _, code, stderr in results if code == 2))
    assert line.startswith(f"llava-ln: error: --output_dir {out} is in use by llava-ln train, pid {winner} on host")
    assert_same(trained(out), reference["tensors"])  # one run's result, whole
    assert sorted(checkpoints(out)) == list(SAVES) and leftovers(out) == []


@pytest.mark.faults
def test_sighup_of_a_dropped_session_checkpoints_and_resumes_exactly(world, reference, tmp_path):
    out = str(tmp_path / "run")
    done = train(toy_flags(world, out), fault={"action": "hup", "event": "step", "n": 3})
    assert done.returncode == 129, done.stderr[-3000:]
    assert error_lines(done.stderr) == [f"llava-ln: stopped: SIGHUP after step 3: checkpoint {out}/checkpoint-3 "
                                        "written; continue with --resume_from_checkpoint latest"]
    _finish_and_compare(world, out, reference)


@pytest.mark.faults
def test_a_base_llm_config_rewritten_in_place_stops_the_resume(world, reference, tmp_path):
    llm = shutil.copytree(os.path.join(world, "llm"), str(tmp_path / "llm"))
    out = str(tmp_path / "run")
    done = train(toy_flags(world, out, model_name_or_path=llm, max_steps=4))
    assert done.returncode == 0, done.stderr[-3000:]
    config_path = os.path.join(llm, "config.json")
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["rope_theta"] = float(config.get("rope_theta") or 10000.0) * 2
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    resumed = toy_flags(world, out, model_name_or_path=llm, max_steps=4, resume_from_checkpoint="latest")
    with pytest.raises(LlavaLnError, match=r"--model_name_or_path \(content\) .* \(config\.json changed\)"):
        main(resumed)
    assert main(resumed + ["--allow_changed_flags"]) == 0


@pytest.mark.faults
def test_a_merge_killed_mid_write_leaves_nothing_and_the_next_merge_cleans_up(reference, tmp_path):
    import time

    out = str(tmp_path / "merged")
    merge = [sys.executable, "-m", "llava_ln.cli", "merge", "--checkpoint", reference["dir"], "--output_dir", out]
    process = subprocess.Popen(merge, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(
            n.startswith(".tmp-merged-") and os.path.exists(os.path.join(tmp_path, n, "config.json"))
            for n in os.listdir(tmp_path)):
        time.sleep(0.01)
    process.kill()
    process.wait()
    assert not os.path.exists(out) and [n for n in os.listdir(tmp_path) if n.startswith(".tmp-merged-")]
    done = subprocess.run(merge, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(n for n in os.listdir(tmp_path) if n != "merged") == []
    assert os.path.exists(os.path.join(out, "manifest.json"))
