"""Memory and precision: the mixed-precision policy, gradient checkpointing, and the static estimate.

Precision: frozen weights stay in the compute dtype (half the memory under --bf16, they need no
master copy); trainable ones are fp32 so the optimizer updates them without rounding, and autocast
runs the matmuls in bf16. On a CPU every run is fp32 (the flags are reported and ignored), so a
launch script written for GPUs also runs, slowly but identically, on a laptop or in tests.
DeepSpeed applies the same policy itself (bf16 module, fp32 master partitions).

Gradient checkpointing: transformers' non-reentrant checkpointing is switched on, then off again on
the last blocks when --gradient_checkpointing_ratio < 1: every block left out keeps its
activations (more memory) and skips its recompute in backward (less time). The per-block switch is
the documented `gradient_checkpointing` attribute of transformers' GradientCheckpointingLayer.
Non-reentrant checkpointing needs no input that requires grad, which matters here because the
embeddings are frozen in most tuning modes.

Static memory per device before launch (llava-ln describe), from parameter counts alone.
Activations are NOT included: they depend on batch, sequence length and checkpointing;
bench/results/ has measured peaks. Bytes per parameter (bf16 training):
  plain PyTorch / DDP: frozen 2 (bf16); trainable 4 (fp32 weight) + 4 (grad) + 8 (Adam m, v)
  ZeRO-2: every weight 2 (bf16 module); trainable + 2 (bf16 grad) + 12 / N (fp32 master + Adam)
  ZeRO-3: like ZeRO-2 but the bf16 weights and gradients are partitioned too (/ N)
fp32 training doubles the frozen bytes and drops the separate master copy.
A quantized base (--bits 4|8) replaces the compute-dtype bytes of its block linears by their quantized
bytes, statistics included (model/quantize.py: about 0.52 B per weight at 4 bits with double
quantization); those are frozen and replicated on every rank (ZeRO-3 cannot hold them).

Measured peak (peak_memory_gib, logged by the loop): CUDA allocator's high-water mark, or on a CPU
the process's peak resident set.
"""
import logging
from dataclasses import dataclass

import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from llava_ln.model.parts import decoder_layers_of, unwrap, vision_tower_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    compute_dtype: torch.dtype  # dtype of frozen weights and of autocast
    bf16: bool
    fp16: bool

    @property
    def autocast(self) -> bool:
        return self.compute_dtype != torch.float32

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"


def resolve_precision(args, device: torch.device) -> Precision:
    if device.type != "cuda":
        if args.bf16 or args.fp16:
            logger.warning("no CUDA device: --bf16/--fp16 ignored, training in fp32")
        return Precision(torch.float32, False, False)
    if args.tf32 is not None:
        # Only affects fp32 matmuls (the connector's and the master-weight ones under autocast).
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    if args.bf16:
        return Precision(torch.bfloat16, True, False)
    if args.fp16:
        return Precision(torch.float16, False, True)
    return Precision(torch.float32, False, False)


def make_trainable_fp32(model) -> None:
    """Give every trainable parameter an fp32 master (frozen ones keep their dtype)."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


logger = logging.getLogger(__name__)


def enable_gradient_checkpointing(model, ratio: float = 1.0) -> int:
    """Checkpoint the first round(ratio * n_blocks) LLM blocks; returns how many."""
    return checkpoint_first_blocks(model, round(ratio * len(decoder_layers_of(model))))


def checkpoint_first_blocks(model, count: int) -> int:
    """Checkpoint exactly the first `count` LLM blocks (0: none, and checkpointing stays off); returns count."""
    llava = unwrap(model)
    blocks = decoder_layers_of(model)
    if count > 0:
        # transformers deprecates gradient_checkpointing_enable for this name (5.25 warns, v6 removes it);
        # earlier 5.x releases have only the old one.
        enable = getattr(llava, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            llava.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        llava.config.use_cache = False
    for index, block in enumerate(blocks):
        if hasattr(block, "gradient_checkpointing"):
            block.gradient_checkpointing = index < count
    # A tower that trains keeps its activations for backward; with checkpointing on, its layers recompute
    # them instead. A frozen tower runs without autograd, so it has nothing to recompute.
    tower = vision_tower_of(model)
    tower_recomputes = count > 0 and any(p.requires_grad for p in tower.parameters())
    for module in tower.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module.gradient_checkpointing = tower_recomputes
    logger.debug("gradient checkpointing on %d of %d LLM blocks%s", count, len(blocks),
                 " and every vision tower layer" if tower_recomputes else "")
    return count


GIB = 2**30
STRATEGIES = ("torch", "zero2", "zero3")


def static_memory_per_gpu(frozen: int, trainable: int, strategy: str = "torch", *, num_gpus: int = 1,
                          bf16: bool = True, quantized_params: int = 0, quantized_bytes: float = 0.0) -> dict:
    """Bytes per device, in GiB, split into frozen weights and trainable weights + states.

    frozen: every frozen parameter; quantized_params of them (a --bits base's block linears) take
    quantized_bytes in all instead of the compute dtype's bytes (model.quantize.QuantizedFootprint).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if num_gpus < 1:
        raise ValueError("num_gpus must be at least 1")
    if quantized_params and strategy == "zero3":
        raise ValueError("a quantized base cannot be partitioned by ZeRO-3; use --strategy zero2 or torch")
    weight = 2 if bf16 else 4
    plain_frozen = frozen - quantized_params
    if strategy == "torch":
        frozen_bytes = plain_frozen * weight
        trainable_bytes = trainable * (4 + 4 + 8)
    else:
        shard = num_gpus if strategy == "zero3" else 1
        frozen_bytes = plain_frozen * weight / shard
        master = 4 if bf16 else 0  # fp32 training updates the fp32 weights in place
        trainable_bytes = trainable * ((weight + weight) / shard + (master + 8) / num_gpus)
    frozen_bytes += quantized_bytes
    result = {
        "strategy": strategy, "num_gpus": num_gpus, "precision": "bf16" if bf16 else "fp32",
        "frozen_weights": round(frozen_bytes / GIB, 2),
        "trainable_weights_and_states": round(trainable_bytes / GIB, 2),
        "total_static": round((frozen_bytes + trainable_bytes) / GIB, 2),
        "excludes": "activations (batch, sequence length and gradient checkpointing dependent)",
    }
    if quantized_params:
        result["quantized_weights"] = round(quantized_bytes / GIB, 2)  # part of frozen_weights
    return result


def peak_memory_gib(device) -> float:
    """This process's memory high-water mark so far, in GiB.

    CUDA: the most torch's allocator has held on the device (max_memory_allocated), i.e. weights,
    gradients, optimizer states and activations. CPU: the process's peak resident set (ru_maxrss),
    which also counts the Python runtime and libraries, so only differences between runs mean much.
    """
    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux reports KiB
