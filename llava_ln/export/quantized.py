"""`export --format hf --bits 4`: the verified export, then stored with 4-bit block linears for transformers.

A run trained on a quantized base (--bits 4|8) holds only its trained tensors; every export first
writes the UNQUANTIZED base plus those tensors (training saw the quantized weights, so this is the
model with the base's full-precision weights restored) and verifies it as always. With --bits 4 that
folder is then quantized the way plain transformers does it: LlavaForConditionalGeneration loads it
with a BitsAndBytesConfig that converts exactly the LLM's block linears (everything else is listed in
llm_int8_skip_modules) and saves it, so config.json carries the `quantization_config` and
`from_pretrained(folder)` loads 4-bit with no flag. The 4-bit type and double quantization are the
run's own (NF4 with double quantization for a run that was not quantized).

The quantized folder is verified again, in a fresh process, against llava-ln's own model quantized by
model/quantize.py from the same rounded weights (bitsandbytes' layers, block size 64, compute dtype =
the export's dtype): the packed weights are then identical, so the usual tight tolerances apply.
"""
import torch

from llava_ln.checkpoint.loading import load_checkpoint, reference_attention
from llava_ln.checkpoint.manifest import read_manifest, write_manifest
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.pretrained import load_pretrained
from llava_ln.core.saving import save_pretrained
from llava_ln.model.parts import connector_of, unwrap, vision_tower_of
from llava_ln.model.quantize import (
    QuantSettings,
    block_linears,
    import_bitsandbytes,
    quantize_llm_linears,
    settings_from_dict,
)

EXPORT_BITS = (4, 16)


def export_quant_settings(bits: int, manifest) -> QuantSettings | None:
    """What --bits asks of an export (None: unquantized); the 4-bit flavour follows the run."""
    if bits not in EXPORT_BITS:
        raise LlavaLnError(f"export --bits {bits}: only 4 (transformers' bitsandbytes 4-bit) or 16 (unquantized)")
    if bits == 16:
        return None
    trained = settings_from_dict(manifest.quantization)
    if trained is not None and trained.bits == 4:
        return trained
    return QuantSettings(4, "nf4", True)


def note_unquantized_export(manifest, log) -> None:
    """Say it when a run that trained on a quantized base is written onto the unquantized one."""
    trained = settings_from_dict(manifest.quantization)
    if trained is not None:
        log(f"note: this run trained on a {trained.describe()} base; the export holds the unquantized base plus its "
            "trained tensors (`export --format hf --bits 4` stores the model as it trained)")


def skip_modules(model) -> list[str]:
    """Names for llm_int8_skip_modules: every linear layer that is not a block linear of the LLM.

    The vision tower and the connector are named once each; any other linear (the LM head, a family's
    extra projection outside the blocks) by its full name.
    """
    from torch import nn

    llava = unwrap(model)
    names = {id(m): n for n, m in llava.named_modules()}
    grouped = [names[id(vision_tower_of(model))], names[id(connector_of(model))]]
    quantized = {name for name, _ in block_linears(model)}
    skipped = []
    for name, module in llava.named_modules():
        if not isinstance(module, nn.Linear) or name in quantized:
            continue
        prefix = next((p for p in grouped if name.startswith(p + ".")), None)
        entry = prefix or name
        if entry not in skipped:
            skipped.append(entry)
    return skipped


def bitsandbytes_config(settings: QuantSettings, compute_dtype: torch.dtype, skipped: list[str]):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=settings.quant_type,
                              bnb_4bit_use_double_quant=settings.double_quant, bnb_4bit_compute_dtype=compute_dtype,
                              llm_int8_skip_modules=skipped)


def quantized_reference(folder: str, settings: QuantSettings, dtype: torch.dtype, runner) -> list:
    """Our probe outputs on the written (unquantized) folder with its block linears quantized by llava-ln.

    Quantized from the weights in `dtype`, as transformers will quantize them, computing in `dtype`;
    every other weight is then compared in float32, as the fresh process loads it.
    """
    loaded = load_checkpoint(folder, dtype=dtype, attn_implementation=reference_attention())
    model = unwrap(loaded.model)
    quantize_llm_linears(model, settings, cpu_inference_layout=True)  # bitsandbytes' kernels, as transformers
    with torch.no_grad():
        for param in model.parameters():
            if param.is_floating_point():
                param.data = param.data.float()
    return runner(model)


def quantize_folder(folder: str, settings: QuantSettings, dtype: torch.dtype) -> None:
    """Rewrite the export's weights and config.json with transformers' 4-bit bitsandbytes serialization."""
    from transformers import LlavaForConditionalGeneration

    import_bitsandbytes()
    shell = config_only_model(folder)
    config = bitsandbytes_config(settings, dtype, skip_modules(shell))
    model = load_pretrained(LlavaForConditionalGeneration, folder, dtype=dtype, quantization_config=config)
    converted = sum(1 for m in model.modules() if type(m).__name__ == "Linear4bit")
    if converted != len(block_linears(shell)):
        raise LlavaLnError(f"{folder}: transformers quantized {converted} linear layers, llava-ln expected "
                           f"{len(block_linears(shell))} (the LLM's block linears)")
    save_pretrained(model, folder, safe_serialization=True)
    manifest = read_manifest(folder)
    manifest.quantization = settings.to_dict()
    write_manifest(folder, manifest)


def config_only_model(folder: str):
    """The folder's LlavaForConditionalGeneration from its config alone, on the meta device (no weights)."""
    from transformers import AutoConfig, LlavaForConditionalGeneration

    with torch.device("meta"):
        return LlavaForConditionalGeneration(load_pretrained(AutoConfig, folder))
