"""run_command: one line per error, a traceback only with --debug (or LLAVA_LN_DEBUG=1), disk full as one line."""
import errno
import subprocess
import sys

import pytest

from llava_ln.core.errors import LlavaLnError, run_command


def _fails_deep_inside(argv):
    assert "--debug" not in argv  # removed before the command parses its flags
    raise LlavaLnError("--thing 3: must be 2")


def _disk_full(argv):
    raise OSError(errno.ENOSPC, "No space left on device", "/data/out/answers.jsonl")


def test_an_error_is_one_line_without_a_traceback(capsys):
    assert run_command(_fails_deep_inside, ["--x", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "llava-ln: error: --thing 3: must be 2\n"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(capsys, monkeypatch, how):
    argv = ["--debug"] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv("LLAVA_LN_DEBUG", "1")
    assert run_command(_fails_deep_inside, argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "_fails_deep_inside" in err
    assert err.splitlines()[-1] == "llava-ln: error: --thing 3: must be 2"


def test_a_full_disk_is_one_line_naming_the_file(capsys):
    assert run_command(_disk_full, []) == 2
    assert capsys.readouterr().err == ("llava-ln: error: the disk is full: No space left on device (errno 28) "
                                       "(/data/out/answers.jsonl); free space and run again\n")


def test_safetensors_own_disk_full_error_is_one_line_too(capsys):
    from safetensors import SafetensorError

    def save(argv):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    assert run_command(save, []) == 2
    assert capsys.readouterr().err == ("llava-ln: error: the disk is full: No space left on device (os error 28); "
                                       "free space and run again\n")


def test_other_os_errors_still_raise():
    def broken(argv):
        raise PermissionError(errno.EACCES, "Permission denied", "/x")

    with pytest.raises(PermissionError):
        run_command(broken, [])


@pytest.mark.parametrize("debug", [False, True])
def test_cli_commands_take_debug(debug):
    argv = ["score", "--benchmark", "pope", "--annotations", "/nonexistent.json", "--predictions", "/no.jsonl"]
    done = subprocess.run([sys.executable, "-m", "llava_ln.cli", *argv, *(["--debug"] if debug else [])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "llava-ln: error: POPE annotations file not found: /nonexistent.json"
    assert ("Traceback (most recent call last)" in done.stderr) == debug


def test_a_collective_that_lost_its_peer_is_one_line(capsys):
    def collective(argv):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:61076. This is "
                           "typically caused by a remote worker crashing.\nmore")

    assert run_command(collective, []) == 1
    assert capsys.readouterr().err == ("llava-ln: error: lost contact with another rank of the job (it crashed or was "
                                       "killed; its own output says why): [gloo/transport/tcp/pair.cc:553] Connection "
                                       "closed by peer [127.0.0.1]:61076. This is typically caused by a remote worker "
                                       "crashing.\n")


def test_without_argv_the_process_arguments_are_used(monkeypatch):
    """`python -m llava_ln.experiments.benchmarks ...` passes None: its own sys.argv[1:] (minus --debug)."""
    seen = []
    monkeypatch.setattr(sys, "argv", ["benchmarks.py", "--model_path", "m", "--debug"])
    assert run_command(lambda argv: seen.append(argv) or 0) == 0
    assert seen == [["--model_path", "m"]]


@pytest.mark.parametrize("module", ["llava_ln.experiments.benchmarks", "llava_ln.experiments.claims"])
def test_module_entry_points_start(module):
    """The modules `llava-ln compare` runs as `python -m` in child processes parse their own flags."""
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize("argv, message", [
    (["eval", "--benchmark", "pope"], "llava-ln eval: the following arguments are required: --model_path "
                                      "(see llava-ln eval --help)"),
    (["eval", "--benchmark", "popee", "--model_path", "m"], "llava-ln eval: argument --benchmark: invalid choice: "),
    (["score", "--benchmark", "pope", "--predictions"], "llava-ln score: argument --predictions: expected one argument"),
])
def test_a_usage_error_is_one_line_naming_the_flag_as_help_shows_it(capsys, argv, message):
    """Not argparse's usage dump (in HfArgumentParser's notation: --model_path/--model-path, [--json [JSON]])."""
    from llava_ln.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"llava-ln: error: {message}") and err.count("\n") == 1, err
