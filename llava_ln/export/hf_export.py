"""`export --format hf`: a LlavaForConditionalGeneration + LlavaProcessor folder, verified.

Steps: open the checkpoint (consolidating ZeRO shards if that is all there is), compute our
outputs on the probes, fold LoRA (checked), refuse what the native class cannot hold, cast
to --dtype, write the merged folder plus the processor, then load the written folder with
plain transformers in a fresh process and compare with our outputs. The folder appears at
--output_dir only when verification passes; a folder that fails is kept next to it as
OUTPUT.unverified for inspection, and the command exits non-zero.

Verification compares like with like: the weights transformers loads are the exact weights
we evaluate (after the same rounding to --dtype, computed in float32 on both sides), so its
tolerances are tight. How much the rounding itself moves the logits is reported separately.
"""
import gc
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import torch

from llava_ln.core.atomic import atomic_directory
from llava_ln.core.errors import LlavaLnError
from llava_ln.export.compare import Tolerance, VerificationError, compare_all
from llava_ln.model.connector import NATIVE_PROJECTOR_TYPE
from llava_ln.model.parts import unwrap


@dataclass
class ExportSettings:
    dtype: str = "auto"
    device: str = "cpu"
    verify: bool = True
    max_new_tokens: int = 8
    tolerance: Tolerance = field(default_factory=Tolerance)
    overwrite: bool = False


@dataclass
class ExportResult:
    output_dir: str
    dtype: torch.dtype
    verified: bool
    transformers_version: str | None = None
    comparisons: list = field(default_factory=list)


def refuse_unexpressible(manifest) -> None:
    """Refuse, before anything heavy is loaded, what the native classes cannot reproduce."""
    from llava_ln.export.hf_processor import unexpressible_aspect_ratio

    projector_type = manifest.mm_projector_type
    if projector_type != NATIVE_PROJECTOR_TYPE:
        raise LlavaLnError(
            f"cannot export a {projector_type} connector to the transformers-native format: "
            f"LlavaForConditionalGeneration has a fixed two-layer GELU projector ({NATIVE_PROJECTOR_TYPE}), so this "
            f"model would need custom code there; use `llava-ln merge` for a standalone llava-ln checkpoint, "
            f"or train with --mm_projector_type {NATIVE_PROJECTOR_TYPE}"
        )
    reason = unexpressible_aspect_ratio(manifest.image_aspect_ratio)
    if reason:
        raise LlavaLnError(reason)


def _as_other(outputs: list) -> list:
    return [{"input_ids": o.input_ids, "pixel_values": o.pixel_values, "logits": o.logits, "generated": o.generated}
            for o in outputs]


def export_hf(checkpoint: str, output_dir: str, overrides=None, settings: ExportSettings | None = None,
              log=print) -> ExportResult:
    from llava_ln.data.images import load_image_processor
    from llava_ln.data.templates import get_template
    from llava_ln.export.chat_templates import chat_template_for
    from llava_ln.export.hf_processor import write_processor
    from llava_ln.export.merge import (
        cast_saved_tensors,
        check_output_dir,
        generation_config_for,
        resolve_dtype,
        write_merged_folder,
    )
    from llava_ln.export.native import drop_zero_biases, export_blockers, non_native_parameters
    from llava_ln.export.probes import default_probes, draw_probe_images
    from llava_ln.export.reference import OurPipeline, run_probes, stop_token_ids
    from llava_ln.export.source import effective_manifest, load_source

    settings = settings or ExportSettings()
    check_output_dir(output_dir, settings.overwrite)
    refuse_unexpressible(effective_manifest(checkpoint, overrides))
    source = load_source(checkpoint, overrides, dtype=torch.float32, device=settings.device)
    manifest, tokenizer = source.manifest, source.tokenizer
    template = get_template(manifest.conv_template, tokenizer)
    chat_template = chat_template_for(template)
    pipeline = OurPipeline(manifest, tokenizer, source.image_processor_path)
    probes = default_probes(manifest.conv_template)
    stops = stop_token_ids(generation_config_for(source))
    target = resolve_dtype(settings.dtype, source)

    with tempfile.TemporaryDirectory() as work:
        image_paths = draw_probe_images(os.path.join(work, "images"))
        image_dir = os.path.dirname(next(iter(image_paths.values())))

        def ours(model):
            return run_probes(model, pipeline, probes, image_dir, settings.max_new_tokens, stops)

        reference = ours(source.model) if settings.verify else None
        model = unwrap(source.model)
        if model is not source.model:
            model = source.model.merge_and_unload()
            if settings.verify:
                merged = ours(model)
                compare_all(reference, _as_other(merged), settings.tolerance, tokenizer,
                            "LoRA fold (unmerged vs merged, float32)", log)
                reference = merged
        source.model = None
        blockers = export_blockers(model, manifest.mm_projector_type)
        if blockers:
            raise LlavaLnError(f"cannot export {checkpoint} to LlavaForConditionalGeneration: {blockers[0]}")
        drop_zero_biases(model, non_native_parameters(model, manifest.mm_projector_type))
        cast_saved_tensors(model, target)

        with atomic_directory(output_dir) as folder:
            write_merged_folder(model, source, folder)
            write_processor(folder, tokenizer, load_image_processor(source.image_processor_path),
                            manifest.image_aspect_ratio, model.config, chat_template)
            if not settings.verify:
                log(f"wrote {output_dir} (verification skipped: --verify false)")
                return ExportResult(output_dir, target, verified=False)
            if target != torch.float32:
                rounded = ours(cast_saved_tensors(model, torch.float32))
                _log_rounding(reference, rounded, target, log)
                reference = rounded
            del model
            gc.collect()
            try:
                result = _verify_in_fresh_process(folder, probes, image_dir, reference, manifest, tokenizer,
                                                  settings, work, log)
            except VerificationError:
                _keep_unverified(folder, output_dir, log)
                raise
    result.output_dir, result.dtype = output_dir, target
    return result


def _verify_in_fresh_process(folder, probes, image_dir, reference, manifest, tokenizer, settings, work, log):
    from llava_ln.export.child import probe_results, run_child
    from llava_ln.export.probes import hf_messages

    as_parts = manifest.conv_template != "auto"  # a tokenizer's own template may not know content parts
    spec = {
        "folder": folder,
        "device": settings.device,
        "max_new_tokens": settings.max_new_tokens,
        "probes": [{"name": p.name, "messages": hf_messages(p, as_parts),
                    "images": [os.path.join(image_dir, f) for f in p.images]} for p in probes],
    }
    tensors, summary = run_child("hf_child.py", spec, work, "export verification")
    others = probe_results(tensors, summary, [p.name for p in probes])
    what = (f"plain transformers {summary['transformers_version']} in a fresh process "
            f"({summary['model_class']} + {summary['processor_class']}/{summary['image_processor_class']}) "
            f"vs llava-ln's pipeline")
    comparisons = compare_all(reference, others, settings.tolerance, tokenizer, what, log)
    return ExportResult("", torch.float32, True, summary["transformers_version"], comparisons)


def _log_rounding(before: list, after: list, dtype, log) -> None:
    for a, b in zip(before, after):
        diff = float((a.logits - b.logits).abs().max())
        same = "same" if a.generated == b.generated else "differs"
        log(f"  rounding to {str(dtype).replace('torch.', '')}: {a.name:<12} max|dlogit| {diff:.3g}, greedy {same}")


def _keep_unverified(folder: str, output_dir: str, log) -> None:
    kept = output_dir.rstrip(os.sep) + ".unverified"
    if os.path.exists(kept):
        shutil.rmtree(kept)
    os.replace(folder, kept)
    log(f"the export that failed verification is kept at {kept} for inspection")
