"""Flag dataclasses: importable without torch, each flag declared once, composed where commands share it."""
import dataclasses
import importlib
import subprocess
import sys

import pytest

from llava_ln.core.args import ReplaceOutputArguments, SeedArguments, default_of
from llava_ln.core.errors import LlavaLnError

# Every module that holds flag dataclasses (the parser reads them; `--help` needs nothing else).
FLAG_MODULES = ("llava_ln.core.args", "llava_ln.model.args", "llava_ln.data.args", "llava_ln.tuning.args",
                "llava_ln.training.args", "llava_ln.evaluation.args", "llava_ln.scoring.dispatch",
                "llava_ln.experiments.recipe", "llava_ln.experiments.args", "llava_ln.commands.args")
NOT_FLAGS = {"Recipe", "ModeRates"}  # recipe data, not parsed from a command line
# A flag name declared by more than one dataclass, and why it is not one shared field.
DECLARED_TWICE = {
    # compare and the demo launch training runs: these set what each run is given, defaulting to the
    # recipe's value (experiments/recipe.py) or to the driver's own (compare checkpoints every quarter so that
    # a killed comparison resumes), not to train.py's own default.
    **dict.fromkeys(("benchmarks", "conv_template", "data_path", "eval_batch_size", "eval_data", "gradient_accumulation_steps",
                     "log_grad_stats", "logging_steps", "lora_alpha", "lora_r", "model_max_length",
                     "per_device_train_batch_size", "pretrain_mm_mlp_adapter", "save_steps", "seed", "stage1_lr",
                     "stage1_steps", "stage2_steps", "tune_mode", "warmup_ratio"),
                    "a driver's setting for the runs it launches"),
    # One name, two meanings, both flags users already pass.
    "batch_size": "eval: questions per generate call; analyze: records per forward; demo: training batch",
    "data": "eval: a benchmark folder; analyze: a records file",
    "format": "inspect-data: the output's; export: the exported model's",
    "out": "toy: the world's folder; demo: the demo's",
    "num_samples": "inspect-data: records shown (3); analyze: records averaged over (64)",
    "max_new_tokens": "eval: longest answer; compare: the final evaluation's (0: the recipe's); export: probe tokens",
    "dtype": "eval: the compute dtype; merge/export: the dtype written",
    "json": "eval, score: the whole result instead of the one-line headline; analyze: JSON instead of tables",
    "num_gpus": "compare: GPUs per run (0: all); describe: GPUs the estimate shards over",
    "benchmark": "eval also answers generic question files, which score cannot score",
    # Defaults that follow from what the command does.
    "device": "eval generates (auto: the GPU when there is one); merge, export, analyze load once (cpu)",
    "bf16": "describe estimates the memory of the 7B recipe's run, which trains in bf16",
    "image_aspect_ratio": "eval: default the checkpoint manifest's; training: pad",
    "attn_implementation": "eval: default the loader's choice for each checkpoint kind; training: auto",
}


def _flag_classes():
    for name in FLAG_MODULES:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == name \
                    and obj.__name__ not in NOT_FLAGS:
                yield obj


def test_flag_modules_import_neither_torch_nor_transformers():
    code = ("import sys\n" + "".join(f"import {name}\n" for name in FLAG_MODULES)
            + "print(sorted(m for m in ('torch', 'transformers', 'PIL', 'deepspeed') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_each_flag_is_declared_once_unless_its_meaning_differs():
    declared = {}
    for flags_class in _flag_classes():
        assert all(spec.kw_only for spec in dataclasses.fields(flags_class)), f"{flags_class.__name__} is positional"
        flags = {spec.name for spec in dataclasses.fields(flags_class)}  # not ClassVars such as required_flags
        for name in flags_class.__dict__.get("__annotations__", {}):
            if name in flags:
                declared.setdefault(name, []).append(flags_class.__name__)
    twice = {name: owners for name, owners in declared.items() if len(owners) > 1}
    assert set(twice) <= set(DECLARED_TWICE), {name: twice[name] for name in set(twice) - set(DECLARED_TWICE)}
    stale = set(DECLARED_TWICE) - set(twice)
    assert not stale, f"declared once now; drop from DECLARED_TWICE: {sorted(stale)}"


def test_shared_flags_have_one_default_wherever_they_are_composed():
    from llava_ln.commands.args import DescribeArguments, ExportArguments, InspectArguments
    from llava_ln.evaluation.args import EvalArguments
    from llava_ln.training.args import TrainingArguments

    assert {default_of(c, "seed") for c in (TrainingArguments, InspectArguments, EvalArguments)} == \
        {default_of(SeedArguments, "seed")}
    assert default_of(DescribeArguments, "gradient_checkpointing") is default_of(TrainingArguments,
                                                                                  "gradient_checkpointing") is False
    assert default_of(EvalArguments, "bits") == default_of(ExportArguments, "bits") == 16
    help_texts = {c.__dataclass_fields__["overwrite"].metadata["help"] for c in (EvalArguments, ExportArguments)}
    assert help_texts == {ReplaceOutputArguments.__dataclass_fields__["overwrite"].metadata["help"]}


def test_each_dataclass_checks_its_own_values_in_one_line():
    from llava_ln.commands.args import ExportArguments, InspectArguments, MergeArguments
    from llava_ln.evaluation.args import EvalArguments

    with pytest.raises(LlavaLnError, match="--format 'xml' is not one of text, json"):
        InspectArguments(format="xml")
    with pytest.raises(LlavaLnError, match="--checkpoint is required"):
        MergeArguments(output_dir="out")
    with pytest.raises(LlavaLnError, match="--bits applies to --format hf only"):
        ExportArguments(checkpoint="run", format="llava", bits=4)
    with pytest.raises(LlavaLnError, match="llava-ln eval: --output_dir is required"):
        EvalArguments(benchmark="pope", model_path="run")
    assert EvalArguments(benchmark="flickr30k", model_path="run", output_dir="o").max_new_tokens == 128
