"""Numeric flags that would crash late (with a traceback) or train garbage are one line before anything loads."""
import os

import pytest

from llava_ln.cli import main as cli_main

# flag, value, what the line must say. No model, data or tower is given: the check comes first.
BAD = [
    ("--learning_rate", "-0.001", "--learning_rate -0.001: must be >= 0"),
    ("--norm_lr", "inf", "--norm_lr inf: must be a finite number"),
    ("--mm_projector_lr", "-0.00002", "--mm_projector_lr -2e-05: must be >= 0"),
    ("--learning_rate", "nan", "--learning_rate nan: must be a finite number"),
    ("--num_train_epochs", "nan", "--num_train_epochs nan: must be a finite number"),
    ("--num_train_epochs", "inf", "--num_train_epochs inf: must be a finite number"),
    ("--warmup_ratio", "1.5", "--warmup_ratio 1.5: must be <= 1"),
    ("--warmup_ratio", "-0.1", "--warmup_ratio -0.1: must be >= 0"),
    ("--warmup_steps", "-3", "--warmup_steps -3: must be >= 0"),
    ("--weight_decay", "-0.1", "--weight_decay -0.1: must be >= 0"),
    ("--max_grad_norm", "-1", "--max_grad_norm -1.0: must be >= 0"),
    ("--adam_beta2", "1.0", "--adam_beta2 1.0: must be < 1"),
    ("--adam_epsilon", "-0.00000001", "--adam_epsilon -1e-08: must be >= 0"),
    ("--save_steps", "nan", "--save_steps nan: must be a finite number"),
    ("--logging_steps", "inf", "--logging_steps inf: must be a finite number"),
    ("--seed", "-1", "--seed -1: must be >= 0"),
    ("--dataloader_num_workers", "-2", "--dataloader_num_workers -2: must be >= 0"),
    ("--lora_r", "0", "--lora_r 0: must be > 0"),
    ("--lora_dropout", "1.0", "--lora_dropout 1.0: must be < 1"),
    ("--max_nonfinite_steps", "-1", "--max_nonfinite_steps -1: must be >= 0"),
]


@pytest.mark.parametrize("flag,value,message", BAD, ids=[f"{f}={v}" for f, v, _ in BAD])
def test_bad_numbers_are_one_line_naming_the_flag(tmp_path, capsys, flag, value, message):
    out = str(tmp_path / "run")
    assert cli_main(["train", "--output_dir", out, flag, value]) == 2
    err = capsys.readouterr().err
    assert err == f"llava-ln: error: {message}\n"
    assert not os.path.exists(out)


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "a_file"
    path.write_text("x")
    assert cli_main(["train", "--output_dir", str(path)]) == 2
    assert capsys.readouterr().err == f"llava-ln: error: --output_dir {path}: exists and is not a folder\n"


def test_train_help_prints_every_flag(capsys):
    """argparse formats help texts with %: a bare % in one of them used to crash `llava-ln train --help`."""
    with pytest.raises(SystemExit) as done:
        cli_main(["train", "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # help is wrapped to the terminal's width
    assert "--max_nonfinite_steps" in out and "--allow_changed_flags" in out and "10%, at least 2 GiB" in out
