"""`llava-ln train`: numeric flags that would crash late, train garbage or silently do nothing are one line at start.

Every flag class is covered by tests/core/test_flag_domains.py; these are train's exact lines through the CLI.
"""
import os

import pytest

from llava_ln.cli import main as cli_main

# flag, value, what the line must say. No model, data or tower is given: the check comes first.
BAD = [
    ("--learning_rate", "-0.001", "--learning_rate -0.001: must be >= 0"),
    ("--norm_lr", "inf", "--norm_lr inf: must be a finite number >= 0"),
    ("--mm_projector_lr", "-0.00002", "--mm_projector_lr -2e-05: must be >= 0"),
    ("--learning_rate", "nan", "--learning_rate nan: must be a finite number >= 0"),
    ("--num_train_epochs", "nan", "--num_train_epochs nan: must be a finite number >= 0"),
    ("--num_train_epochs", "inf", "--num_train_epochs inf: must be a finite number >= 0"),
    ("--warmup_ratio", "1.5", "--warmup_ratio 1.5: must be in [0, 1]"),
    ("--warmup_ratio", "-0.1", "--warmup_ratio -0.1: must be in [0, 1]"),
    ("--warmup_steps", "-3", "--warmup_steps -3: must be >= 1, or 0 (--warmup_ratio decides)"),
    ("--weight_decay", "-0.1", "--weight_decay -0.1: must be >= 0"),
    ("--max_grad_norm", "-1", "--max_grad_norm -1.0: must be > 0, or 0 (no clipping)"),
    ("--adam_beta2", "1.0", "--adam_beta2 1.0: must be in [0, 1)"),
    ("--adam_epsilon", "-0.00000001", "--adam_epsilon -1e-08: must be > 0"),
    ("--adam_epsilon", "0", "--adam_epsilon 0.0: must be > 0"),  # was NaN at step 1, blamed on the learning rate
    ("--save_steps", "0", "--save_steps 0.0: must be > 0"),  # was: silently no checkpoint at all
    ("--logging_steps", "0", "--logging_steps 0.0: must be > 0"),  # was: silently no log
    ("--save_steps", "nan", "--save_steps nan: must be a finite number > 0"),
    ("--logging_steps", "inf", "--logging_steps inf: must be a finite number > 0"),
    ("--max_steps", "0", "--max_steps 0: must be >= 1, or -1 (--num_train_epochs decides)"),
    ("--save_total_limit", "0", "--save_total_limit 0: must be >= 1"),
    ("--eval_limit", "-1", "--eval_limit -1: must be >= 1, or 0 (all)"),
    ("--gradient_checkpointing_ratio", "2", "--gradient_checkpointing_ratio 2.0: must be in [0, 1]"),
    ("--memory_budget_gib", "0", "--memory_budget_gib 0.0: must be > 0"),
    ("--model_max_length", "1", "--model_max_length 1: must be >= 2"),
    ("--max_image_pixels", "-1", "--max_image_pixels -1: must be >= 1, or 0 (no limit)"),
    ("--bits", "2", "--bits 2: must be one of 4, 8, 16"),
    ("--seed", "-1", "--seed -1: must be in [0, 4294967295]"),
    ("--data_seed", "4294967296", "--data_seed 4294967296: must be in [0, 4294967295]"),
    ("--dataloader_num_workers", "-2", "--dataloader_num_workers -2: must be >= 1, or 0 (read in the training process)"),
    ("--lora_r", "0", "--lora_r 0: must be >= 1"),
    ("--lora_dropout", "1.0", "--lora_dropout 1.0: must be in [0, 1)"),
    ("--max_nonfinite_steps", "-1", "--max_nonfinite_steps -1: must be >= 0"),
]


@pytest.mark.parametrize("flag,value,message", BAD, ids=[f"{f}={v}" for f, v, _ in BAD])
def test_bad_numbers_are_one_line_naming_the_flag(tmp_path, capsys, flag, value, message):
    out = str(tmp_path / "run")
    assert cli_main(["train", "--output_dir", out, flag, value]) == 2
    err = capsys.readouterr().err
    assert err == f"llava-ln: error: {message}\n"
    assert not os.path.exists(out)


TUNING = [
    (("--tune_mode", "norms"), "--tune_mode 'norms' is not one of connector, ln, ln_simple, lora, full, attn_qv, "
                               "attn_mlp"),
    (("--tune_mode", "ln", "--vision_tune_mode", "norms"), "--vision_tune_mode 'norms' is not one of frozen, ln, "
                                                           "lora, full"),
    (("--tune_mode", "ln", "--vision_tune_last_layers", "2"), "--vision_tune_last_layers 2 needs a --vision_tune_mode "
                                                              "other than frozen"),
]


@pytest.mark.parametrize("argv,message", TUNING, ids=[" ".join(argv) for argv, _ in TUNING])
def test_tuning_flags_that_need_no_model_are_checked_before_it_loads(tmp_path, capsys, argv, message):
    """No model is given: these used to be refused only once the base (minutes at 7B) had loaded."""
    out = str(tmp_path / "run")
    assert cli_main(["train", "--output_dir", out, *argv]) == 2
    assert capsys.readouterr().err == f"llava-ln: error: {message}\n"
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
