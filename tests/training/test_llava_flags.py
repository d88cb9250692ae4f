"""LLaVA's flags: each one maps, is a no-op, or is refused in one line; flags the chosen mode ignores warn."""
import logging
import os
import re

import pytest

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flags import parse_flags
from llava_ln.data import DataArguments
from llava_ln.model.args import ModelArguments
from llava_ln.training.args import TrainingArguments
from llava_ln.training.llava_flags import LLAVA_DEFAULTS, VERSIONS, flag_text, our_default, translate_llava_flags
from llava_ln.tuning.args import TuningArguments


def parsed(*argv):
    out, flags = translate_llava_flags(list(argv) + ["--output_dir", "x"])
    model, data, tuning, train = parse_flags(out, (ModelArguments, DataArguments, TuningArguments, TrainingArguments),
                                             prog="test")
    return model, data, tuning, train, flags


@pytest.mark.parametrize("version,template", [("v1", "vicuna_v1"), ("plain", "plain"), ("llava_llama_2", "llama_2"),
                                              ("mistral_instruct", "mistral"), ("chatml_direct", "chatml"),
                                              ("llama3", "llama_3")])
def test_version_is_the_conv_template(version, template):
    _, data, _, _, flags = parsed("--version", version, "--tune_mode", "ln")
    assert data.conv_template == template
    # An inexact equivalent says what differs; an exact one does not warn.
    assert bool(flags.warnings) is bool(VERSIONS[version][1])


@pytest.mark.parametrize("argv,mode", [
    (("--lora_enable", "True", "--lora_r", "128"), "lora"),
    (("--tune_mm_mlp_adapter", "True"), "connector"),
    (("--lora_enable", "False", "--tune_mode", "ln_simple"), "ln_simple"),
    (("--tune_mode=attn_qv",), "attn_qv"),
])
def test_mode_switches(argv, mode):
    _, _, tuning, _, flags = parsed(*argv)
    assert tuning.tune_mode == mode and not any("no --tune_mode" in w for w in flags.warnings)


def test_no_mode_at_all_means_full_finetuning_as_in_llava_and_says_so():
    _, _, tuning, _, flags = parsed("--version", "v1")
    assert tuning.tune_mode == "full"
    assert any("--tune_mode full" in w and "--tune_mode ln" in w for w in flags.warnings)
    assert {"given": "(no --tune_mode)", "becomes": "--tune_mode full",
            "note": "LLaVA trains every LLM weight unless told otherwise"} in flags.record()["mapped"]


def test_the_v15_scripts_llava_only_flags_are_accepted():
    model, data, tuning, train, flags = parsed(
        "--mm_use_im_start_end", "False", "--mm_use_im_patch_token", "False", "--per_device_eval_batch_size", "4",
        "--group_by_length", "True", "--save_strategy", "epoch", "--data_seed", "3", "--model_max_length", "512",
        "--mm_vision_select_feature", "cls_patch", "--image_aspect_ratio", "square", "--bf16", "True",
        "--freeze_mm_mlp_adapter", "True", "--optim", "adamw_torch", "--remove_unused_columns", "False",
        "--lora_bias", "none", "--mm_patch_merge_type", "flat", "--eval_strategy", "no", "--tune_mode", "ln")
    assert data.group_by_modality_length and train.save_strategy == "epoch" and train.data_seed == 3
    assert data.model_max_length == 512 and model.mm_vision_select_feature == "cls_patch" and train.bf16
    assert data.image_aspect_ratio == "square" and tuning.tune_connector is False
    given = {entry["given"].split()[0] for entry in flags.mapped}
    assert {"--mm_use_im_start_end", "--per_device_eval_batch_size", "--group_by_length", "--optim"} <= given


@pytest.mark.parametrize("argv,message", [
    (("--mm_use_im_start_end", "True"), "--mm_use_im_start_end True is not supported"),
    (("--mm_use_im_patch_token", "True"), "--mm_use_im_patch_token True is not supported"),
    (("--version", "v0"), "--version v0: .* use --conv_template"),
    (("--version", "v1", "--conv_template", "plain"), "pass one of them"),
    (("--lora_enable", "True", "--tune_mode", "ln"), "--lora_enable True means --tune_mode lora"),
    (("--lora_enable", "True", "--tune_mm_mlp_adapter", "True"), "--tune_mode connector"),
    (("--freeze_backbone", "True"), "--freeze_backbone is not supported; use --tune_mode connector"),
    (("--fsdp", "full_shard"), "use --deepspeed"),
    (("--image_aspect_ratio", "anyres"), "use pad"),
    (("--optim", "sgd"), "use adamw_torch"),
    (("--lora_bias", "all"), "use none"),
    (("--unfreeze_mm_vision_tower", "True", "--vision_tune_mode", "ln"),
     "--unfreeze_mm_vision_tower True means --vision_tune_mode full, but --vision_tune_mode ln is also given"),
])
def test_refusals_are_one_line_saying_what_to_use(argv, message):
    with pytest.raises(LlavaLnError, match=message) as err:
        translate_llava_flags(list(argv))
    assert "\n" not in str(err.value)


def test_cache_dir_points_hub_downloads_there(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", constants.HF_HUB_CACHE)
    monkeypatch.setenv("HF_HUB_CACHE", "unchanged")
    *_, flags = parsed("--cache_dir", str(tmp_path / "hub"), "--tune_mode", "ln")
    flags.apply_cache_dir()
    assert constants.HF_HUB_CACHE == os.environ["HF_HUB_CACHE"] == str(tmp_path / "hub")


def _plan(tiny_llm, tiny_vision, mode, **tuning):
    from llava_ln.model.backbones import load_tokenizer
    from llava_ln.model.builder import build_mllm
    from llava_ln.tuning.plan import apply_tune_mode

    model, _ = build_mllm(ModelArguments(model_name_or_path=tiny_llm("llama"), vision_tower=tiny_vision("clip")),
                          load_tokenizer(tiny_llm("llama")), on_meta=True)
    return apply_tune_mode(model, TuningArguments(tune_mode=mode, lora_r=4, lora_alpha=8, **tuning))[1]


@pytest.mark.parametrize("mode,argv,ignored", [
    ("ln", ("--lora_r", "8", "--lora_alpha", "16"), ["--lora_r", "--lora_alpha"]),
    ("ln_simple", ("--mm_projector_lr", "2e-5", "--norm_lr", "1e-3"), ["--mm_projector_lr"]),
    ("lora", ("--norm_lr", "1e-3", "--lora_r", "4"), ["--norm_lr"]),
    ("connector", ("--mm_projector_lr", "1e-3", "--gradient_checkpointing_ratio", "0.5"),
     ["--gradient_checkpointing_ratio"]),
    ("ln", ("--mm_vision_tower_lr", "2e-6", "--vision_lora_r", "4"), ["--vision_lora_r", "--mm_vision_tower_lr"]),
])
def test_a_flag_with_no_effect_in_the_mode_is_a_warning_naming_it(tiny_llm, tiny_vision, caplog, mode, argv, ignored):
    _, _, _, train, flags = parsed(*argv, "--tune_mode", mode)
    with caplog.at_level(logging.WARNING, logger="llava_ln.train"):
        lines = flags.warn_ineffective(_plan(tiny_llm, tiny_vision, mode), train)
    assert [line.split()[0] for line in lines] == ignored
    assert all(line in caplog.text for line in lines) and all(line in flags.record()["warnings"] for line in lines)


def test_lora_dropout_is_no_warning_when_the_tower_trains_lora(tiny_llm, tiny_vision):
    """The tower's LoRA shares --lora_dropout (its rank and alpha are its own), so only --lora_r is inert here."""
    _, _, _, train, flags = parsed("--lora_r", "8", "--lora_dropout", "0.1", "--tune_mode", "ln",
                                   "--vision_tune_mode", "lora")
    plan = _plan(tiny_llm, tiny_vision, "ln", vision_tune_mode="lora", vision_lora_r=2, vision_lora_alpha=4)
    assert [line.split()[0] for line in flags.warn_ineffective(plan, train)] == ["--lora_r"]


def test_llava_next_unfreeze_is_the_full_tower_at_its_own_rate():
    _, _, tuning, _, flags = parsed("--unfreeze_mm_vision_tower", "True", "--mm_vision_tower_lr", "2e-6",
                                    "--tune_mode", "ln")
    assert (tuning.vision_tune_mode, tuning.mm_vision_tower_lr) == ("full", 2e-6)
    assert {"given": "--unfreeze_mm_vision_tower True", "becomes": "--vision_tune_mode full", "note": ""} in flags.mapped
    _, _, tuning, _, _ = parsed("--unfreeze_mm_vision_tower", "False", "--tune_mode", "ln")
    assert tuning.vision_tune_mode == "frozen"


@pytest.mark.parametrize("parts,extra,expected", [
    ("mm_vision_tower,mm_mlp_adapter,mm_language_model", (), ("full", True, "full")),
    ("mm_mlp_adapter, mm_language_model", ("--tune_mode", "ln"), ("ln", True, "frozen")),
    ("mm_language_model,mm_vision_tower", ("--lora_enable", "True"), ("lora", False, "full")),
    ("mm_mlp_adapter", (), ("connector", True, "frozen")),
    ("mm_vision_tower", (), ("connector", False, "full")),
])
def test_llava_next_tunable_parts_become_the_modes_that_own_them(parts, extra, expected):
    _, _, tuning, _, flags = parsed("--mm_tunable_parts", parts, *extra)
    assert (tuning.tune_mode, tuning.tune_connector, tuning.vision_tune_mode) == expected
    assert not any("no --tune_mode" in w for w in flags.warnings)
    assert any(entry["given"] == f"--mm_tunable_parts {parts}" for entry in flags.mapped)


def test_tunable_parts_of_the_tower_alone_train_the_reachable_tower_and_nothing_else(tiny_llm, tiny_vision):
    _, _, tuning, _, _ = parsed("--mm_tunable_parts", "mm_vision_tower")
    plan = _plan(tiny_llm, tiny_vision, tuning.tune_mode, tune_connector=tuning.tune_connector,
                 vision_tune_mode=tuning.vision_tune_mode)
    assert plan.trainable and {plan.group_of[n] for n in plan.trainable} <= {"vision_norms", "vision_other"}


@pytest.mark.parametrize("argv,message", [
    (("--mm_tunable_parts", "mm_language_model,mm_projector"), "unknown: mm_projector"),
    (("--mm_tunable_parts", ","), "expected a comma-separated list of mm_language_model, mm_mlp_adapter"),
    (("--mm_tunable_parts", "mm_vision_resampler"), "no vision resampler"),
    (("--mm_tunable_parts", "mm_mlp_adapter", "--tune_mode", "ln"), "--tune_mode ln trains it; pass one of them"),
    (("--mm_tunable_parts", "mm_mlp_adapter", "--lora_enable", "True"), "--lora_enable True trains the LLM"),
    (("--mm_tunable_parts", "mm_language_model", "--tune_mode", "connector"), "--tune_mode connector freezes"),
    (("--mm_tunable_parts", "mm_vision_tower", "--vision_tune_mode", "ln"), "--vision_tune_mode ln is also given"),
    (("--mm_tunable_parts", "mm_mlp_adapter,mm_language_model", "--vision_tune_mode", "ln"),
     "does not list mm_vision_tower \\(the tower stays frozen\\), but --vision_tune_mode ln trains it"),
    (("--mm_tunable_parts", "mm_language_model", "--unfreeze_mm_vision_tower", "True"),
     "--unfreeze_mm_vision_tower True contradicts --mm_tunable_parts"),
    (("--mm_tunable_parts", "mm_language_model", "--tune_mm_mlp_adapter", "True"), "LLaVA-NeXT ignores the second"),
    (("--mm_tunable_parts", "mm_language_model", "--tune_connector", "true"), "--tune_connector true contradicts"),
])
def test_tunable_parts_that_contradict_or_are_unknown_are_one_line(argv, message):
    with pytest.raises(LlavaLnError, match=message) as err:
        translate_llava_flags(list(argv))
    assert "\n" not in str(err.value)


def test_tunable_parts_and_an_agreeing_unfreeze_give_one_tower_flag():
    out, _ = translate_llava_flags(["--mm_tunable_parts", "mm_vision_tower,mm_language_model",
                                    "--unfreeze_mm_vision_tower", "True"])
    assert out.count("--vision_tune_mode") == 1


def test_freezing_the_connector_keeps_it_out_of_the_trainable_set(tiny_llm, tiny_vision):
    frozen = _plan(tiny_llm, tiny_vision, "lora", tune_connector=False)
    assert not frozen.trains_connector and frozen.lora_names
    assert _plan(tiny_llm, tiny_vision, "ln_simple", tune_connector=True).trains_connector


def test_a_llava_command_line_hears_about_defaults_that_differ():
    *_, flags = parsed("--version", "v1", "--lora_enable", "True", "--learning_rate", "2e-4",
                       "--mm_projector_type", "mlp2x_gelu")
    flags.report(decided={"mm_vision_select_layer": -2})  # a multimodal checkpoint decided this one
    named = {line.split()[0] for line in flags.warnings if "not given" in line}
    assert named == {"--image_aspect_ratio", "--model_max_length", "--lr_scheduler_type", "--num_train_epochs",
                     "--lora_r", "--lora_alpha", "--loss_weighting"}
    assert any("--loss_weighting llava for LLaVA's behaviour" in line for line in flags.warnings)
    assert any("--image_aspect_ratio square for LLaVA's behaviour" in line for line in flags.warnings)
    *_, plain = parsed("--tune_mode", "ln")  # not a LLaVA command line: llava-ln's defaults are simply its own
    plain.report()
    assert not any("not given" in line for line in plain.warnings)


def test_defaults_that_differ_are_read_from_our_dataclasses_and_quoted_in_the_docs():
    ours = {name: our_default(name) for name in LLAVA_DEFAULTS}
    assert all(ours[name] != theirs for name, theirs in LLAVA_DEFAULTS.items())
    assert ours["learning_rate"] == flag_text(TrainingArguments().learning_rate) == "2e-5"
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "training.md"), encoding="utf-8").read()
    theirs_quoted, ours_quoted = doc[doc.index("Some defaults differ:"):].split("llava-ln's are ", 1)
    assert dict(re.findall(r"`--(\w+)\s+([^`]+)`", theirs_quoted)) == LLAVA_DEFAULTS
    ours_quoted = ours_quoted[:ours_quoted.index(". ")].split()
    assert " ".join(ours_quoted).split(", ") == [ours[name] for name in LLAVA_DEFAULTS]
