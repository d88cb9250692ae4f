"""ZeRO-3 from the start: the model is created partitioned and each rank loads only its partitions.

Without this, every rank would load the whole model and deepspeed.initialize would partition it
afterwards: 14 GB of CPU memory per rank at 7B in bf16, so 8 ranks of a 13B model exhaust a node
before training starts. Under a ZeRO-3 config the LLM and the vision tower (or a multimodal start's
whole model: a transformers LLaVA folder, original LLaVA, a merged llava-ln folder) are instead
created inside `deepspeed.zero.Init` with transformers' weight initialisation switched off, so each
module is partitioned as soon as it exists, and then filled from the safetensors files
(checkpoint.partitioned_start, checkpoint.sharded_load), each rank reading only the rows of its own
partitions. Peak CPU (and GPU) memory per rank is about model/N plus one module's tensors. A llava-ln
run folder as the start is the exception: it is loaded whole (a warning says so; merge it first).

The connector is created as on every other path (whole, on the CPU, from the seeded generator: the
same initial values as a ZeRO-2 or one-process run) and partitioned by deepspeed.initialize; so are
LoRA factors. What runs between building and deepspeed.initialize works on partitioned parameters:
the tuning plan reads ds_numel/ds_shape, the stage-1 connector and the exact connector masters are
written slice by slice (checkpoint.partitions), a frozen connector is gathered to be stored beside
the run. Checkpoints are name-keyed full tensors as under every strategy, so saving, resuming across
stages and world sizes, merge and export are unchanged.
"""
import contextlib
import logging
import os

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from llava_ln.checkpoint.run_start import build_start_model, is_llava_ln_folder
from llava_ln.core.distributed import DistContext
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.pretrained import load_pretrained
from llava_ln.model.args import ModelArguments
from llava_ln.model.builder import MultimodalSpec
from llava_ln.model.llava_checkpoints import detect_source
from llava_ln.training.args import TrainingArguments
from llava_ln.training.memory.policy import Precision

logger = logging.getLogger(__name__)


def _text_hidden_size(path: str) -> int:
    """The LLM's hidden size (the DeepSpeed config's buckets follow it) from configs alone."""
    from transformers import AutoConfig

    if is_llava_ln_folder(path) and not os.path.isfile(os.path.join(path, "config.json")):
        from llava_ln.checkpoint.loading import effective_manifest

        return _text_hidden_size(effective_manifest(path).llm)  # a run folder: its base
    source = detect_source(path)
    config = source.text_config() if source else load_pretrained(AutoConfig, path).get_text_config()
    return config.hidden_size


def zero3_config(args: TrainingArguments, context: DistContext, precision: Precision, *,
                 model_args: ModelArguments) -> dict | None:
    """The filled DeepSpeed config when --deepspeed asks for ZeRO stage 3, else None."""
    if not args.deepspeed:
        return None
    from llava_ln.training.zero.strategy import DeepSpeedStrategy

    config = DeepSpeedStrategy(args, context, precision,
                               hidden_size=_text_hidden_size(model_args.model_name_or_path)).config
    return config if config["zero_optimization"]["stage"] == 3 else None


def _no_init_weights():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def partitioned_construct(config: dict):
    """A context-manager factory: modules created inside are uninitialised and partitioned at creation."""
    offload = (config.get("zero_optimization", {}).get("offload_param") or {}).get("device", "none")
    if str(offload).lower() == "nvme":
        raise LlavaLnError("--deepspeed: offload_param to nvme cannot be filled partition by partition at load; "
                           "use offload_param device cpu (or none)")

    @contextlib.contextmanager
    def construct():
        import deepspeed

        # Creation must not draw from the generators (the loading path creates on the meta device, which
        # draws nothing; some modules call torch.randn in __init__), so the connector gets the same values.
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices), _no_init_weights(), \
                deepspeed.zero.Init(config_dict_or_path=config):
            yield

    return construct


def return_freed_memory_to_the_os() -> bool:
    """glibc only: serve every allocation of 128 KiB or more with its own memory map, unmapped when freed.

    ZeRO-3 allocates and frees whole tensors all the time (each parameter whole at creation, gathered
    parameters in every step, rows read from disk, activations). glibc starts with a 128 KiB threshold
    but raises it after such frees and then serves them from its heaps, whose freed holes stay resident:
    on a CPU that grew a rank's peak by a third of its partition in bench/zero3_memory.py. Fixing the
    threshold (which also stops the raising) keeps the peak at what is live.
    """
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False  # not glibc


def build_training_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase, *, args: TrainingArguments,
                         context: DistContext, precision: Precision) -> tuple[nn.Module, MultimodalSpec]:
    """(model, spec) to train: partitioned from the start under ZeRO-3, loaded whole otherwise."""
    config = zero3_config(args, context, precision, model_args=model_args)
    construct = partitioned_construct(config) if config else None
    if construct is not None:
        return_freed_memory_to_the_os()
    built = build_start_model(model_args, tokenizer, dtype=precision.compute_dtype, construct=construct)
    if construct is not None:
        logger.info("ZeRO-3: model created partitioned over %d rank(s) and loaded shard by shard", context.world_size)
    return built
