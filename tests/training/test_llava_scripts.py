"""LLaVA v1.5's own launch scripts (pretrain, finetune, finetune_lora, finetune_task_lora) run llava_ln/train.py.

The scripts' text is LLaVA's, verbatim (tests/support/llava_v15_scripts.py). The only edits are
paths (models, data, images, DeepSpeed configs, output folders: the toy world's), plus
--max_steps 2 to keep the toy run short. `--report_to wandb` stays: a stand-in wandb package
records what the run reports. The chain is LLaVA's: pretrain -> finetune (full) and finetune_lora
from its projector; finetune_task_lora starts from a LLaVA-1.5 checkpoint, here the finetune
run exported to LLaVA's own layout (`llava-ln export --format llava`), as liuhaotian/llava-v1.5-13b is.
"""
import json
import os
import shlex
import subprocess
import sys

import pytest
from eval_helpers import single_thread, toy_assets
from llava_v15_scripts import SCRIPTS

from llava_ln.cli import main

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUPPORT = os.path.join(REPO, "tests", "support")
PATH_FLAGS = ("deepspeed", "model_name_or_path", "data_path", "image_folder", "vision_tower", "pretrain_mm_mlp_adapter",
              "output_dir")


def port(script: str, paths: dict) -> list:
    """The script's train.py arguments with every path flag's value replaced (all must be known), + --max_steps 2."""
    words = shlex.split(script.replace("\\\n", " "))
    assert words[:2] == ["deepspeed", "llava/train/train_mem.py"]
    argv = words[2:]
    for index, word in enumerate(argv[:-1]):
        if word.startswith("--") and word[2:] in PATH_FLAGS:
            assert argv[index + 1] in paths, f"no path edit for {word} {argv[index + 1]}"
            argv[index + 1] = paths[argv[index + 1]]
    return argv + ["--max_steps", "2"]


def run_in_fresh_process(runs: list, workdir: str, wandb_log: str) -> None:
    """DeepSpeed keeps its process group for the life of a process: these runs get their own (run_trainings.py)."""
    spec = os.path.join(workdir, f"runs{len(os.listdir(workdir))}.json")
    with open(spec, "w", encoding="utf-8") as handle:
        json.dump(runs, handle)
    env = dict(os.environ, WANDB_STUB_LOG=wandb_log,
               PYTHONPATH=os.pathsep.join([os.path.join(SUPPORT, "wandb_stub"), REPO, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, os.path.join(SUPPORT, "run_trainings.py"), spec], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    toy = toy_assets(tmp_path_factory)
    world, root = toy["world"], str(tmp_path_factory.mktemp("llava_scripts"))
    out = {name: os.path.join(root, name) for name in SCRIPTS}
    exported = os.path.join(root, "llava-v1.5-toy")  # LLaVA's layout, as liuhaotian/llava-v1.5-13b
    paths = {
        "./scripts/zero2.json": os.path.join(REPO, "zero_configs", "zero2.json"),
        "./scripts/zero3.json": os.path.join(REPO, "zero_configs", "zero3.json"),
        "lmsys/vicuna-13b-v1.5": os.path.join(world, "llm"),
        "liuhaotian/llava-v1.5-13b": exported,
        "openai/clip-vit-large-patch14-336": os.path.join(world, "vision"),
        "./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json": os.path.join(world, "data", "pretrain.json"),
        "./playground/data/LLaVA-Pretrain/images": os.path.join(world, "images"),
        "./playground/data/llava_v1_5_mix665k.json": os.path.join(world, "data", "instruct_conversation.json"),
        "./playground/data": os.path.join(world, "images"),
        "./checkpoints/llava-v1.5-13b-pretrain/mm_projector.bin": out["pretrain"],
        "./checkpoints/llava-v1.5-13b-pretrain": out["pretrain"],
        "./checkpoints/llava-v1.5-13b": out["finetune"],
        "./checkpoints/llava-v1.5-13b-lora": out["finetune_lora"],
        "./checkpoints/llava-v1.5-13b-task-lora": out["finetune_task_lora"],
    }
    wandb_log = os.path.join(root, "wandb_calls.jsonl")
    work = str(tmp_path_factory.mktemp("llava_scripts_specs"))
    run_in_fresh_process([port(SCRIPTS[name], paths) for name in ("pretrain", "finetune", "finetune_lora")], work,
                         wandb_log)
    with single_thread():
        assert main(["export", "--checkpoint", out["finetune"], "--format", "llava", "--output_dir", exported]) == 0
    run_in_fresh_process([port(SCRIPTS["finetune_task_lora"], paths)], work, wandb_log)
    return {**out, "exported": exported, "wandb": wandb_log, "world": world}


def manifest(path: str) -> dict:
    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def run_config(path: str) -> dict:
    with open(os.path.join(path, "run_config.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_pretrain_sh_trains_the_connector_with_the_plain_template(runs):
    m = manifest(runs["pretrain"])
    assert (m["tune_mode"], m["stage"], m["conv_template"], m["mm_projector_type"]) == ("connector", 1, "plain",
                                                                                        "mlp2x_gelu")
    config = run_config(runs["pretrain"])
    assert config["resolved"]["total_steps"] == 2 and config["training"]["deepspeed"].endswith("zero2.json")
    given = {entry["given"] for entry in config["llava_flags"]["mapped"]}
    assert {"--version plain", "--tune_mm_mlp_adapter True", "--mm_use_im_start_end False",
            "--per_device_eval_batch_size 4"} <= given
    # pretrain.sh gives no --image_aspect_ratio: LLaVA's default (square) is not llava-ln's (pad), and it says so.
    assert any(line.startswith("--image_aspect_ratio not given") for line in config["llava_flags"]["warnings"])


def test_finetune_sh_is_full_finetuning_from_the_projector_and_says_so(runs):
    m = manifest(runs["finetune"])
    assert (m["tune_mode"], m["stage"], m["conv_template"], m["image_aspect_ratio"]) == ("full", 2, "vicuna_v1", "pad")
    assert m["pretrain_mm_mlp_adapter"] == runs["pretrain"]
    assert any("--tune_mode full" in line for line in run_config(runs["finetune"])["llava_flags"]["warnings"])


def test_finetune_lora_sh_trains_lora_r128_with_its_projector_rate(runs):
    m = manifest(runs["finetune_lora"])
    assert m["tune_mode"] == "lora" and m["lora"]["r"] == 128 and m["lora"]["alpha"] == 256
    with open(os.path.join(runs["finetune_lora"], "optimizer_groups.json"), encoding="utf-8") as handle:
        rates = {group["name"]: group["lr"] for group in json.load(handle)}
    assert rates["connector_decay"] == 2e-5 and rates["other_decay"] == 2e-4


def test_finetune_task_lora_sh_starts_from_a_llava_checkpoint(runs):
    m = manifest(runs["finetune_task_lora"])
    assert m["source"] == {"kind": "llava", "path": runs["exported"]}
    assert (m["tune_mode"], m["stage"], m["pretrain_mm_mlp_adapter"]) == ("lora", 2, None)
    assert m["vision_tower"] == os.path.join(runs["world"], "vision")


def test_report_to_wandb_reports(runs):
    with open(runs["wandb"], encoding="utf-8") as handle:
        calls = [json.loads(line) for line in handle]
    inits = [c for c in calls if c["call"] == "init"]
    assert len(inits) == 4 and sum(c["call"] == "log" for c in calls) >= 8
