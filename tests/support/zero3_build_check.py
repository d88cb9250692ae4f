"""One rank of the partitioned-build check: `deepspeed --num_gpus 2 zero3_build_check.py CASES.json OUT_DIR`.

For every case ({"name", "llm", "vision", "projector"}; llm may be any multimodal start) it builds the
model twice: partitioned under deepspeed.zero.Init and filled shard by shard (the ZeRO-3 training
path), and whole through transformers' loading (every other path), from the same seed. It then
gathers every parameter and compares it, bit for bit, and writes rank<r>.json: per case the number
of tensors compared, those that differ (name, max difference), how many were partitioned, and this
rank's bytes of partitioned storage.
"""
import json
import os
import sys

import deepspeed
import torch

from llava_ln.checkpoint.run_start import build_start_model, resolve_start
from llava_ln.core.distributed import distributed_session
from llava_ln.data import DataArguments
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.parts import unwrap
from llava_ln.training.zero.partitioned_init import partitioned_construct
from llava_ln.training.zero.strategy import fill_zero_config, load_zero_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Flags:
    per_device_train_batch_size, gradient_accumulation_steps, max_grad_norm = 1, 1, 1.0
    bf16 = fp16 = False
    learning_rate, adam_beta1, adam_beta2, adam_epsilon, weight_decay = 1e-3, 0.9, 0.999, 1e-8, 0.0


def check(case: dict, world_size: int) -> dict:
    args = ModelArguments(model_name_or_path=case["llm"], vision_tower=case.get("vision"),
                          mm_projector_type=case.get("projector", "mlp2x_gelu"))
    resolve_start(args, DataArguments(), explicit=set())  # a multimodal start fixes the tower, connector, ...
    tokenizer = load_tokenizer(args.tokenizer_name_or_path or args.model_name_or_path)
    config = fill_zero_config(load_zero_config(os.path.join(REPO, "zero_configs", "zero3.json")), _Flags,
                              world_size=world_size, hidden_size=32)
    torch.manual_seed(11)
    partitioned, _ = build_start_model(args, tokenizer, torch.float32, construct=partitioned_construct(config))
    torch.manual_seed(11)
    whole = dict(unwrap(build_start_model(args, tokenizer, torch.float32)[0]).named_parameters())
    differ, count, local = [], 0, 0
    for name, param in unwrap(partitioned).named_parameters():
        count += int(hasattr(param, "ds_tensor"))
        local += param.ds_tensor.numel() * param.ds_tensor.element_size() if hasattr(param, "ds_tensor") else 0
        with deepspeed.zero.GatheredParameters([param]):
            value = param.detach().clone()
        if name not in whole or not torch.equal(value, whole[name].detach()):
            gap = float((value - whole[name]).abs().max()) if name in whole and value.shape == whole[name].shape else -1
            differ.append([name, gap])
    return {"compared": len(whole), "differ": differ, "partitioned": count, "local_bytes": local,
            "total_bytes": sum(p.numel() * p.element_size() for p in whole.values())}


def main() -> None:
    cases_file, out_dir = [a for a in sys.argv[1:] if not a.startswith("--local_rank")][:2]
    with open(cases_file, encoding="utf-8") as handle:
        cases = json.load(handle)
    with distributed_session("cpu", use_deepspeed=True) as context:
        results = {case["name"]: check(case, context.world_size) for case in cases}
        with open(os.path.join(out_dir, f"rank{context.rank}.json"), "w", encoding="utf-8") as handle:
            json.dump(results, handle)


if __name__ == "__main__":
    main()
