"""Fault injection, commands: folders shared by two processes, inputs that change or overlap, values never checked.

Each case ends in one line naming the holder, the input, the field or the tensor (or in a folder put
back as it was), before anything is loaded or written: a second process on a folder another one
owns (train, merge, export, eval), leftovers of a killed merge/export, an output that is an input, a
tower rewritten in place under a resume, NaN and wrongly typed tensors, DeepSpeed config values out
of their domain, a duplicated POPE answer, and the cluster signals. docs/reliability.md ("Commands")
lists the cases.
"""
import json
import logging
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from export_helpers import make_run
from fault_helpers import refused
from safetensors.torch import load_file, save_file

from llava_ln.checkpoint.integrity import sha256_file
from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.checkpoint.tensors import assign_tensors
from llava_ln.commands.ship import merge_main
from llava_ln.core import atomic
from llava_ln.core.distributed import DistContext
from llava_ln.core.folder_lock import FolderInUse, FolderLock, lock_path_for
from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.runner import run_eval
from llava_ln.export.output_folder import owned_output
from llava_ln.export.verify import Tolerance, compare_probe
from llava_ln.scoring.pope import score_pope
from llava_ln.train import main as train_main
from llava_ln.training.guards.resume_check import check_resume_flags, run_defining_flags
from llava_ln.training.guards.run_ownership import start_run
from llava_ln.training.guards.stop_signals import StopSignals, parse_stop_signals
from llava_ln.training.zero.config_types import check_zero_config_types

# ---- one process per output folder ----

HOLDER = ("import sys, time\nfrom llava_ln.core.folder_lock import FolderLock\nFolderLock(sys.argv[1], 'eval').acquire()\n"
          "print('held', flush=True)\ntime.sleep(600)\n")


@pytest.fixture()
def held(tmp_path):
    """A folder whose lock another process holds (a stand-in for an `llava-ln eval` still running)."""
    out = str(tmp_path / "out")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, out], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert holder.stdout.readline().strip() == "held"
    yield out, holder
    holder.kill()
    holder.wait()


def test_a_folder_in_use_is_refused_by_every_command_naming_the_holder(held, tmp_path):
    out, holder = held
    (tmp_path / "run").mkdir()
    named = f"in use by llava-ln eval, pid {holder.pid} on host"
    refused(lambda: merge_main(["--checkpoint", str(tmp_path / "run"), "--output_dir", out]), named, kind=FolderInUse)
    refused(lambda: train_main(["--output_dir", out, "--model_name_or_path", "none", "--data_path", "none.json",
                                "--vision_tower", "none"]), named, kind=FolderInUse)
    refused(lambda: run_eval(EvalArguments(benchmark="pope", model_path=str(tmp_path / "run"), output_dir=out)), named,
            kind=FolderInUse)
    assert not os.path.exists(out)  # nothing was created by the refused commands


def test_a_lock_left_by_a_killed_holder_is_taken_over(held, caplog):
    out, holder = held
    holder.kill()
    holder.wait()
    assert os.path.exists(lock_path_for(out))  # a kill removes nothing: the kernel only dropped the lock
    with caplog.at_level(logging.WARNING), FolderLock(out, "merge"):
        assert f"pid {holder.pid}" in caplog.text and "ended without releasing it" in caplog.text
        with pytest.raises(FolderInUse, match="in this same process"):
            FolderLock(out, "export").acquire()
    assert not os.path.exists(lock_path_for(out))  # released cleanly: no lock file left


# ---- merge / export outputs: complete or absent ----

def test_an_export_cleans_what_a_killed_one_left_and_puts_back_the_previous_folder(tmp_path):
    parent, checkpoint = tmp_path / "exports", tmp_path / "run"
    (checkpoint).mkdir()
    (parent / ".old-merged-k3v9zq1a").mkdir(parents=True)  # a kill between the two renames of a replacement
    (parent / ".old-merged-k3v9zq1a" / "model.safetensors").write_bytes(b"previous")
    (parent / ".tmp-merged-p0c2ab7d").mkdir()  # a half-written export
    (parent / ".tmp-merged-p0c2ab7d" / "model.safetensors").write_bytes(b"x" * 4096)
    (parent / ".tmp-merged-2-ffff0000").mkdir()  # another folder's: not ours to touch
    output = str(parent / "merged")
    with owned_output(output, "merge", str(checkpoint), overwrite=True):
        assert (parent / "merged" / "model.safetensors").read_bytes() == b"previous"
    assert sorted(os.listdir(parent)) == [".tmp-merged-2-ffff0000", "merged"]


def test_replacing_a_folder_never_leaves_its_name_empty(tmp_path, monkeypatch):
    final = str(tmp_path / "merged")
    os.makedirs(final)
    (tmp_path / "merged" / "old").write_text("old")
    real_replace = os.replace

    def no_two_step(source, target):
        assert not (os.path.basename(target) == "merged" and os.path.exists(final)), "the name would stand empty"
        return real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", no_two_step)
    with atomic.atomic_directory(final) as tmp:
        open(os.path.join(tmp, "new"), "w").close()
    assert os.listdir(final) == ["new"] and os.listdir(tmp_path) == ["merged"]


# ---- inputs: overlapping, changed underneath ----

def test_an_output_that_is_the_vision_tower_folder_is_refused(tiny_vision, tmp_path):
    tower = tiny_vision("clip")
    args = SimpleNamespace(output_dir=tower, resume_from_checkpoint=None, overwrite_output_dir=False)
    before = sorted(os.listdir(tower))
    refused(lambda: start_run(args, DistContext(), [("--vision_tower", tower)]), f"--output_dir {tower} is --vision_tower")
    args.output_dir = os.path.join(tower, "runs", "a")
    refused(lambda: start_run(args, DistContext(), [("--vision_tower", tower)]), "lies inside --vision_tower")
    assert sorted(os.listdir(tower)) == before


def test_a_tower_rewritten_in_place_stops_the_resume(tiny_llm, tiny_vision, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("LLAVA_LN_HASH_CACHE", str(tmp_path / "hashes.json"))
    tower = shutil.copytree(tiny_vision("clip"), str(tmp_path / "tower"))
    data = tmp_path / "data.json"
    data.write_text("[]")
    model = SimpleNamespace(model_name_or_path=tiny_llm("llama"), tokenizer_name_or_path=None, vision_tower=tower)
    data_args = SimpleNamespace(data_path=str(data))
    args = SimpleNamespace(pretrain_mm_mlp_adapter=None)

    def flags():
        return run_defining_flags(model, data_args, SimpleNamespace(), args, context=DistContext(),
                                  precision="fp32", global_batch_size=4)

    checkpoint = tmp_path / "run" / "checkpoint-2"
    (checkpoint / "resume").mkdir(parents=True)
    (checkpoint / "resume" / "trainer_state.json").write_text(json.dumps({"run": {"flags": flags()}}))
    assert check_resume_flags(str(checkpoint), flags(), allow=False) == {}  # unchanged: from the cache, equal

    weights = os.path.join(tower, "model.safetensors")
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3  # same shapes, same size on disk, other weights
    stat = os.stat(weights)
    save_file(tensors, weights, metadata={"format": "pt"})
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with its old modification time
    assert os.path.getsize(weights) == stat.st_size
    refused(lambda: check_resume_flags(str(checkpoint), flags(), allow=False), "--vision_tower (content)",
            "model.safetensors changed", "--allow_changed_flags")
    assert "--vision_tower (content)" in check_resume_flags(str(checkpoint), flags(), allow=True)


# ---- values: non-finite, wrongly typed ----

@pytest.fixture(scope="module")
def ln_run(tiny_llm, tiny_vision, tmp_path_factory):
    return make_run(str(tmp_path_factory.mktemp("nan") / "run"), tiny_llm("llama"), tiny_vision("clip"), "ln")


def _rewrite_trained(run: str, tmp_path, change) -> str:
    """A copy of run whose trained.safetensors was changed and its checksum recorded again (a consistent folder)."""
    import shutil

    copy = shutil.copytree(run, str(tmp_path / "changed"))
    path = os.path.join(copy, "trained.safetensors")
    tensors = load_file(path)
    name = sorted(tensors)[0]
    tensors[name] = change(tensors[name])
    save_file(tensors, path, metadata={"format": "pt"})
    manifest_path = os.path.join(copy, "manifest.json")
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    manifest["files"]["trained.safetensors"] = sha256_file(path)
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle)
    return copy


def test_nan_in_a_trained_tensor_is_refused_when_the_checkpoint_is_read(ln_run, tmp_path):
    changed = _rewrite_trained(ln_run, tmp_path, lambda t: t.clone().fill_(float("nan")))
    refused(lambda: load_checkpoint(changed), "trained.safetensors", "holds NaN or infinite values")


def test_an_integer_tensor_for_a_float_parameter_is_refused_not_cast(ln_run):
    loaded = load_checkpoint(ln_run)
    name, param = next((n, p) for n, p in loaded.model.named_parameters() if "multi_modal_projector" in n)
    before = param.detach().clone()
    refused(lambda: assign_tensors(loaded.model, {name: torch.ones(param.shape, dtype=torch.int64)}, "conn.bin"),
            "conn.bin", name, "stored as int64")
    assert torch.equal(param, before)


def test_verification_fails_on_nan_logits():
    reference = SimpleNamespace(name="probe", input_ids=torch.tensor([1, 2]), pixel_values=None,
                                logits=torch.full((1, 2, 5), float("nan")), generated=[3])
    other = {"input_ids": torch.tensor([1, 2]), "logits": torch.full((1, 2, 5), float("nan")), "generated": [3]}
    result = compare_probe(reference, other, Tolerance(), tokenizer=None)
    assert result.problem and "not finite" in result.problem and "FAIL" in result.line()


# ---- DeepSpeed config: domains and optimizer types ----

DOMAINS = {
    "accumulation_zero": ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps is 0; it must be an integer >= 1"),
    "eps_zero": ({"optimizer": {"type": "AdamW", "params": {"eps": 0}}}, "eps is 0; it must be a finite number > 0"),
    "offload_gpu": ({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "gpu"}}}, "device is 'gpu'"),
    "window_negative": ({"fp16": {"loss_scale_window": -1}}, "loss_scale_window is -1"),
    "beta_one": ({"optimizer": {"type": "AdamW", "params": {"betas": [0.9, 1.0]}}}, "each in [0, 1)"),
    "unknown_type": ({"optimizer": {"type": "LambFast"}}, "type 'LambFast' is not an optimizer DeepSpeed can build"),
    "max_grad_norm": ({"optimizer": {"type": "adam", "params": {"max_grad_norm": 1.0}}}, "max_grad_norm"),
    "stage_four": ({"zero_optimization": {"stage": 4}}, "stage is 4; it must be 1, 2 or 3"),
}


@pytest.mark.parametrize("case", sorted(DOMAINS))
def test_a_deepspeed_value_out_of_its_domain_is_one_line(case):
    config, expected = DOMAINS[case]
    config = {"zero_optimization": {"stage": 2}} | config
    refused(lambda: check_zero_config_types(config, "--deepspeed z.json"), "--deepspeed z.json", expected)


def test_known_optimizers_pass():
    for kind in ("AdamW", "adam", "Lamb", "SGD"):
        check_zero_config_types({"zero_optimization": {"stage": 2}, "optimizer": {"type": kind}}, "z.json")


def test_a_bad_deepspeed_config_stops_training_before_any_model_is_read(tmp_path):
    config = tmp_path / "z.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamWW"}}))
    started = time.monotonic()
    refused(lambda: train_main(["--output_dir", str(tmp_path / "out"), "--model_name_or_path", "/nonexistent",
                                "--vision_tower", "/nonexistent", "--data_path", "none.json", "--deepspeed",
                                str(config)]), "type 'AdamWW'")
    assert time.monotonic() - started < 60 and not os.path.exists(tmp_path / "out")


# ---- scoring: a duplicated answer is counted ----

def test_a_duplicated_pope_question_id_is_counted_when_paired_by_position():
    labels = [{"question_id": i, "label": lab} for i, lab in enumerate(["yes", "no", "yes"])]
    answers = [{"question_id": 0, "text": "yes"}, {"question_id": 0, "text": "no"}, {"question_id": 2, "text": "yes"}]
    split = score_pope({"random": (labels, answers)})["splits"]["random"]
    assert split["duplicate_ids"] == 1 and split["id_mismatches"] == 1


# ---- signals of real clusters ----

@pytest.mark.parametrize("name", ["USR1", "HUP"])
def test_sighup_and_sigusr1_are_noted_like_sigterm(name):
    signum = getattr(signal, f"SIG{name}")
    before = signal.getsignal(signum)
    with StopSignals() as stops:
        stops.start_training()
        os.kill(os.getpid(), signum)
        assert stops.received == signum
    assert signal.getsignal(signum) == before


def test_stop_signals_are_configurable_and_nohup_is_respected():
    assert parse_stop_signals("TERM,INT") == (signal.SIGTERM, signal.SIGINT)
    refused(lambda: parse_stop_signals("TERM,KILL"), "--stop_signals", "'KILL'")
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup leaves it
    try:
        with StopSignals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        with StopSignals("TERM,INT"):
            assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_eval_answers_into_the_benchmarks_own_folder_are_refused(tmp_path):
    data = tmp_path / "pope"
    data.mkdir()
    (tmp_path / "run").mkdir()
    refused(lambda: run_eval(EvalArguments(benchmark="pope", model_path=str(tmp_path / "run"), output_dir=str(data),
                                           data=str(data))), f"--output_dir {data} is --data {data}")
    assert os.listdir(data) == []
