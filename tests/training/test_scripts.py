"""The launch scripts only pass flags that llava_ln/train.py accepts, with the recipe's values (recipe.LLAVA_15)."""
import os
import shlex
import subprocess

import pytest

from llava_ln.core.flags import parse_flags
from llava_ln.data import DataArguments
from llava_ln.experiments.recipe import LLAVA_15
from llava_ln.model.args import ModelArguments
from llava_ln.training.args import TrainingArguments
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.modes import TUNE_MODES

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
    assert train.learning_rate == LLAVA_15.stage1_lr and train.bf16 and train.gradient_checkpointing
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps * 2 == LLAVA_15.stage1_global_batch
    assert (train.warmup_ratio, data.model_max_length) == (LLAVA_15.warmup_ratio, LLAVA_15.model_max_length)
    assert train.deepspeed == "zero_configs/zero2.json"


@pytest.mark.parametrize("mode", list(TUNE_MODES))
def test_finetune_script_per_mode(mode):
    """finetune.sh's case table gives every mode the recipe's rates."""
    _, (model, data, tuning, train) = _dry_run("finetune.sh", TUNE_MODE=mode, ADAPTER="/ckpt/stage1")
    rates = LLAVA_15.rates[mode]
    assert (tuning.tune_mode, tuning.norm_lr, tuning.mm_projector_lr) == (mode, rates.norm_lr, rates.mm_projector_lr)
    assert train.learning_rate == rates.learning_rate and train.pretrain_mm_mlp_adapter == "/ckpt/stage1"
    assert train.per_device_train_batch_size == LLAVA_15.per_device_train_batch_size
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps * 2 == LLAVA_15.stage2_global_batch
    assert (train.warmup_ratio, data.model_max_length) == (LLAVA_15.warmup_ratio, LLAVA_15.model_max_length)
    assert data.group_by_modality_length and data.image_aspect_ratio == "pad"
    if mode == "lora":
        assert (tuning.lora_r, tuning.lora_alpha) == (LLAVA_15.lora_r, LLAVA_15.lora_alpha)


def test_multinode_goes_through_the_hostfile_and_keeps_the_global_batch():
    command, (*_, train) = _dry_run("finetune.sh", HOSTFILE="scripts/hostfile.example", NUM_NODES="2")
    assert command[:5] == ["deepspeed", "--hostfile", "scripts/hostfile.example", "--num_nodes", "2"]
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps * 2 * 2 == 128


def test_an_indivisible_global_batch_stops_the_script():
    done = subprocess.run(["bash", os.path.join(REPO, "scripts", "pretrain.sh")], capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", "NUM_GPUS": "3"}, timeout=60)
    assert done.returncode == 2 and "not a multiple" in done.stderr
