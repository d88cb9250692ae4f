"""DeepSpeed on CPU (gloo): per-group rates and clipping in its optimizer, and the real launcher with 2 ranks.

Single-rank checks run in one separate process (run_trainings.py) so DeepSpeed's process
group stays out of pytest's; the 2-rank runs use the `deepspeed` launcher itself, and are
compared with a one-process run that takes the same samples per step (accumulation 2).
"""
import json
import os

import pytest
import torch
from launch_helpers import PARTITIONED_LOG, deepspeed_launch, run_in_fresh_process
from train_helpers import flags, read_log, stage1_run, train_world, trained

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.checkpoint.run_folder import load_connector
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.model.parts import unwrap
from llava_ln.train import main

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {stage: os.path.join(REPO, "zero_configs", f"zero{stage}.json") for stage in (2, 3)}
CONNECTOR = "model.multi_modal_projector."
# ln trains four kinds of tensors at three rates: connector, norms, embeddings + head.
RATES = dict(learning_rate=1e-3, mm_projector_lr=0.0, norm_lr=2e-2)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def _run_in_fresh_process(runs: list[list[str]], workdir: str) -> None:
    run_in_fresh_process(runs, workdir)


def _deepspeed_launch(argv: list[str]) -> str:
    """The real launcher, 2 ranks on this CPU machine."""
    return deepspeed_launch(argv)


def _start_values(world) -> dict:
    args = ModelArguments(model_name_or_path=world["llm"], vision_tower=world["vision"])
    model, _ = build_mllm(args, load_tokenizer(world["llm"]))
    load_connector(model, stage1_run(world))
    return {n: p.detach().clone() for n, p in unwrap(model).named_parameters()}


@pytest.fixture(scope="module")
def single_rank_runs(world, tmp_path_factory):
    """Single-rank DeepSpeed runs, all in one fresh process."""
    root = str(tmp_path_factory.mktemp("ds_single"))
    stage1 = stage1_run(world)
    block = os.path.join(root, "zero2_optimizer_block.json")
    with open(CONFIGS[2], encoding="utf-8") as handle:
        config = json.load(handle)
    # DeepSpeed builds this optimizer itself (torch's AdamW on CPU) from our parameter groups.
    config["optimizer"] = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                       "weight_decay": "auto", "torch_adam": True}}
    with open(block, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    configs = {"zero2": CONFIGS[2], "zero3": CONFIGS[3], "zero2_optimizer_block": block}
    runs, outputs = [], {}
    for name, config_path in configs.items():
        common = dict(deepspeed=config_path, tune_mode="ln", pretrain_mm_mlp_adapter=stage1)
        outputs[("rates", name)] = os.path.join(root, f"rates_{name}")
        runs.append(flags(world, outputs[("rates", name)], max_steps=2, save_strategy="no", **RATES, **common))
        if name == "zero2_optimizer_block":
            continue
        for clip in (1e-6, 0.0):  # Adam's eps 1e-3 dwarfs gradients clipped to a norm of 1e-6
            outputs[("clip", name, clip)] = os.path.join(root, f"clip{clip}_{name}")
            runs.append(flags(world, outputs[("clip", name, clip)], max_steps=1, save_strategy="no", learning_rate=1e-2,
                              adam_epsilon=1e-3, max_grad_norm=clip, **common))
    _run_in_fresh_process(runs, root)
    return outputs


@pytest.mark.parametrize("config", ["zero2", "zero3", "zero2_optimizer_block"])
def test_per_group_learning_rates_reach_the_deepspeed_optimizer(world, single_rank_runs, config):
    out = single_rank_runs[("rates", config)]
    with open(os.path.join(out, "optimizer_groups.json"), encoding="utf-8") as handle:
        groups = json.load(handle)  # read back from the engine's optimizer after deepspeed.initialize
    rates = {g["name"]: g["lr"] for g in groups}
    assert rates == {"connector_decay": 0.0, "connector_no_decay": 0.0, "norms_no_decay": 2e-2,
                     "other_decay": 1e-3}
    assert all(g["weight_decay"] == 0.0 for g in groups if "no_decay" in g["name"])
    # And they act: a zero rate leaves the connector exactly as loaded; the norms move.
    start, after = _start_values(world), trained(out)
    connector = [n for n in after if n.startswith(CONNECTOR)]
    norms = [n for n in after if "layernorm" in n or n.endswith("language_model.norm.weight")]
    assert connector and norms
    assert all(torch.equal(after[n], start[n]) for n in connector)
    assert all(not torch.equal(after[n], start[n]) for n in norms)


def test_deepspeed_on_a_cpu_compiles_nothing(single_rank_runs):
    """Its shared-memory op serves inference only; building it cost a minute and could leave a stale lock."""
    extensions = os.environ["TORCH_EXTENSIONS_DIR"]
    built = os.listdir(extensions) if os.path.isdir(extensions) else []
    assert built == [], f"DeepSpeed compiled {built} under {extensions}"


@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_gradient_clipping_is_applied_under_deepspeed(world, single_rank_runs, config):
    start = _start_values(world)
    moved = {}
    for clip in (1e-6, 0.0):
        out = single_rank_runs[("clip", config, clip)]
        after = trained(out)
        moved[clip] = max(float((after[n] - start[n]).abs().max()) for n in after)
        assert read_log(out)[1]["grad_norm"] > 1e-3  # the pre-clip norm: far above the threshold
    # One Adam step moves a weight by lr * g / (|g| + eps): ~lr unclipped, <= lr * 1e-6 / 1e-3 clipped.
    assert moved[0.0] > 1e-3
    assert moved[1e-6] < 2e-5


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """One process, accumulation 2: the samples two ranks see per step, in the same order."""
    root = str(tmp_path_factory.mktemp("ds_reference"))
    stage1 = stage1_run(world)
    outputs = {}
    for mode in ("ln", "lora"):
        outputs[mode] = os.path.join(root, mode)
        assert main(flags(world, outputs[mode], tune_mode=mode, pretrain_mm_mlp_adapter=stage1,
                          gradient_accumulation_steps=2, **_mode_rates(mode))) == 0
    return outputs


def _mode_rates(mode: str) -> dict:
    """The LLM mode's flags, with a vision tower that trains too: the whole tower beside ln, tower LoRA beside lora."""
    if mode == "ln":
        return {"learning_rate": 1e-3, "norm_lr": 2e-2, "vision_tune_mode": "full", "mm_vision_tower_lr": 1e-3}
    # Modality-pure batches: in some step one rank holds a text-only batch while the other holds images,
    # the case where ZeRO-3 hangs unless every rank runs the vision tower (whose LoRA then gets no gradient there).
    return {"learning_rate": 1e-2, "group_by_modality_length": True, "vision_tune_mode": "lora", "vision_lora_r": 2,
            "vision_lora_alpha": 4}


def _assert_close_runs(run: str, ref: str, steps=(1, 2, 3, 4), atol: float = 2e-5) -> None:
    run_log, ref_log = read_log(run), read_log(ref)
    for step in steps:
        assert run_log[step]["loss"] == pytest.approx(ref_log[step]["loss"], rel=1e-4), step
    got, want = trained(run), trained(ref)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=atol, rtol=1e-4, msg=name)


def _assert_some_step_mixes_text_only_and_image_ranks(world) -> None:
    from llava_ln.data import DataArguments, build_train_dataset, build_train_sampler, load_data_components
    from llava_ln.training.data_order import DataOrder

    data_args = DataArguments(data_path=world["instruct"], conv_template="vicuna_v1", group_by_modality_length=True)
    parts = load_data_components(ModelArguments(model_name_or_path=world["llm"], vision_tower=world["vision"]),
                                 data_args)
    dataset = build_train_dataset(data_args, parts.tokenizer, parts.image_processor, parts.template,
                                  parts.image_token_id, parts.num_image_tokens, seed=7)
    order = DataOrder(dataset_size=len(dataset), batch_size=2, world_size=2, accumulation=1, seed=7,
                      grouped_sampler=build_train_sampler(dataset, data_args, 2, 2, 7))
    steps = [zip(*[order.rank_batches(epoch, r, 0) for r in range(2)]) for epoch in range(2)]
    kinds = [tuple(bool(dataset.has_image[b[0]]) for b in step) for epoch_steps in steps for step in epoch_steps]
    assert (True, False) in kinds or (False, True) in kinds


@pytest.mark.parametrize("stage,mode", [(2, "ln"), (3, "lora")])
def test_two_rank_deepspeed_matches_one_process_and_loads(world, reference, tmp_path, stage, mode):
    out = str(tmp_path / f"zero{stage}_{mode}")
    output = _deepspeed_launch(flags(world, out, deepspeed=CONFIGS[stage], tune_mode=mode,
                                     pretrain_mm_mlp_adapter=stage1_run(world), **_mode_rates(mode)))
    assert (PARTITIONED_LOG in output) == (stage == 3)  # ZeRO-3 builds the model partitioned from the start
    if mode == "lora":
        _assert_some_step_mixes_text_only_and_image_ranks(world)
    _assert_close_runs(out, reference[mode])
    with open(os.path.join(out, "run_config.json"), encoding="utf-8") as handle:
        resolved = json.load(handle)["resolved"]
    assert (resolved["world_size"], resolved["deepspeed_config"]["zero_optimization"]["stage"]) == (2, stage)
    # The saved tensors load into a one-process model, unchanged.
    loaded = dict(unwrap(load_checkpoint(out).model).named_parameters())
    for name, value in trained(out).items():
        assert torch.equal(loaded[name].detach(), value), name
    tower = "model.vision_tower."
    if mode == "lora":
        for part in ("model.language_model.", tower):  # trained B, not the zero init, in the LLM and the tower
            lora = {n: p for n, p in loaded.items() if ".lora_B." in n and part in n}
            assert lora and any(float(p.abs().max()) > 0 for p in lora.values()), part
    else:
        assert any(n.startswith(tower) and ".mlp." in n for n in trained(out))  # the whole (reachable) tower
    if stage == 2:
        # ZeRO-3 on 2 ranks continues the ZeRO-2 run from its step-2 checkpoint and lands on the same weights.
        resumed = str(tmp_path / "zero3_resumed")
        _deepspeed_launch(flags(world, resumed, deepspeed=CONFIGS[3], tune_mode=mode,
                                pretrain_mm_mlp_adapter=stage1_run(world),
                                resume_from_checkpoint=os.path.join(out, "checkpoint-2"), **_mode_rates(mode)))
        _assert_close_runs(resumed, out, steps=(3, 4), atol=1e-6)
    else:
        # And back: one process under ZeRO-2 (accumulation 2) continues the 2-rank ZeRO-3 run from step 2.
        resumed = str(tmp_path / "zero2_one_process_resumed")
        _run_in_fresh_process([flags(world, resumed, deepspeed=CONFIGS[2], tune_mode=mode, gradient_accumulation_steps=2,
                                     pretrain_mm_mlp_adapter=stage1_run(world),
                                     resume_from_checkpoint=os.path.join(out, "checkpoint-2"), **_mode_rates(mode))],
                              str(tmp_path))
        _assert_close_runs(resumed, out, steps=(3, 4))  # one process sums the two micro-batches in another order
