"""Merge: base LLM + vision tower + stage-1 connector + stage-2 tensors -> one standalone folder.

LoRA factors are folded into the weights with PEFT's merge_and_unload; norm, attention and
full-model deltas were already written into the rebuilt model by apply_run. The fold is
checked in-process (unmerged vs merged logits and greedy answers on the probes) before
anything is cast or written. See merged_io.py for the folder layout.
"""
import os
import tempfile
from dataclasses import dataclass, replace

import torch

from llava_ln.checkpoint.manifest import write_manifest
from llava_ln.core.atomic import atomic_directory
from llava_ln.core.errors import LlavaLnError
from llava_ln.export.merged_io import SELF, write_model_files, write_provenance
from llava_ln.export.source import BaseOverrides, Source, load_source
from llava_ln.model.parts import unwrap

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class MergeResult:
    output_dir: str
    dtype: torch.dtype
    non_native: list  # tensor names stored in non_native.safetensors
    folded_lora: bool


def resolve_dtype(name: str, source: Source) -> torch.dtype:
    """--dtype: float32 | bfloat16 | float16 | auto (the base LLM's own dtype, else float32)."""
    if name in DTYPES:
        return DTYPES[name]
    if name != "auto":
        raise LlavaLnError(f"--dtype {name!r} is not one of auto, {', '.join(DTYPES)}")
    recorded = getattr(unwrap(source.model).config.text_config, "dtype", None)
    if recorded is None:
        from transformers import AutoConfig

        recorded = getattr(AutoConfig.from_pretrained(source.manifest.llm), "dtype", None)
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


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    if not output_dir:
        raise LlavaLnError("--output_dir is required")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise LlavaLnError(f"--output_dir {output_dir} exists and is not empty; pass --overwrite true to replace it")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise LlavaLnError(f"--output_dir {output_dir} exists and is not a folder")


def fold_lora(source: Source, max_new_tokens: int = 4, log=print):
    """The plain Llava model of source, with LoRA merged in and the fold verified on the probes."""
    llava = unwrap(source.model)
    if llava is source.model:
        return llava, False
    from llava_ln.export.compare import Tolerance, compare_all
    from llava_ln.export.probes import default_probes, draw_probe_images
    from llava_ln.export.reference import OurPipeline, run_probes, stop_token_ids

    pipeline = OurPipeline(source.manifest, source.tokenizer, source.image_processor_path)
    probes = default_probes(source.manifest.conv_template)[:2]
    stops = stop_token_ids(generation_config_for(source))
    with tempfile.TemporaryDirectory() as image_dir:
        draw_probe_images(image_dir)
        before = run_probes(source.model, pipeline, probes, image_dir, max_new_tokens, stops)
        merged = source.model.merge_and_unload()
        after = run_probes(merged, pipeline, probes, image_dir, max_new_tokens, stops)
    others = [{"input_ids": o.input_ids, "pixel_values": o.pixel_values, "logits": o.logits,
               "generated": o.generated} for o in after]
    compare_all(before, others, Tolerance(), source.tokenizer, "LoRA fold (unmerged vs merged, float32)", log)
    return merged, True


def stop_ids_for(tokenizer, conv_template: str) -> list:
    """Token ids generation stops at: eos, and the template's end-of-turn token when it is a special token."""
    from llava_ln.data.templates import get_template

    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    end_of_turn = getattr(get_template(conv_template, tokenizer), "end_of_turn", None)
    if end_of_turn:
        ids = tokenizer.encode(end_of_turn, add_special_tokens=False)
        added = tokenizer.added_tokens_decoder.get(ids[0]) if len(ids) == 1 else None
        special = len(ids) == 1 and (ids[0] in tokenizer.all_special_ids or bool(added and added.special))
        if special and ids[0] not in stops:
            stops.append(ids[0])
    return stops


def generation_config_for(source: Source):
    """Greedy-by-default generation config that stops where our templates end a reply."""
    from transformers import GenerationConfig

    tokenizer = source.tokenizer
    stops = stop_ids_for(tokenizer, source.manifest.conv_template)
    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=stops if len(stops) != 1 else stops[0],
                            pad_token_id=tokenizer.pad_token_id, do_sample=False)


def merged_manifest(source: Source):
    """The source's manifest, now describing a self-contained folder."""
    return replace(source.manifest, kind="merged", llm=SELF, tokenizer=SELF, vision_tower=SELF, lora=None,
                   pretrain_mm_mlp_adapter=None, trained_tensors={})


def write_merged_folder(model, source: Source, directory: str) -> list:
    """Everything a merged folder holds (see merged_io.py); returns the non-native tensor names."""
    from llava_ln.data.images import load_image_processor

    non_native = write_model_files(model, directory, source.manifest.mm_projector_type)
    generation_config_for(source).save_pretrained(directory)
    source.tokenizer.save_pretrained(directory)
    load_image_processor(source.image_processor_path).save_pretrained(directory)
    write_provenance(directory, source.path, source.manifest)
    write_manifest(directory, merged_manifest(source))
    return non_native


def merge_checkpoint(checkpoint: str, output_dir: str, overrides: BaseOverrides | None = None,
                     dtype: str = "auto", overwrite: bool = False, device: str = "cpu", log=print) -> MergeResult:
    """`llava-ln merge`: write a standalone merged folder at output_dir (atomically)."""
    check_output_dir(output_dir, overwrite)
    source = load_source(checkpoint, overrides, dtype=torch.float32, device=device)
    if source.manifest.kind == "merged":
        raise LlavaLnError(f"{checkpoint} is already a merged checkpoint; nothing to merge")
    model, folded = fold_lora(source, log=log)
    target = resolve_dtype(dtype, source)
    cast_saved_tensors(model, target)
    with atomic_directory(output_dir) as tmp:
        non_native = write_merged_folder(model, source, tmp)
    return MergeResult(output_dir, target, non_native, folded)
