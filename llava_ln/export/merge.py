"""Merge: base LLM + vision tower + stage-1 connector + stage-2 tensors -> one standalone folder.

A run trained on a quantized base (--bits 4|8) is merged into the UNQUANTIZED base: the folder holds
full-precision weights (training saw their quantized version; merged_from.json keeps the run's
manifest, quantization included). `export --format hf --bits 4` writes a 4-bit folder instead.

LoRA factors are folded into the weights with PEFT's merge_and_unload (fold_lora, which `export
--format hf` uses too); norm, attention and full-model deltas were already written into the
rebuilt model when the run was opened. The fold is checked in-process (unmerged vs merged logits
and greedy answers on the probes) before anything is cast or written. The folder layout is
checkpoint/merged_folder.py's.
"""
import os
import tempfile
from dataclasses import dataclass, replace

import torch

from llava_ln.checkpoint.integrity import digests_of
from llava_ln.checkpoint.loading import (
    BaseOverrides,
    LoadedModel,
    effective_manifest,
    load_checkpoint,
    reference_attention,
)
from llava_ln.checkpoint.manifest import FORMAT_VERSION, write_manifest
from llava_ln.checkpoint.merged_folder import SELF, merged_weight_files, write_model_files, write_provenance
from llava_ln.checkpoint.tensor_checks import check_model_finite
from llava_ln.core.atomic import atomic_directory
from llava_ln.core.constants import DTYPES
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.paths import overlap
from llava_ln.core.pretrained import load_pretrained
from llava_ln.data.templates import get_template, stop_token_ids
from llava_ln.export.chat_templates import chat_template_for
from llava_ln.export.probes import ProbeRunner, default_probes, draw_probe_images
from llava_ln.export.quantized import note_unquantized_export
from llava_ln.export.verify import Tolerance, as_other_side, compare_all
from llava_ln.model.parts import unwrap
from llava_ln.tuning.vision_modes import FROZEN


@dataclass
class MergeResult:
    output_dir: str
    dtype: torch.dtype
    non_native: list  # tensor names stored in non_native.safetensors
    folded_lora: bool


def resolve_dtype(name: str, loaded: LoadedModel) -> torch.dtype:
    """--dtype: float32 | bfloat16 | float16 | auto (the base LLM's own dtype, else float32)."""
    if name in DTYPES:
        return DTYPES[name]
    if name != "auto":
        raise LlavaLnError(f"--dtype {name!r} is not one of auto, {', '.join(DTYPES)}")
    recorded = getattr(unwrap(loaded.model).config.text_config, "dtype", None)
    if recorded is None:
        from transformers import AutoConfig

        recorded = getattr(load_pretrained(AutoConfig, loaded.manifest.llm), "dtype", None)
    if isinstance(recorded, str):
        recorded = DTYPES.get(recorded)
    return recorded if recorded in DTYPES.values() else torch.float32


def cast_saved_tensors(model, dtype: torch.dtype):
    """Cast what save_pretrained writes (parameters, persistent float buffers) and nothing else.

    model.to(dtype) would also round non-persistent buffers such as rotary inv_freq, which
    are never saved and are rebuilt in float32 on load; rounding them here would make our
    in-memory model differ from every reloaded copy.
    """
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.to(dtype)
        for module in model.modules():
            skip = getattr(module, "_non_persistent_buffers_set", set())
            for name, buffer in list(module.named_buffers(recurse=False)):
                if buffer is not None and buffer.is_floating_point() and name not in skip:
                    setattr(module, name, buffer.to(dtype))
    return model


def input_folders(checkpoint: str, overrides: BaseOverrides | None = None) -> list:
    """(flag or field, path) of every local input of an export: the checkpoint and the bases it is built on."""
    inputs = [("the checkpoint", checkpoint)]
    if os.path.isdir(checkpoint) and os.path.isfile(os.path.join(checkpoint, "manifest.json")):
        manifest = effective_manifest(checkpoint, overrides)
        for name in ("llm", "tokenizer", "vision_tower", "pretrain_mm_mlp_adapter"):
            path = getattr(manifest, name)
            if path and os.path.exists(path):
                inputs.append((f"its {name}", path))
    return inputs


def check_output_dir(output_dir: str, overwrite: bool, checkpoint: str, overrides: BaseOverrides | None = None) -> None:
    """Refuse an output folder that exists (unless overwrite), is a file, or overlaps any input.

    Every export path calls this first: with --overwrite the output folder is replaced as a whole,
    so an output that is, contains or lies inside the checkpoint or a base model would delete it.
    """
    if not output_dir:
        raise LlavaLnError("--output_dir is required")
    for what, path in input_folders(checkpoint, overrides):
        relation = overlap(output_dir, path)
        if relation:
            raise LlavaLnError(f"--output_dir {output_dir} {relation} {what} ({path}); writing there would replace "
                               "it: choose a folder outside it")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise LlavaLnError(f"--output_dir {output_dir} exists and is not empty; pass --overwrite true to replace it")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise LlavaLnError(f"--output_dir {output_dir} exists and is not a folder")


def refuse_tuned_tower(export_format: str, checkpoint: str, manifest) -> None:
    """A PEFT adapter is applied to the plain base LLM, which has no vision tower: a tuned tower cannot ride along,
    and dropping it would hand the user a different model."""
    if manifest.vision_tune_mode != FROZEN:
        raise LlavaLnError(f"--format {export_format}: {checkpoint} tuned the vision tower (--vision_tune_mode "
                           f"{manifest.vision_tune_mode}), which an adapter for the base LLM cannot carry; use "
                           "--format hf or llava (or `llava-ln merge`)")


def fold_lora(loaded: LoadedModel, runner: ProbeRunner, before: list | None = None, log=print):
    """(plain Llava model, its probe outputs): LoRA merged in, the fold verified on the probes.

    A run without LoRA comes back as it is, with before as its outputs (None when not computed).
    before: the unmerged model's outputs, when the caller already has them.
    """
    llava = unwrap(loaded.model)
    if llava is loaded.model:
        return llava, before
    before = before if before is not None else runner(loaded.model)
    merged = loaded.model.merge_and_unload()
    after = runner(merged)
    compare_all(before, as_other_side(after), Tolerance(), loaded.tokenizer, "LoRA fold (unmerged vs merged, float32)",
                log)
    return merged, after


def generation_config_for(loaded: LoadedModel):
    """Greedy-by-default generation config that stops where our templates end a reply."""
    from transformers import GenerationConfig

    tokenizer = loaded.tokenizer
    stops = stop_token_ids(tokenizer, get_template(loaded.manifest.conv_template, tokenizer))
    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=stops if len(stops) != 1 else stops[0],
                            pad_token_id=tokenizer.pad_token_id, do_sample=False)


def merged_manifest(loaded: LoadedModel):
    """The source's manifest, now describing a self-contained folder."""
    return replace(loaded.manifest, kind="merged", llm=SELF, tokenizer=SELF, vision_tower=SELF, lora=None,
                   vision_lora=None, pretrain_mm_mlp_adapter=None, trained_tensors={}, files={}, format_version=FORMAT_VERSION,
                   source=None, quantization=None)


def write_merged_folder(model, loaded: LoadedModel, directory: str) -> list:
    """Everything a merged folder holds (checkpoint/merged_folder.py); returns the non-native tensor names."""
    from llava_ln.data.images import load_image_processor

    check_model_finite(model, f"{loaded.path}, merged")
    non_native = write_model_files(model, directory, loaded.manifest.mm_projector_type)
    generation_config_for(loaded).save_pretrained(directory)
    # The run's template as Jinja, so tokenizer.apply_chat_template on the folder renders what training saw.
    loaded.tokenizer.chat_template = chat_template_for(get_template(loaded.manifest.conv_template, loaded.tokenizer))
    loaded.tokenizer.save_pretrained(directory)
    load_image_processor(loaded.image_processor_path).save_pretrained(directory)
    write_provenance(directory, loaded.path, loaded.manifest)
    write_manifest(directory, replace(merged_manifest(loaded),
                                      files=digests_of(directory, merged_weight_files(directory))))
    return non_native


def merge_checkpoint(checkpoint: str, output_dir: str, overrides: BaseOverrides | None = None,
                     dtype: str = "auto", overwrite: bool = False, device: str = "cpu", log=print) -> MergeResult:
    """`llava-ln merge`: write a standalone merged folder at output_dir (atomically)."""
    check_output_dir(output_dir, overwrite, checkpoint, overrides)
    loaded = load_checkpoint(checkpoint, overrides, dtype=torch.float32, device=device,
                             attn_implementation=reference_attention())
    if loaded.manifest.kind == "merged":
        raise LlavaLnError(f"{checkpoint} is already a merged checkpoint; nothing to merge")
    note_unquantized_export(loaded.manifest, log)
    folded = unwrap(loaded.model) is not loaded.model
    with tempfile.TemporaryDirectory() as image_dir:
        draw_probe_images(image_dir)
        runner = ProbeRunner(loaded, default_probes(loaded.manifest.conv_template)[:2], image_dir, max_new_tokens=4)
        model, _ = fold_lora(loaded, runner, log=log)
    target = resolve_dtype(dtype, loaded)
    cast_saved_tensors(model, target)
    with atomic_directory(output_dir) as tmp:
        non_native = write_merged_folder(model, loaded, tmp)
    return MergeResult(output_dir, target, non_native, folded)
