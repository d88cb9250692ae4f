"""The recipes (experiments/recipe.py) are the one home of their numbers; the prose copies that must stay agree.

scripts/finetune.sh's case table and scripts/pretrain.sh's defaults are checked by running them
(tests/training/test_scripts.py); here: the rate tables in docs/training.md and finetune.sh's header,
the toy rates docs/paper_claims.md and scripts/reproduce_claims.sh name, and what the demo and compare
derive from the recipes.
"""
import os
import re

import pytest

from llava_ln.experiments.args import CompareArguments
from llava_ln.experiments.compare_settings import resolve
from llava_ln.experiments.recipe import LLAVA_15, TOY, DemoRecipe, Recipe, headline_rate, stage2_argv
from llava_ln.toy import layout
from llava_ln.tuning.modes import TUNE_MODES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RATE_NAMES = {"LR": "learning_rate", "NORM_LR": "norm_lr", "MM_PROJECTOR_LR": "mm_projector_lr"}


def _sci(rate: float) -> str:
    """1e-2, as the prose writes rates."""
    return f"{rate:.0e}".replace("e-0", "e-")


def _read(path: str) -> str:
    return open(os.path.join(REPO, path), encoding="utf-8").read()


def _rate_rows(lines: list) -> dict:
    """{mode: {rate flag: value}} from lines that name modes in backticks or bare, then LR=... / NORM_LR x."""
    table = {}
    for line in lines:
        modes = [m for m in re.findall(r"\b(\w+)\b", line.split("LR")[0]) if m in TUNE_MODES]
        rates = {RATE_NAMES[name]: float(value)
                 for name, value in re.findall(r"\b(MM_PROJECTOR_LR|NORM_LR|LR)[= ]([0-9.e-]+)", line)}
        for mode in modes:
            table[mode] = rates
    return table


def _check_named_rates(table: dict, where: str) -> None:
    assert set(table) == set(TUNE_MODES), where
    for mode, named in table.items():
        recipe = LLAVA_15.rates[mode].flags()
        assert named == {flag: recipe[flag] for flag in named}, (where, mode)
        # Every rate beyond the base rate is named: a reader setting up a run needs them.
        assert set(recipe) - {"learning_rate"} <= set(named), (where, mode)


def test_docs_training_rate_table_is_the_llava_recipe():
    doc = _read("docs/training.md")
    table = doc[doc.index("| `TUNE_MODE` | trains | default rates |"):]
    _check_named_rates(_rate_rows(table[:table.index("\n\n")].splitlines()[2:]), "docs/training.md")


def test_finetune_script_header_is_the_llava_recipe():
    script = _read("scripts/finetune.sh")
    header = script[script.index("per-mode learning rates:"):script.index("# Norm-only tuning")]
    _check_named_rates(_rate_rows(header.splitlines()[1:]), "scripts/finetune.sh header")


def test_toy_rates_quoted_in_paper_claims_and_the_claims_script():
    ln, full = TOY.rates["ln"].flags()[headline_rate("ln")], TOY.rates["full"].flags()[headline_rate("full")]
    assert f"ln's norm rate {_sci(ln)}, full's rate {_sci(full)}" in _read("docs/paper_claims.md")
    variants = _read("scripts/reproduce_claims.sh")
    for name, rate in (("ln", ln), ("full", full)):
        assert f"{name}_lr_low={name} lr={_sci(rate / 10)};" in variants
        assert f"{name}_lr_high={name} lr={_sci(rate * 10)}" in variants


def test_recipes_cover_every_mode():
    with pytest.raises(ValueError, match="rates for"):
        Recipe(**{**{f: getattr(TOY, f) for f in TOY.__dataclass_fields__}, "rates": {"ln": TOY.rates["ln"]}})


def test_demo_takes_the_toy_recipe_and_its_mode_rates(tmp_path):
    argv = stage2_argv("/w", DemoRecipe(), "/out", "/stage1")

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert (value("--seed"), value("--model_max_length")) == (str(TOY.seed), str(TOY.model_max_length))
    assert {k: float(value(f"--{k}")) for k in TOY.rates["ln"].flags()} == TOY.rates["ln"].flags()
    lora = stage2_argv("/w", DemoRecipe(tune_mode="lora", stage2_lr=0.5), "/out", "/stage1")
    assert "--norm_lr" not in lora and lora[lora.index("--learning_rate") + 1] == "0.5"
    assert lora[lora.index("--mm_projector_lr") + 1] == str(TOY.rates["lora"].mm_projector_lr)


def test_compare_defaults_are_the_recipes(tmp_path):
    world = tmp_path / "world"
    world.mkdir()
    (world / layout.WORLD_MANIFEST).write_text("{}")
    toy = resolve(CompareArguments(output_dir=str(tmp_path / "out"), world=str(world)))
    assert (toy.recipe, toy.seed, toy.batch_size, toy.lora, toy.eval_batch_size) == (
        TOY, TOY.seed, TOY.per_device_train_batch_size, (TOY.lora_r, TOY.lora_alpha), TOY.eval_batch_size)
    assert toy.max_new_tokens == TOY.answer_lengths.per_benchmark(toy.benchmarks)
    llava = resolve(CompareArguments(output_dir="out", model_name_or_path="m", vision_tower="v", data_path="d",
                                     eval_data="e", pretrain_mm_mlp_adapter="a", seed=7))
    assert (llava.recipe, llava.seed, llava.stage2_steps, llava.warmup_ratio) == (LLAVA_15, 7, None,
                                                                                 LLAVA_15.warmup_ratio)


def test_llava_ln_defaults_are_the_llava_recipe_where_they_coincide():
    """Training's and eval's own defaults are LLaVA-1.5-7B's values; the recipe must not drift from them."""
    from llava_ln.data.args import DataArguments
    from llava_ln.evaluation.args import EvalArguments
    from llava_ln.training.args import TrainingArguments
    from llava_ln.tuning.args import TuningArguments

    tuning, data, train = TuningArguments(), DataArguments(), TrainingArguments()
    assert (tuning.lora_r, tuning.lora_alpha) == (LLAVA_15.lora_r, LLAVA_15.lora_alpha)
    assert (data.model_max_length, train.seed) == (LLAVA_15.model_max_length, LLAVA_15.seed)
    assert train.learning_rate == LLAVA_15.rates["full"].learning_rate
    assert train.eval_batch_size == LLAVA_15.eval_batch_size
    assert EvalArguments(benchmark="vqav2", model_path="m", output_dir="o").batch_size == LLAVA_15.eval_batch_size
