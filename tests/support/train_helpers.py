"""Shared material for the training tests: a tiny world on disk, flag lists, logs, tensors.

Built once per session (module-level cache) and shared by every test_train_* file, so the
tiny backbones, the data and the stage-1 run exist once.
"""
import contextlib
import io
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from llava_ln.model.parts import unwrap

_CACHE = {}
CAPTIONS = ["a red circle is left of a blue square", "there are two green triangles and one yellow circle",
            "the answer is yes", "no there is not"]
QUESTIONS = [("how many shapes are in the image ?", "there are two green triangles"),
             ("describe the scene in detail please", "a red circle is left of a blue square"),
             ("is there a circle ?", "the answer is yes"), ("is there a square ?", "no there is not")]


def _write_data(root: str) -> dict:
    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    for index in range(8):
        pixels = (rng.random((28, 28, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(os.path.join(root, f"img{index}.png"))
    captions = [{"id": f"cap{i}", "image": f"img{i}.png", "conversations": [
        {"from": "human", "value": "<image>\nwrite a short caption"}, {"from": "gpt", "value": CAPTIONS[i % 4]}]}
        for i in range(4)]
    instruct = []
    for i in range(8):
        question, answer = QUESTIONS[i % 4]
        record = {"id": f"ins{i}", "conversations": [
            {"from": "human", "value": ("<image>\n" if i % 4 != 3 else "") + question},
            {"from": "gpt", "value": answer}]}
        if i % 4 != 3:  # two of eight are text-only, so batches mix modalities
            record["image"] = f"img{i}.png"
        instruct.append(record)
    paths = {"captions": os.path.join(root, "captions.json"), "instruct": os.path.join(root, "instruct.json")}
    for key, records in (("captions", captions), ("instruct", instruct)):
        with open(paths[key], "w", encoding="utf-8") as handle:
            json.dump(records, handle)
    return paths


def train_world(tmp_path_factory, tiny_llm, tiny_vision) -> dict:
    if "world" not in _CACHE:
        root = str(tmp_path_factory.mktemp("train_world"))
        _CACHE["world"] = {"llm": tiny_llm("llama"), "vision": tiny_vision("clip"), "root": root,
                           **_write_data(os.path.join(root, "data"))}
    return _CACHE["world"]


def flags(world: dict, output_dir: str, stage: int = 2, **overrides) -> list[str]:
    """A short CPU run's flags; overrides as flag=value (None drops a flag).

    Stage 1 takes all 4 captions per step, so its logged losses are all on the same data.
    """
    values = {
        "model_name_or_path": world["llm"], "vision_tower": world["vision"],
        "data_path": world["captions"] if stage == 1 else world["instruct"],
        "conv_template": "plain" if stage == 1 else "vicuna_v1",
        "tune_mode": "connector" if stage == 1 else "ln",
        "output_dir": output_dir, "per_device_train_batch_size": 4 if stage == 1 else 2, "max_steps": 4, "save_steps": 2,
        "learning_rate": 1e-2, "lr_scheduler_type": "constant", "logging_steps": 1, "seed": 7,
        "disable_tqdm": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
    }
    values.update(overrides)
    argv = []
    for key, value in values.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def stage1_run(world: dict) -> str:
    """The stage-1 (connector, plain template) run folder, trained once per session."""
    if "stage1" not in _CACHE:
        from llava_ln.cli import main

        output = os.path.join(world["root"], "stage1")
        printed = io.StringIO()
        # Through the console entry point, with TensorBoard on: `llava-ln train ...`.
        with contextlib.redirect_stdout(printed):
            assert main(["train", *flags(world, output, stage=1, report_to="tensorboard")]) == 0
        _CACHE["stage1"], _CACHE["stage1_stdout"] = output, printed.getvalue()
    return _CACHE["stage1"]


def stage1_stdout(world: dict) -> str:
    """What the stage-1 run of stage1_run printed on stdout."""
    stage1_run(world)
    return _CACHE["stage1_stdout"]


def read_log(directory: str) -> dict:
    """step -> last logged record for that step (a resumed run appends)."""
    records = {}
    with open(os.path.join(directory, "log.jsonl"), encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if "event" not in record:  # a resume's line, not a metric
                records[record["step"]] = record
    return records


def trained(directory: str) -> dict:
    return load_file(os.path.join(directory, "trained.safetensors"))


def expected_trainable(world: dict, tune_mode: str) -> set[str]:
    """Trainable tensor names from the tuning module itself, on a meta model (LoRA factors included)."""
    from llava_ln.model.args import ModelArguments
    from llava_ln.model.backbones import load_tokenizer
    from llava_ln.model.builder import build_mllm
    from llava_ln.tuning.args import TuningArguments
    from llava_ln.tuning.plan import apply_tune_mode

    model, _ = build_mllm(ModelArguments(model_name_or_path=world["llm"], vision_tower=world["vision"]),
                          load_tokenizer(world["llm"]), on_meta=True)
    model, _ = apply_tune_mode(model, TuningArguments(tune_mode=tune_mode, lora_r=4, lora_alpha=8))
    return {n for n, p in unwrap(model).named_parameters() if p.requires_grad}


def batch_loss(model, world: dict, data_key: str = "instruct", template: str = "vicuna_v1") -> float:
    """Mean loss of the model over the whole data file in one batch (eval mode: no dropout)."""
    from llava_ln.data import DataArguments, DataCollator, build_train_dataset, load_data_components
    from llava_ln.model.args import ModelArguments
    from llava_ln.model.forward import multimodal_forward

    data_args = DataArguments(data_path=world[data_key], conv_template=template)
    parts = load_data_components(ModelArguments(model_name_or_path=world["llm"], vision_tower=world["vision"]),
                                 data_args)
    dataset = build_train_dataset(data_args, parts.tokenizer, parts.image_processor, parts.template,
                                  parts.image_token_id, parts.num_image_tokens, seed=0)
    batch = DataCollator(parts.tokenizer)([dataset[i] for i in range(len(dataset))])
    model.eval()
    with torch.no_grad():
        return float(multimodal_forward(model, **batch).loss)
