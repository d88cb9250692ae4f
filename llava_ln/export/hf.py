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

The processor: llava-ln squares an image (--image_aspect_ratio) and then runs the vision tower's
own image processor. transformers' LlavaImageProcessor expresses the same steps: `do_pad` is
LLaVA-1.5's pad-to-square with the mean colour, followed by the CLIP-style resize / centre-crop /
normalise copied from the tower's processor; `square` is the same without the padding; `resize`
(stretch to a square) is a height x width resize. `crop` (centre square first, then resize) has no equivalent, since LlavaImageProcessor
resizes before it crops, and is refused. The processor expands each `<image>` into as many tokens
as the tower yields features (patch_size, num_additional_image_tokens: 1 for a CLS token, and
vision_feature_select_strategy). Its config is written as JSON and loaded back through
AutoImageProcessor, so the folder names the class and transformers picks its backend itself, as
it will for every user of the folder.
"""
import gc
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import torch

from llava_ln.checkpoint.loading import effective_manifest, load_checkpoint, reference_attention
from llava_ln.checkpoint.merged_folder import drop_zero_biases, export_blockers, non_native_parameters
from llava_ln.core.atomic import atomic_directory
from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.pretrained import load_pretrained
from llava_ln.data.images import load_image_processor, processor_side
from llava_ln.data.templates import get_template
from llava_ln.export.chat_templates import chat_template_for
from llava_ln.export.merge import cast_saved_tensors, check_output_dir, fold_lora, resolve_dtype, write_merged_folder
from llava_ln.export.probes import ProbeRunner, default_probes, draw_probe_images, hf_messages
from llava_ln.export.quantized import (
    export_quant_settings,
    note_unquantized_export,
    quantize_folder,
    quantized_reference,
)
from llava_ln.export.verify import ExportSettings, VerificationError, compare_all, probe_results, run_child
from llava_ln.model.backbones import vision_family_of
from llava_ln.model.connector import NATIVE_PROJECTOR_TYPE


@dataclass
class ExportResult:
    output_dir: str
    dtype: torch.dtype
    verified: bool
    transformers_version: str | None = None
    comparisons: list = field(default_factory=list)
    quantization: object = None  # QuantSettings of a --bits 4 export


def refuse_unexpressible(manifest) -> None:
    """Refuse, before anything heavy is loaded, what the native classes cannot reproduce."""
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


def export_hf(checkpoint: str, output_dir: str, overrides=None, settings: ExportSettings | None = None,
              log=print) -> ExportResult:
    settings = settings or ExportSettings()
    check_output_dir(output_dir, settings.overwrite, checkpoint, overrides)
    refuse_unexpressible(effective_manifest(checkpoint, overrides))
    quantization = export_quant_settings(settings.bits, effective_manifest(checkpoint, overrides))  # --bits 4
    loaded = load_checkpoint(checkpoint, overrides, dtype=torch.float32, device=settings.device,
                             attn_implementation=reference_attention())
    manifest, tokenizer = loaded.manifest, loaded.tokenizer
    if quantization is None:
        note_unquantized_export(manifest, log)
    chat_template = chat_template_for(get_template(manifest.conv_template, tokenizer))
    probes = default_probes(manifest.conv_template)
    target = resolve_dtype(settings.dtype, loaded)

    with tempfile.TemporaryDirectory() as work:
        image_paths = draw_probe_images(os.path.join(work, "images"))
        image_dir = os.path.dirname(next(iter(image_paths.values())))

        ours = ProbeRunner(loaded, probes, image_dir, settings.max_new_tokens)
        reference = ours(loaded.model) if settings.verify else None
        model, reference = fold_lora(loaded, ours, before=reference, log=log)
        loaded.model = None
        blockers = export_blockers(model, manifest.mm_projector_type)
        if blockers:
            raise LlavaLnError(f"cannot export {checkpoint} to LlavaForConditionalGeneration: {blockers[0]}")
        drop_zero_biases(model, non_native_parameters(model, manifest.mm_projector_type))
        cast_saved_tensors(model, target)

        with atomic_directory(output_dir) as folder:
            write_merged_folder(model, loaded, folder)
            write_processor(folder, tokenizer, load_image_processor(loaded.image_processor_path),
                            manifest.image_aspect_ratio, model.config, chat_template)
            if not settings.verify:
                if quantization is not None:
                    quantize_folder(folder, quantization, target)
                log(f"wrote {output_dir} (verification skipped: --verify false)")
                return ExportResult(output_dir, target, verified=False, quantization=quantization)
            if target != torch.float32:
                rounded = ours(cast_saved_tensors(model, torch.float32))
                _log_rounding(reference, rounded, target, log)
                reference = rounded
            del model
            gc.collect()
            try:
                result = _verify_in_fresh_process(folder, probes, image_dir, reference, manifest, tokenizer,
                                                  settings, work, log)
                if quantization is not None:  # then the same folder with 4-bit block linears, verified again
                    reference = quantized_reference(folder, quantization, target, ours)
                    quantize_folder(folder, quantization, target)
                    log(f"  stored the LLM's block linears as {quantization.describe()} (transformers' bitsandbytes)")
                    result = _verify_in_fresh_process(folder, probes, image_dir, reference, manifest, tokenizer,
                                                      settings, work, log)
                    result.quantization = quantization
            except VerificationError:
                _keep_unverified(folder, output_dir, log)
                raise
    result.output_dir, result.dtype = output_dir, target
    return result


def _verify_in_fresh_process(folder, probes, image_dir, reference, manifest, tokenizer, settings, work, log):
    as_parts = manifest.conv_template != "auto"  # a tokenizer's own template may not know content parts
    spec = {
        "kind": "hf",
        "folder": folder,
        "device": settings.device,
        "max_new_tokens": settings.max_new_tokens,
        "probes": [{"name": p.name, "messages": hf_messages(p, as_parts),
                    "images": [os.path.join(image_dir, f) for f in p.images]} for p in probes],
    }
    tensors, summary = run_child(spec, work, "export verification")
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


# ---- the processor ----

BICUBIC = 3
_COPIED = ("do_resize", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")


def llava_image_processor_config(tower_processor, aspect_ratio: str) -> dict:
    """preprocessor_config.json for LlavaImageProcessor reproducing llava-ln's image pipeline."""
    tower = tower_processor.to_dict()
    side = processor_side(tower_processor)
    if not side:
        raise LlavaLnError(f"cannot tell the output size of the vision tower's image processor ({tower})")
    config = {key: tower[key] for key in _COPIED if key in tower}
    config.update(image_processor_type="LlavaImageProcessor", do_convert_rgb=True, do_pad=aspect_ratio == "pad",
                  crop_size={"height": side, "width": side})
    if aspect_ratio in ("pad", "square"):
        config.update(size=tower.get("size"), do_center_crop=bool(tower.get("do_center_crop", False)))
    elif aspect_ratio == "resize":
        # llava-ln stretches to a square with a bicubic resize; the tower's own resize is then a no-op.
        config.update(size={"height": side, "width": side}, do_center_crop=False, resample=BICUBIC, do_resize=True)
    else:
        raise LlavaLnError(unexpressible_aspect_ratio(aspect_ratio))
    for key in ("image_mean", "image_std"):
        if key in config:
            config[key] = [float(v) for v in config[key]]
    return config


def unexpressible_aspect_ratio(aspect_ratio: str) -> str | None:
    """Why LlavaImageProcessor cannot reproduce this --image_aspect_ratio (None: it can)."""
    if aspect_ratio in ("pad", "resize", "square"):
        return None
    if aspect_ratio == "crop":
        # Measured: on a 30x44 image the two orders differ by up to 1.6 in normalised pixel units.
        return ("cannot export an --image_aspect_ratio crop model to the transformers-native format: "
                "llava-ln crops the centre square and then resizes, but LlavaImageProcessor can only resize and "
                "then crop, which samples other pixels; use `llava-ln merge` for a standalone llava-ln checkpoint")
    return f"--image_aspect_ratio {aspect_ratio!r} has no LlavaImageProcessor equivalent"


def num_additional_image_tokens(vision_config) -> int:
    """Positions the tower outputs besides patches: the CLS token of CLIP-like towers."""
    return 1 if vision_family_of(vision_config).has_cls_token else 0


def write_processor(directory: str, tokenizer, tower_processor, aspect_ratio: str, llava_config,
                    chat_template: str) -> None:
    """Write preprocessor_config.json, processor_config.json, the chat template and the tokenizer."""
    from transformers import AutoImageProcessor, LlavaProcessor

    with open(os.path.join(directory, "preprocessor_config.json"), "w", encoding="utf-8") as handle:
        json.dump(llava_image_processor_config(tower_processor, aspect_ratio), handle, indent=2, sort_keys=True)
    image_processor = load_pretrained(AutoImageProcessor, directory)
    tokenizer.chat_template = chat_template
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=llava_config.vision_config.patch_size,
        vision_feature_select_strategy=llava_config.vision_feature_select_strategy,
        chat_template=chat_template,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=num_additional_image_tokens(llava_config.vision_config),
    )
    processor.save_pretrained(directory)
