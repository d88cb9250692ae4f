"""A quantized frozen base: the LLM's block linears stored in 4 or 8 bits through bitsandbytes (--bits).

Only the nn.Linear layers inside the LLM's decoder blocks (q/k/v/o, gate/up/down, ...) are
replaced, by bitsandbytes' Linear4bit (NF4 or FP4, optionally with double-quantized block
statistics) or Linear8bitLt (LLM.int8, outlier threshold 6). Their biases, the norms, the
embeddings, the LM head, the connector and the vision tower stay in the compute dtype, so every
mode that leaves the block linears frozen (ln, ln_simple, connector, and LoRA as QLoRA) trains
exactly the tensors it trains on an unquantized base.

Why the layers are replaced here rather than through transformers' BitsAndBytesConfig at load: the
LLM is loaded as a causal LM and then composed into Llava, and the set of quantized layers must be
exactly "the block linears" for any family (BitsAndBytesConfig quantizes every linear except a
skip list of names); replacing an already-loaded model also works for random weights (benchmarks),
for an evaluation of any checkpoint, and on a CPU. Quantization runs on the device passed (the
training GPU: fast, and the bf16 copy never has to exist there whole); a CPU works too (bitsandbytes
0.50 runs NF4 forward and backward there), at about 2 s per 45M weights.

Bytes of a quantized weight of n elements (what `describe --bits` counts), bitsandbytes' layout:
  4 bits: n/2 packed + per block of 64 an absmax: fp32 (4 B), or with --double_quant an 8-bit code
          (1 B) whose own fp32 absmax covers 256 blocks, plus the small code tables and an offset
  8 bits: n int8 + one fp32 scale per output row
"""
import logging
import math
from dataclasses import asdict, dataclass
from types import ModuleType

import torch
from torch import nn

from llava_ln.core.errors import LlavaLnError
from llava_ln.model.args import BITS, QUANT_TYPES
from llava_ln.model.parts import decoder_layers_of, unwrap

logger = logging.getLogger(__name__)

BLOCKSIZE = 64  # bitsandbytes' 4-bit block size (CUDA and CPU)
NESTED_BLOCKSIZE = 256  # double quantization: absmax values are quantized in blocks of this many
LLM_INT8_THRESHOLD = 6.0  # LLM.int8's outlier threshold (LLaVA's and transformers' default)
# Marks a model whose block linears were quantized: the QuantSettings used.
MARK = "llava_ln_quantization"


@dataclass(frozen=True)
class QuantSettings:
    bits: int  # 4 or 8
    quant_type: str = "nf4"  # 4 bits only
    double_quant: bool = True  # 4 bits only

    def to_dict(self) -> dict:
        """The manifest's `quantization` entry."""
        return asdict(self)

    def describe(self) -> str:
        if self.bits == 8:
            return "8-bit (LLM.int8)"
        return f"4-bit {self.quant_type}{' + double quant' if self.double_quant else ''}"


def quant_settings(bits: int, quant_type: str = "nf4", double_quant: bool = True) -> QuantSettings | None:
    """The settings --bits/--quant_type/--double_quant ask for; None for --bits 16 (no quantization)."""
    if bits not in BITS:
        raise LlavaLnError(f"--bits {bits} is not one of {', '.join(map(str, BITS))}")
    if quant_type not in QUANT_TYPES:
        raise LlavaLnError(f"--quant_type {quant_type!r} is not one of {', '.join(QUANT_TYPES)}")
    return None if bits == 16 else QuantSettings(bits, quant_type, bool(double_quant))


def settings_from_dict(entry: dict | None) -> QuantSettings | None:
    """QuantSettings from a manifest's `quantization` entry (None when the run was not quantized)."""
    return QuantSettings(**entry) if entry else None


def import_bitsandbytes():
    """bitsandbytes, or one line saying how to install it."""
    try:
        import bitsandbytes
    except ImportError:
        raise LlavaLnError("--bits 4/8 needs bitsandbytes: pip install 'llava-ln[quant]' "
                           "(or pip install 'bitsandbytes>=0.50')") from None
    return bitsandbytes


def block_linears(model) -> list[tuple[str, nn.Linear]]:
    """(name relative to the Llava model, module) of every nn.Linear inside the LLM's decoder blocks.

    In a PEFT-wrapped model these are the wrapped base layers; LoRA's own factors are left out.
    """
    llava = unwrap(model)
    names = {id(m): n for n, m in llava.named_modules()}
    found = []
    for block in decoder_layers_of(model):
        adapters = _adapter_module_ids(block)
        for module in block.modules():
            if isinstance(module, nn.Linear) and id(module) not in adapters:
                found.append((names[id(module)], module))
    return found


def _adapter_module_ids(block) -> set[int]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    ids = set()
    for module in block.modules():
        if isinstance(module, BaseTunerLayer):
            for attribute in module.adapter_layer_names:
                ids |= {id(m) for m in getattr(module, attribute).modules()}
    return ids


def quantization_of(model) -> QuantSettings | None:
    """The settings a model's block linears were quantized with (None: not quantized)."""
    return getattr(unwrap(model), MARK, None)


def quantize_llm_linears(model: nn.Module, settings: QuantSettings | None, device: str | torch.device | None = None, *,
                         cpu_inference_layout: bool = False) -> int:
    """Replace the LLM's block linears by bitsandbytes layers, quantized on `device`; returns how many.

    device: where the quantized weights live (default: where each weight is now). The layers compute
    in the dtype their weight had, which is the run's compute dtype. Does nothing for settings None.
    cpu_inference_layout: leave on bitsandbytes' own CPU inference path (see _quantized_copy), as a model
    that transformers loads has it: for a reference that must compute exactly as such a model does.
    """
    if settings is None:
        return 0
    if quantization_of(model) is not None:
        raise ValueError("the model's block linears are already quantized")
    bnb = import_bitsandbytes()
    llava = unwrap(model)
    targets = block_linears(model)
    for name, linear in targets:
        if not linear.weight.is_floating_point():
            raise LlavaLnError(f"{name} is already quantized (a 4-bit export?); load it without --bits")
        if linear.weight.device.type == "meta":
            raise ValueError(f"{name} is on the meta device; quantize a model with weights")
        where = torch.device(device) if device is not None else linear.weight.device
        quantized = _quantized_copy(bnb, linear, settings, cpu_inference_layout=cpu_inference_layout).to(where)
        parent_name, _, child = name.rpartition(".")
        setattr(llava.get_submodule(parent_name), child, quantized)
    setattr(llava, MARK, settings)
    # PEFT reads these to wrap bitsandbytes layers with its own LoRA layers (QLoRA).
    llava.is_loaded_in_4bit = settings.bits == 4
    llava.is_loaded_in_8bit = settings.bits == 8
    logger.info("quantized %d linear layers of the LLM's blocks to %s", len(targets), settings.describe())
    return len(targets)


def _quantized_copy(bnb: ModuleType, linear: nn.Linear, settings: QuantSettings, *,
                    cpu_inference_layout: bool) -> nn.Module:
    """A bitsandbytes layer holding linear's weight (not yet quantized: that happens on .to(device))."""
    dtype = linear.weight.dtype
    has_bias = linear.bias is not None
    with torch.device("meta"):  # the layer's own freshly initialised weight is replaced right away
        if settings.bits == 4:
            layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias, compute_dtype=dtype,
                                      compress_statistics=settings.double_quant, quant_type=settings.quant_type)
        else:
            layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                        has_fp16_weights=False, threshold=LLM_INT8_THRESHOLD)
    weight = linear.weight.data.detach()
    if settings.bits == 4:
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, blocksize=BLOCKSIZE,
                                         compress_statistics=settings.double_quant, quant_type=settings.quant_type,
                                         module=layer)
        if not cpu_inference_layout:
            # On AVX512-BF16 CPUs bitsandbytes repacks the weight in place at the first eval-mode forward
            # into an inference layout (bf16 kernels; needs out_features % 32 == 0) that its training path
            # cannot use afterwards; keep the one layout that trains and evaluates alike.
            layer.support_avx512bf16_for_cpu = False
    else:
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    if has_bias:
        layer.bias = linear.bias  # stays a plain frozen parameter in the compute dtype
    return layer.train(linear.training)  # bitsandbytes chooses kernels by train/eval mode


def logical_numel(param) -> int:
    """Elements a parameter stands for: a ZeRO-3 partition its whole tensor, a packed 4-bit weight its shape."""
    if hasattr(param, "ds_numel"):
        return param.ds_numel
    state = getattr(param, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        return math.prod(state.shape)
    return param.numel()


# ---- bytes, from shapes alone (describe, memory estimates) ----

def weight_bytes(shape, settings: QuantSettings) -> float:
    """Bytes one quantized [out, in] weight occupies, its quantization statistics included."""
    out_features, in_features = shape
    n = out_features * in_features
    if settings.bits == 8:
        return n + 4 * out_features  # int8 values + fp32 row scales
    blocks = math.ceil(n / BLOCKSIZE)
    packed = math.ceil(n / 2)
    code = 16 * 4  # the 4-bit code table (fp32)
    if not settings.double_quant:
        return packed + 4 * blocks + code
    # absmax as 8-bit codes, their own fp32 absmax per 256 blocks, the 8-bit code table and an fp32 offset
    return packed + blocks + 4 * math.ceil(blocks / NESTED_BLOCKSIZE) + 256 * 4 + 4 + code


def measured_bytes(module) -> int:
    """Bytes a quantized bitsandbytes layer's weight really holds (data + every quant-state tensor)."""
    weight = module.weight
    total = weight.numel() * weight.element_size()
    state = getattr(weight, "quant_state", None)
    if state is not None:
        for tensor in (state.absmax, state.code, state.offset,
                       *((state.state2.absmax, state.state2.code) if state.nested else ())):
            if tensor is not None:
                total += tensor.numel() * tensor.element_size()
    scales = getattr(weight, "SCB", None)
    if scales is not None:
        total += scales.numel() * scales.element_size()
    return total


@dataclass(frozen=True)
class QuantizedFootprint:
    """What quantization takes out of the compute dtype: how many weights, and the bytes they then need."""

    params: int
    bytes: float

    def to_dict(self) -> dict:
        return {"params": self.params, "bytes": round(self.bytes),
                "bytes_per_param": round(self.bytes / self.params, 4) if self.params else 0.0}


def quantized_footprint(model, settings: QuantSettings | None) -> QuantizedFootprint:
    """The footprint quantizing model's block linears would have (works on the meta device)."""
    if settings is None:
        return QuantizedFootprint(0, 0.0)
    shapes = [tuple(linear.weight.shape) for _, linear in block_linears(model)]
    return QuantizedFootprint(sum(a * b for a, b in shapes), sum(weight_bytes(s, settings) for s in shapes))
