"""Static GPU memory per device before launch: weights, gradients and optimizer states.

Answers "how much memory do I need?" from parameter counts alone (llava-ln describe), for
the precision policy llava-ln trains with. Activations are NOT included: they depend on
batch, sequence length and gradient checkpointing; bench/results/ has measured peaks
(e.g. 7B, batch 8 x 2048, full checkpointing: 8-9 GiB on top of the static figure).

Bytes per parameter (bf16 training):
  plain PyTorch / DDP: frozen 2 (bf16); trainable 4 (fp32 weight) + 4 (grad) + 8 (Adam m, v)
  ZeRO-2: every weight 2 (bf16 module); trainable + 2 (bf16 grad) + 12 / N (fp32 master + Adam)
  ZeRO-3: like ZeRO-2 but the bf16 weights and gradients are partitioned too (/ N)
fp32 training doubles the frozen bytes and drops the separate master copy.
"""
GIB = 2**30
STRATEGIES = ("torch", "zero2", "zero3")


def static_memory_per_gpu(frozen: int, trainable: int, strategy: str = "torch", num_gpus: int = 1,
                          bf16: bool = True) -> dict:
    """Bytes per device, in GiB, split into frozen weights and trainable weights + states."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if num_gpus < 1:
        raise ValueError("num_gpus must be at least 1")
    weight = 2 if bf16 else 4
    if strategy == "torch":
        frozen_bytes = frozen * weight
        trainable_bytes = trainable * (4 + 4 + 8)
    else:
        shard = num_gpus if strategy == "zero3" else 1
        frozen_bytes = frozen * weight / shard
        master = 4 if bf16 else 0  # fp32 training updates the fp32 weights in place
        trainable_bytes = trainable * ((weight + weight) / shard + (master + 8) / num_gpus)
    return {
        "strategy": strategy, "num_gpus": num_gpus, "precision": "bf16" if bf16 else "fp32",
        "frozen_weights": round(frozen_bytes / GIB, 2),
        "trainable_weights_and_states": round(trainable_bytes / GIB, 2),
        "total_static": round((frozen_bytes + trainable_bytes) / GIB, 2),
        "excludes": "activations (batch, sequence length and gradient checkpointing dependent)",
    }
