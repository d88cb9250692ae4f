"""Write a DeepSpeed ZeRO checkpoint with shards only, from several ranks and optimizer groups.

Usage: python zero_shards_job.py LLM VISION OUT_DIR STAGE TUNE_MODE; run once per rank with RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (CPU, gloo). OUT_DIR gets DeepSpeed's `latest` and
global_step*/ shards, a manifest.json, and (from rank 0) expected.safetensors: the trained tensors
gathered through DeepSpeed itself, for the test to compare the consolidation against.
"""
import os
import sys

import torch


def main(llm: str, vision: str, out: str, stage: str, tune_mode: str) -> None:
    os.environ.setdefault("LOCAL_RANK", os.environ.get("RANK", "0"))
    import deepspeed
    from safetensors.torch import save_file

    from llava_ln.checkpoint.manifest import Manifest, write_manifest
    from llava_ln.core.distributed import destroy_process_group_at_exit, skip_deepspeed_shared_memory_op
    from llava_ln.model.args import ModelArguments
    from llava_ln.model.backbones import load_tokenizer
    from llava_ln.model.builder import build_mllm
    from llava_ln.model.forward import multimodal_forward
    from llava_ln.model.parts import unwrap
    from llava_ln.tuning.args import TuningArguments
    from llava_ln.tuning.plan import apply_tune_mode

    torch.manual_seed(0)
    tokenizer = load_tokenizer(llm)
    model, spec = build_mllm(ModelArguments(model_name_or_path=llm, vision_tower=vision), tokenizer)
    model, plan = apply_tune_mode(model, TuningArguments(tune_mode=tune_mode, lora_r=4, lora_alpha=8))
    # Several optimizer groups with their own rates: the layout the trainer hands DeepSpeed.
    groups = [{"params": g["params"], "lr": 0.01 * (i + 1), "weight_decay": 0.0}
              for i, g in enumerate(plan.param_groups(model, 0.01, 0.0))]
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": int(stage)},
              "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False}
    skip_deepspeed_shared_memory_op()  # as training does on a CPU: nothing compiled, no lock left behind
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(groups), config=config)
    destroy_process_group_at_exit()  # as training does: a gloo group alive at exit can abort the process
    ids = torch.randint(5, 250, (1, 12))
    ids[0, 1:1 + spec.num_image_tokens] = spec.image_token_id
    for _ in range(2):
        loss = multimodal_forward(engine.module, ids, labels=ids, pixel_values=torch.randn(1, 3, 28, 28),
                                  image_counts=torch.tensor([1])).loss
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(out)
    from deepspeed.utils import safe_get_full_fp32_param

    expected = {}
    for name, param in engine.module.named_parameters():
        if param.requires_grad:
            expected[name] = safe_get_full_fp32_param(param).detach().float().cpu().contiguous()
    if int(os.environ.get("RANK", "0")) == 0:
        save_file(expected, os.path.join(out, "expected.safetensors"))
        write_manifest(out, Manifest(kind="trained", llm=llm, tokenizer=llm, vision_tower=vision,
                                     mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
                                     mm_vision_select_feature="patch", tune_mode=tune_mode,
                                     conv_template="vicuna_v1", image_aspect_ratio="resize",
                                     lora={"r": 4, "alpha": 8, "dropout": 0.0} if tune_mode == "lora" else None,
                                     image_token_id=spec.image_token_id, num_image_tokens=spec.num_image_tokens))
    assert unwrap(engine.module) is not None


if __name__ == "__main__":
    main(*sys.argv[1:6])
