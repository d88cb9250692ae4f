"""What compare trains (modes, rates, variants), the entry it computes from a run folder, and the claims judge."""
import json

import pytest

from llava_ln.core.errors import LlavaLnError
from llava_ln.experiments.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Judge
from llava_ln.experiments.compare_settings import resolve_data
from llava_ln.experiments.entries import markdown_table, run_entry
from llava_ln.experiments.recipe import LLAVA_15, TOY
from llava_ln.experiments.runs import mode_runs, parse_rates, parse_variants, variant_runs


def test_modes_get_their_recipe_rates_and_lr_overrides_the_headline_rate():
    runs = {r.name: r for r in mode_runs(["ln", "lora", "full"], LLAVA_15, overrides=parse_rates("ln=5e-2,lora=1e-4"))}
    assert runs["ln"].rates == {"learning_rate": 2e-5, "norm_lr": 5e-2}  # the norm rate is ln's headline rate
    assert runs["lora"].rates == {"learning_rate": 1e-4, "mm_projector_lr": 2e-5}
    assert runs["full"].rates == LLAVA_15.rates["full"].flags() == {"learning_rate": 2e-5}
    assert runs["ln"].train_flags() == ["--tune_mode", "ln", "--learning_rate", "2e-05", "--norm_lr", "0.05"]
    with pytest.raises(LlavaLnError, match="MODE=RATE"):
        parse_rates("nope=1")
    with pytest.raises(LlavaLnError, match="twice"):
        mode_runs(["ln", "ln"], TOY, overrides={})


def test_variants_inline_and_from_yaml(tmp_path):
    inline = parse_variants("conv=ln data=conversation:300 steps=40; fast=ln lr=1e-1 tune_embeddings=false")
    yaml_file = tmp_path / "v.yaml"
    yaml_file.write_text("conv:\n  mode: ln\n  data: conversation:300\n  steps: 40\n"
                         "fast:\n  mode: ln\n  lr: 0.1\n  tune_embeddings: 'false'\n")
    for spec in (inline, parse_variants(str(yaml_file))):
        runs = {r.name: r for r in variant_runs(spec, TOY, overrides={}, taken={"ln"})}
        assert runs["conv"].data == "conversation:300" and runs["conv"].steps == 40
        assert runs["fast"].rates["norm_lr"] == pytest.approx(0.1) and runs["fast"].variant_of == "ln"
        assert runs["fast"].train_flags()[-2:] == ["--tune_embeddings", "false"]
    with pytest.raises(LlavaLnError, match="must be new"):
        variant_runs({"ln": {"mode": "ln"}}, TOY, overrides={}, taken={"ln"})
    with pytest.raises(LlavaLnError, match="NAME=MODE"):
        parse_variants("just_a_name")


def test_a_variant_can_tune_the_vision_tower_at_its_own_rate():
    spec = parse_variants("tower_ln=ln vision_tune_mode=ln mm_vision_tower_lr=1e-3; tower_full=ln vision_tune_mode=full")
    runs = {r.name: r for r in variant_runs(spec, TOY, overrides={}, taken={"ln"})}
    assert runs["tower_ln"].rates["mm_vision_tower_lr"] == pytest.approx(1e-3)
    assert runs["tower_ln"].train_flags()[-2:] == ["--vision_tune_mode", "ln"]
    assert "--mm_vision_tower_lr" in runs["tower_ln"].train_flags() and runs["tower_full"].variant_of == "ln"
    with pytest.raises(LlavaLnError, match="vision_tune_mode 'norms' is not one of frozen, ln, lora, full"):
        variant_runs(parse_variants("bad=ln vision_tune_mode=norms"), TOY, overrides={}, taken=set())


def test_toy_data_mixes_become_files_and_other_specs_pass_through():
    assert resolve_data("conversation,detail:30", "/w") == "/w/data/instruct_conversation.json,/w/data/instruct_detail.json:30"
    assert resolve_data("/data/mix665k.json:100", "/w") == "/data/mix665k.json:100"
    assert resolve_data("conversation", None) == "conversation"


def _run_folder(tmp_path, records):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trainable_parameters.txt").write_text(
        "group  total  trainable\nconnector  10  10\nall                  1,000         100  (10.0000% trainable)\n")
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(run)


def test_entry_is_computed_from_the_run_folder(tmp_path):
    records = [
        {"step": 10, "loss": 2.0, "tokens": 1000.0, "tokens_per_s": 100.0, "peak_memory_gib": 1.5},
        {"step": 10, "eval": {"pope": 50.0}, "seconds": 99.0},
        {"step": 20, "loss": 1.5, "tokens": 1000.0, "tokens_per_s": 50.0, "peak_memory_gib": 1.25},
        {"step": 20, "loss": 1.0, "tokens": 1000.0, "tokens_per_s": 200.0, "peak_memory_gib": 1.75},  # resumed
    ]
    raw = {"vqav2": {"overall": 60.0}, "pope": {"mean_f1": 0.8},
           "mme": {"perception": 300.0, "perception_subtasks": ["existence", "count", "position", "color"],
                   "subtasks": {"existence": 100.0, "count": 100.0, "position": 50.0, "color": 50.0}}}
    entry = run_entry(_run_folder(tmp_path, records), raw)
    assert entry["trainable"] == 100 and entry["trainable_pct"] == 10.0
    assert entry["scores"] == {"vqav2": 60.0, "pope": 80.0, "mme": 300.0}
    assert entry["average"] == pytest.approx((60 + 80 + 100 * 300 / 800) / 3, abs=0.01)  # MME over 4 x 200
    # Loop time: 1000/100 + 1000/200 (step 20's second line replaces its first); the eval record is not training.
    assert entry["wall_s"] == 15.0 and entry["tokens_per_s"] == pytest.approx(2000 / 15, abs=0.1)
    assert entry["peak_memory_gib"] == 1.75 and entry["final_loss"] == 1.0
    table = markdown_table({"ln": {**entry, "mode": "ln"}}, {"device": "cpu"})
    assert "| ln | ln | 60.00 | 80.00 | 300.00 |" in table and "peak RSS GiB" in table


def _comparison(averages: dict, **extra) -> dict:
    return {"modes": {name: {"average": value, "trainable": 1, "trainable_pct": 1.0, "peak_memory_gib": 1.0,
                             **extra.get(name, {})} for name, value in averages.items()}}


def test_claims_judge_uses_the_seed_margin():
    judge = Judge(_comparison({"ln": 60.0, "ln_seed1": 58.0, "full": 57.0, "full_seed1": 57.0, "lora": 50.0,
                               "ln_simple": 53.0}), None)
    assert judge.margin == pytest.approx(2 * (2.0 ** 2 / 2) ** 0.5)  # 2 x RMS of the seed differences (2 and 0)
    judge = Judge(_comparison({"ln": 60.0, "ln_seed1": 58.0, "full": 57.0, "lora": 50.0, "ln_simple": 53.0}), None)
    assert judge.margin == 4.0  # 2 x |60 - 58|
    assert judge.c1()[0] == REPRODUCED  # 60 >= 57 - 4 and 60 > 50 + 4
    assert judge.c2()[0] == INCONCLUSIVE  # 53 - 50 = 3: within the margin
    assert judge.c4()[0] == "not run"
    judge = Judge(_comparison({"ln": 60.0, "full": 70.0, "lora": 59.0}), None)
    assert judge.margin == 2.0 and judge.c1()[0] == NOT_REPRODUCED  # full clearly better


def test_claims_c3_compares_counts_and_memory():
    comparison = _comparison({"ln": 1.0, "lora": 1.0}, ln={"trainable": 10, "peak_memory_gib": 1.0},
                             lora={"trainable": 20, "peak_memory_gib": 1.2})
    assert Judge(comparison, None).c3()[0] == REPRODUCED
    comparison["modes"]["ln"]["trainable"] = 30
    assert Judge(comparison, None).c3()[0] == NOT_REPRODUCED


@pytest.mark.parametrize("name,text,message", [
    ("aliases.yaml", "a: &x [1, 2]\nb: {mode: ln, lora_r: *x}\n", "YAML aliases"),
    ("deep.yaml", "v: " + "[" * 200 + "]" * 200 + "\n", "nested more than 64 levels deep"),
    ("broken.yaml", "v: {mode: ln\n", "is not valid YAML"),
    ("deep.json", '{"v": ' + "[" * 200 + "]" * 200 + "}", "nested more than 64 levels deep"),
    ("number.json", '{"v": {"mode": "ln", "lr": ' + "9" * 5000 + "}}", "number"),
])
def test_a_hostile_variants_file_is_one_line_naming_it(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LlavaLnError, match=message) as err:
        parse_variants(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("variant,message", [
    ("late=lora lora_r=0", "compare run 'late': --lora_r 0: must be >= 1"),
    ("late=ln no_such_flag=1", "compare run 'late': llava-ln train: unknown flag(s): --no_such_flag 1"),
    ("late=ln gradient_checkpointing_ratio=nan", "compare run 'late': --gradient_checkpointing_ratio nan"),
    ("late=ln vision_tune_last_layers=1", "compare run 'late': --vision_tune_last_layers 1 needs a --vision_tune_mode"),
])
def test_compare_checks_every_run_s_training_flags_before_anything_trains(tmp_path, capsys, variant, message):
    from llava_ln.cli import main
    from llava_ln.toy import layout

    world = tmp_path / "world"
    world.mkdir()
    (world / layout.WORLD_MANIFEST).write_text("{}")
    out = tmp_path / "compare"
    assert main(["compare", "--world", str(world), "--modes", "ln", "--variants", variant, "--data_path",
                 str(tmp_path / "data.json"), "--output_dir", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "stage1").exists() and not (out / "ln").exists()
