"""Fault injection, flags: a numeric value outside its domain, given to any command, is one line before any work.

Each case runs the real `llava-ln` command line and checks the exit status (2), that standard error is the
one line naming the flag, the value and its domain, and that nothing appeared where the command writes
(--output_dir, its lock file beside it, --out). One command runs in a subprocess in every `make test`;
all run in-process there and, with `faults`, train (two flags), export, compare and toy each in a real
process of its own (started together).
docs/reliability.md ("Flags") lists the cases.
"""
import os
import subprocess
import sys

import pytest

from llava_ln.cli import main as cli_main

# command line (OUT: the folder the command would write; RUN: an existing checkpoint folder), the line.
CASES = [
    (["eval", "--benchmark", "pope", "--model_path", "RUN", "--output_dir", "OUT", "--batch_size", "0"],
     "--batch_size 0: must be >= 1"),
    (["train", "--output_dir", "OUT", "--warmup_ratio", "1.5"], "--warmup_ratio 1.5: must be in [0, 1]"),
    (["train", "--output_dir", "OUT", "--gradient_accumulation_steps", "0"],
     "--gradient_accumulation_steps 0: must be >= 1"),
    (["export", "--checkpoint", "RUN", "--output_dir", "OUT", "--atol", "-1"], "--atol -1.0: must be >= 0"),
    (["eval", "--benchmark", "pope", "--model_path", "RUN", "--output_dir", "OUT", "--temperature", "nan"],
     "--temperature nan: must be a finite number > 0, or 0 (greedy decoding)"),
    (["compare", "--output_dir", "OUT", "--parallel", "0"], "--parallel 0: must be >= 1"),
    (["demo", "--out", "OUT", "--stage2_steps", "0"], "--stage2_steps 0: must be >= 1"),
    (["toy", "--out", "OUT", "--scale", "0"], "--scale 0.0: must be > 0"),
    (["score", "--benchmark", "mme", "--predictions", "RUN", "--mme_subtasks", "9", "--output_file", "OUT"],
     "--mme_subtasks 9: must be one of 8, 10"),
]
IDS = [f"{argv[0]}{argv[-2]}={argv[-1]}" if argv[-2].startswith("--") else argv[0] for argv, _ in CASES]


def _argv(argv: list, tmp_path) -> tuple[list, str]:
    """The command line with OUT and RUN made real paths; OUT lies in a folder of its own, to see what appears."""
    (tmp_path / "run").mkdir(parents=True, exist_ok=True)
    (tmp_path / "work").mkdir(exist_ok=True)
    out = str(tmp_path / "work" / "out")
    return [out if a == "OUT" else str(tmp_path / "run") if a == "RUN" else a for a in argv], out


def _nothing_written(tmp_path) -> None:
    assert os.listdir(tmp_path / "work") == []  # no --output_dir, no lock file beside it
    assert os.listdir(tmp_path / "run") == []


@pytest.mark.parametrize("argv,line", CASES, ids=IDS)
def test_an_out_of_domain_flag_is_one_line_in_process(tmp_path, capsys, argv, line):
    argv, _ = _argv(argv, tmp_path)
    assert cli_main(argv) == 2
    assert capsys.readouterr().err == f"llava-ln: error: {line}\n"
    _nothing_written(tmp_path)


def _run_cli(argv: list) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llava_ln.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_eval_with_batch_size_0_is_one_line_from_the_real_command(tmp_path):
    argv, _ = _argv(CASES[0][0], tmp_path)
    done = _run_cli(argv)
    out, err = done.communicate(timeout=300)
    assert (done.returncode, out, err) == (2, "", f"llava-ln: error: {CASES[0][1]}\n")
    _nothing_written(tmp_path)


# Commands whose import differs most (train imports everything; toy almost nothing), started together.
IN_PROCESSES = ("train", "export", "compare", "toy")


@pytest.mark.faults
def test_the_other_commands_are_one_line_from_the_real_command(tmp_path):
    started = []
    for index, (argv, line) in enumerate(case for case in CASES[1:] if case[0][0] in IN_PROCESSES):
        argv, _ = _argv(argv, tmp_path / str(index))
        started.append((_run_cli(argv), line, tmp_path / str(index)))
    for process, line, folder in started:
        out, err = process.communicate(timeout=300)
        assert (process.returncode, out, err) == (2, "", f"llava-ln: error: {line}\n")
        _nothing_written(folder)
