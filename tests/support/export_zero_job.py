"""Write a DeepSpeed ZeRO-3 checkpoint with shards only (no gathered tensors), as a crashed save would leave.

Usage: python export_zero_job.py LLM VISION OUT_DIR. One rank on CPU (gloo). OUT_DIR gets the
DeepSpeed shards, a manifest.json (kind trained, lora) and, for the test to compare against,
expected.safetensors with the gathered trained tensors.
"""
import os
import sys

import torch


def main(llm: str, vision: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29533"), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed
    from export_helpers import LORA
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
    model, _ = apply_tune_mode(model, TuningArguments(tune_mode="lora", lora_r=LORA["r"], lora_alpha=LORA["alpha"],
                                                   lora_dropout=LORA["dropout"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3},
              "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False}
    skip_deepspeed_shared_memory_op()  # as training does on a CPU: nothing compiled, no lock left behind
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(trainable, lr=0.05), config=config)
    destroy_process_group_at_exit()  # as training does: a gloo group alive at exit can abort the process
    ids = torch.randint(5, 250, (1, 12))
    ids[0, 1:1 + spec.num_image_tokens] = spec.image_token_id
    for _ in range(2):
        loss = multimodal_forward(engine.module, ids, labels=ids, pixel_values=torch.randn(1, 3, 28, 28),
                                  image_counts=torch.tensor([1])).loss
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(out)
    names = [n for n, p in engine.module.named_parameters() if p.requires_grad]
    params = [p for p in engine.module.parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters(params):
        expected = {n: p.detach().clone().contiguous() for n, p in zip(names, params)}
    save_file(expected, os.path.join(out, "expected.safetensors"))
    write_manifest(out, Manifest(kind="trained", llm=llm, tokenizer=llm, vision_tower=vision,
                                 mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
                                 mm_vision_select_feature="patch", tune_mode="lora", conv_template="vicuna_v1",
                                 image_aspect_ratio="resize", lora=dict(LORA), image_token_id=spec.image_token_id,
                                 num_image_tokens=spec.num_image_tokens))
    assert unwrap(engine.module) is not None


if __name__ == "__main__":
    main(*sys.argv[1:4])
