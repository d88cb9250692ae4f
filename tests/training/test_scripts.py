"""The launch scripts only pass flags that llava_ln/train.py accepts, with the recipe's values."""
import os
import shlex
import subprocess

import pytest

from llava_ln.core.flags import parse_flags
from llava_ln.data import DataArguments
from llava_ln.model.args import ModelArguments
from llava_ln.training.args import TrainingArguments
from llava_ln.tuning.args import TuningArguments

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _dry_run(script: str, **env) -> tuple[list[str], tuple]:
    done = subprocess.run(["bash", os.path.join(REPO, "scripts", script)], capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", "NUM_GPUS": "2", **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    command = shlex.split(done.stdout)
    argv = command[command.index("llava_ln/train.py") + 1:]
    parsed = parse_flags(argv, (ModelArguments, DataArguments, TuningArguments, TrainingArguments), prog="test")
    return command, parsed


def test_pretrain_script_is_the_stage1_recipe():
    command, (model, data, tuning, train) = _dry_run("pretrain.sh")
    assert command[:3] == ["deepspeed", "--num_gpus", "2"]
    assert (tuning.tune_mode, data.conv_template, model.mm_projector_type) == ("connector", "plain", "mlp2x_gelu")
    assert train.learning_rate == 1e-3 and train.bf16 and train.gradient_checkpointing
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps * 2 == 256
    assert train.deepspeed == "zero_configs/zero2.json"


@pytest.mark.parametrize("mode,lr,norm_lr,projector_lr", [
    ("ln", 2e-5, 1e-3, None), ("ln_simple", 2e-5, 1e-3, None), ("lora", 2e-4, None, 2e-5),
    ("full", 2e-5, None, None), ("attn_qv", 2e-5, None, None), ("attn_mlp", 2e-5, None, None),
])
def test_finetune_script_per_mode(mode, lr, norm_lr, projector_lr):
    _, (model, data, tuning, train) = _dry_run("finetune.sh", TUNE_MODE=mode, ADAPTER="/ckpt/stage1")
    assert (tuning.tune_mode, tuning.norm_lr, tuning.mm_projector_lr) == (mode, norm_lr, projector_lr)
    assert train.learning_rate == lr and train.pretrain_mm_mlp_adapter == "/ckpt/stage1"
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps * 2 == 128
    assert data.group_by_modality_length and data.image_aspect_ratio == "pad"
    if mode == "lora":
        assert (tuning.lora_r, tuning.lora_alpha) == (128, 256)


def test_multinode_goes_through_the_hostfile_and_keeps_the_global_batch():
    command, (*_, train) = _dry_run("finetune.sh", HOSTFILE="scripts/hostfile.example", NUM_NODES="2")
    assert command[:5] == ["deepspeed", "--hostfile", "scripts/hostfile.example", "--num_nodes", "2"]
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps * 2 * 2 == 128


def test_an_indivisible_global_batch_stops_the_script():
    done = subprocess.run(["bash", os.path.join(REPO, "scripts", "pretrain.sh")], capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", "NUM_GPUS": "3"}, timeout=60)
    assert done.returncode == 2 and "not a multiple" in done.stderr
