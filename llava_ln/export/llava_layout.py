"""`export --format llava`: original LLaVA's layout (LlavaLlamaForCausalLM / LlavaMistralForCausalLM), verified.

  OUT/
    config.json          the LLM's config plus LLaVA's keys: architectures, model_type llava_llama /
                         llava_mistral, mm_vision_tower, mm_hidden_size, mm_projector_type,
                         mm_vision_select_layer / _feature, mm_use_im_start_end false, image_aspect_ratio
    model.safetensors    the LLM's weights under its own names (model.*, lm_head.*) and the connector as
                         LLaVA's nn.Sequential (model.mm_projector.0 / .2 / ...; a `linear` one is
                         model.mm_projector.weight); sharded with model.safetensors.index.json when large
    tokenizer files      without `<image>` when llava-ln added it (LLaVA splices image features at its
                         placeholder id -200; the added embedding row is dropped with it)
    vision_tower/        only when the tower has no checkpoint of its own to name (it came inside a LLaVA
                         folder, or the run tuned it: --vision_tune_mode): mm_vision_tower then points
                         here, as an absolute path

LLaVA's own code (llava.model.builder.load_pretrained_model, with "llava" in the folder name) and
llava-ln (as --model_name_or_path) load it. The template is not part of LLaVA's format: pass the
matching --conv-mode / --version (`vicuna_v1` for LLaVA-1.5). Verification reads the folder back
as an original-LLaVA source (model.llava_checkpoints) and compares logits and greedy answers with the model
on the probes, over the vocabulary LLaVA's model has.
"""
import gc
import json
import os
import tempfile

import torch

from llava_ln.checkpoint.loading import effective_manifest, load_checkpoint, reference_attention
from llava_ln.checkpoint.run_start import build_start_model, resolve_start
from llava_ln.checkpoint.tensor_checks import check_model_finite
from llava_ln.checkpoint.tensors import ShardedTensorWriter
from llava_ln.core.atomic import atomic_directory
from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.pretrained import load_pretrained
from llava_ln.core.saving import save_pretrained
from llava_ln.data.args import DataArguments
from llava_ln.export.merge import cast_saved_tensors, check_output_dir, fold_lora, resolve_dtype
from llava_ln.export.probes import ProbeRunner, default_probes, draw_probe_images
from llava_ln.export.verify import ExportSettings, as_other_side, compare_all
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import VISION_FAMILIES
from llava_ln.model.parts import unwrap
from llava_ln.tuning.vision_modes import FROZEN

ARCHITECTURES = {"llama": ("LlavaLlamaForCausalLM", "llava_llama"), "mistral": ("LlavaMistralForCausalLM", "llava_mistral")}
ASPECT_RATIOS = ("pad", "square")  # LLaVA's own image modes that llava-ln's reproduce exactly
TOWER_FOLDER = "vision_tower"


def refuse_unexpressible(manifest, text_model_type: str) -> None:
    if text_model_type not in ARCHITECTURES:
        raise LlavaLnError(f"--format llava: LLaVA has no class for a {text_model_type} LLM (only "
                           f"{', '.join(ARCHITECTURES)}); use --format hf")
    if manifest.image_aspect_ratio not in ASPECT_RATIOS:
        raise LlavaLnError(f"--format llava: --image_aspect_ratio {manifest.image_aspect_ratio} has no LLaVA "
                           f"equivalent (LLaVA squares with {' or '.join(ASPECT_RATIOS)}); use --format hf or merge")


def llava_state_dict(model, projector_type: str, keep_rows: int) -> dict:
    """LLaVA's tensor names for our model's LLM and connector (the tower is loaded by name, not stored)."""
    llava = unwrap(model)
    tensors = {f"model.{n}": t for n, t in llava.model.language_model.state_dict().items()}
    tensors.update({f"lm_head.{n}": t for n, t in llava.lm_head.state_dict().items()})
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        tensors[name] = tensors[name][:keep_rows]
    for name, value in llava.model.multi_modal_projector.state_dict().items():
        layer, kind = name.split(".")
        index = int(layer.removeprefix("linear_")) - 1
        tensors["model.mm_projector." + (kind if projector_type == "linear" else f"{2 * index}.{kind}")] = value
    return {n: t.detach().contiguous() for n, t in tensors.items()}


def _added_image_row(tokenizer_path: str, image_token_id: int, rows: int) -> bool:
    """Whether `<image>` is a row llava-ln appended (the source tokenizer does not have it)."""
    from transformers import AutoTokenizer

    raw = load_pretrained(AutoTokenizer, tokenizer_path)
    return IMAGE_TOKEN not in raw.get_vocab() and image_token_id == rows - 1 == len(raw)


def _tower_name(manifest, model, output_dir: str, folder: str, log) -> str:
    """mm_vision_tower: the tower's own checkpoint, or a copy written beside the weights (a tuned tower's
    weights are no longer those of any checkpoint LLaVA could name)."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(manifest.vision_tower)
    except (OSError, ValueError):
        config = {}
    tuned = manifest.vision_tune_mode != FROZEN
    if config.get("model_type") in VISION_FAMILIES and not tuned:
        return manifest.vision_tower
    from llava_ln.data.images import load_image_processor

    save_pretrained(unwrap(model).model.vision_tower, os.path.join(folder, TOWER_FOLDER), safe_serialization=True)
    tower_processor = load_image_processor(manifest.vision_tower)
    if type(tower_processor).__name__.startswith("Llava"):
        from transformers import CLIPImageProcessor

        tower_processor = CLIPImageProcessor(**{k: v for k, v in tower_processor.to_dict().items()
                                                if k not in ("do_pad", "image_processor_type", "processor_class")})
    tower_processor.save_pretrained(os.path.join(folder, TOWER_FOLDER))
    target = os.path.join(os.path.abspath(output_dir), TOWER_FOLDER)
    why = (f"the run tuned the vision tower (--vision_tune_mode {manifest.vision_tune_mode})" if tuned
           else f"the vision tower came inside {manifest.vision_tower}")
    log(f"  {why}; written to {target} (mm_vision_tower)")
    return target


def llava_config(model, manifest, tower: str, rows: int) -> dict:
    text = unwrap(model).config.text_config
    architecture, model_type = ARCHITECTURES[text.model_type]
    config = text.to_dict()
    config.update(architectures=[architecture], model_type=model_type, vocab_size=rows, mm_vision_tower=tower,
                  mm_hidden_size=unwrap(model).config.vision_config.hidden_size,
                  mm_projector_type=manifest.mm_projector_type, mm_vision_select_layer=manifest.mm_vision_select_layer,
                  mm_vision_select_feature=manifest.mm_vision_select_feature, mm_use_im_start_end=False,
                  mm_use_im_patch_token=False, mm_patch_merge_type="flat", image_aspect_ratio=manifest.image_aspect_ratio,
                  use_mm_proj=True, tune_mm_mlp_adapter=False, freeze_mm_mlp_adapter=False, tie_word_embeddings=False)
    for key in ("_name_or_path", "transformers_version"):
        config.pop(key, None)
    return config


def export_llava(checkpoint: str, output_dir: str, overrides=None, settings: ExportSettings | None = None,
                 log=print) -> str:
    settings = settings or ExportSettings()
    check_output_dir(output_dir, settings.overwrite, checkpoint, overrides)
    loaded = load_checkpoint(checkpoint, overrides, dtype=torch.float32, device=settings.device,
                             attn_implementation=reference_attention())
    manifest = loaded.manifest
    refuse_unexpressible(manifest, unwrap(loaded.model).config.text_config.model_type)
    target = resolve_dtype(settings.dtype, loaded)
    with tempfile.TemporaryDirectory() as work:
        draw_probe_images(work)
        probes = default_probes(manifest.conv_template)
        rows = unwrap(loaded.model).get_input_embeddings().weight.shape[0]
        image_id = unwrap(loaded.model).config.image_token_id
        keep = rows - 1 if _added_image_row(effective_manifest(checkpoint, overrides).tokenizer, image_id, rows) else rows
        runner = ProbeRunner(loaded, probes, work, settings.max_new_tokens, vocab_limit=keep)
        model, _ = fold_lora(loaded, runner, log=log)
        cast_saved_tensors(model, target)
        check_model_finite(model, f"{checkpoint}, exported")
        with atomic_directory(output_dir) as folder:
            tower = _tower_name(manifest, model, output_dir, folder, log)
            writer = ShardedTensorWriter(folder, "model")
            for name, value in sorted(llava_state_dict(model, manifest.mm_projector_type, keep).items()):
                writer.add(name, value)
            writer.close()
            with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
                json.dump(llava_config(model, manifest, tower, keep), handle, indent=2, sort_keys=True)
            _save_tokenizer(folder, loaded, effective_manifest(checkpoint, overrides).tokenizer, keep < rows)
            if settings.verify:
                reference = runner(cast_saved_tensors(model, torch.float32))
                del model
                gc.collect()
                _verify(folder, manifest, runner, reference, loaded.tokenizer, settings.tolerance, log)
    template = ("the tokenizer's own chat template" if manifest.conv_template == "auto"
                else f"--conv-mode {manifest.conv_template}")
    log(f"wrote {output_dir} in original LLaVA's layout; prompt it with {template} (LLaVA), or start a llava-ln run "
        "from it (--model_name_or_path)")
    return output_dir


def _save_tokenizer(folder: str, loaded, tokenizer_path: str, drop_image: bool) -> None:
    if not drop_image:
        loaded.tokenizer.save_pretrained(folder)
        return
    from transformers import AutoTokenizer

    load_pretrained(AutoTokenizer, tokenizer_path).save_pretrained(folder)


def _verify(folder: str, manifest, runner, reference, tokenizer, tolerance, log) -> None:
    model_args = ModelArguments(model_name_or_path=folder, attn_implementation=reference_attention())
    resolve_start(model_args, DataArguments(conv_template=manifest.conv_template), {"conv_template"})
    tower_copy = os.path.join(folder, TOWER_FOLDER)
    if os.path.isdir(tower_copy):
        model_args.vision_tower = tower_copy  # the config names its final place, which does not exist yet
    reread, _ = build_start_model(model_args, tokenizer, torch.float32)
    compare_all(reference, as_other_side(runner(reread.eval())), tolerance, tokenizer,
                "the written folder read back as an original LLaVA checkpoint vs the model", log)
