"""Open any llava-ln checkpoint folder as a model: a run folder, a checkpoint-<step>, or a merged folder.

A run folder is rebuilt from its manifest: base LLM + vision tower, or the multimodal checkpoint the run
started from (checkpoint.run_start; checked first, on the meta device,
against every stored tensor's header, so a checkpoint from another model fails with one line naming
the tensor), then the stage-1 connector, the LoRA adapter and the trained tensors; the files are first
checked against the manifest's checksums, and the manifest against them. A folder that holds
only DeepSpeed ZeRO shards is consolidated on the way (zero_shards.py). A merged folder is
self-contained. The base paths a run's manifest records can be overridden (BaseOverrides) when the run
was trained on another machine. Evaluation, merge and export all open checkpoints here.
"""
import os
from dataclasses import dataclass, replace

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from llava_ln.checkpoint.integrity import verify_files
from llava_ln.checkpoint.manifest import Manifest, read_manifest, tuning_arguments
from llava_ln.checkpoint.merged_folder import SELF, load_merged_model, merged_image_token_check, merged_weight_files
from llava_ln.checkpoint.run_folder import (
    TRAINED_STEM,
    apply_run,
    check_run_against_base,
    load_run_connector,
    verify_run_files,
)
from llava_ln.checkpoint.tensors import assign_tensors, tensor_files
from llava_ln.core.constants import strip_peft_prefix
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.args import BaseOverrides, ModelArguments
from llava_ln.model.backbones import flash_attention_available, load_tokenizer, resolve_attn_implementation
from llava_ln.model.parts import unwrap
from llava_ln.model.quantize import QuantSettings, quantize_llm_linears


@dataclass
@dataclass(kw_only=True)
class LoadedModel:
    path: str
    manifest: Manifest  # overrides applied; a merged folder's "." paths made absolute
    model: nn.Module  # LlavaForConditionalGeneration, or a PeftModel around it for unmerged lora runs
    tokenizer: PreTrainedTokenizerBase

    @property
    def image_processor_path(self) -> str:
        return self.manifest.vision_tower


def reference_attention() -> str:
    """Attention for a reference copy of the model: never FlashAttention-2, which has no float32 kernels.

    Verification runs in float32 (and transformers loads exports with SDPA by default), so "auto" is
    kept only where it cannot pick flash.
    """
    return "sdpa" if flash_attention_available()[0] else "auto"


def model_arguments_from(manifest: Manifest, attn_implementation: str | None = None) -> ModelArguments:
    return ModelArguments(
        model_name_or_path=manifest.llm,
        tokenizer_name_or_path=manifest.tokenizer,
        vision_tower=manifest.vision_tower,
        mm_vision_select_layer=manifest.mm_vision_select_layer,
        mm_vision_select_feature=manifest.mm_vision_select_feature,
        mm_projector_type=manifest.mm_projector_type,
        attn_implementation=attn_implementation or "auto",
    )


def effective_manifest(path: str, overrides: BaseOverrides | None = None) -> Manifest:
    """The folder's manifest with the base paths as they are to be used here."""
    manifest = read_manifest(path)
    overrides = overrides or BaseOverrides()
    if manifest.kind == "merged":
        if overrides.any():
            raise LlavaLnError(f"{path} is a merged checkpoint: it carries its own base, so "
                               "--model_name_or_path / --tokenizer_name_or_path / --vision_tower do not apply")
        here = os.path.abspath(path)
        return replace(manifest, **{k: here for k in ("llm", "tokenizer", "vision_tower")
                                    if getattr(manifest, k) == SELF})
    changes = {}
    if overrides.model_name_or_path:
        changes["llm"] = overrides.model_name_or_path
        if manifest.tokenizer == manifest.llm:
            changes["tokenizer"] = overrides.model_name_or_path
    if overrides.tokenizer_name_or_path:
        changes["tokenizer"] = overrides.tokenizer_name_or_path
    if overrides.vision_tower:
        changes["vision_tower"] = overrides.vision_tower
    return replace(manifest, **changes)


def load_checkpoint(path: str, overrides: BaseOverrides | None = None, *, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu", attn_implementation: str | None = None,
                    quantization: QuantSettings | None = None) -> LoadedModel:
    """Rebuild the model a checkpoint folder describes, in eval mode on device.

    quantization: quantize the base's block linears (on device) before a run's tensors and LoRA adapter
    are applied, as a --bits run trained; None (default) rebuilds the unquantized base, which is what
    merge and export write.
    """
    if not os.path.isdir(path):
        raise LlavaLnError(f"{path}: no such checkpoint folder")
    manifest = effective_manifest(path, overrides)
    tokenizer = load_tokenizer(manifest.tokenizer)
    if manifest.kind == "merged":
        # Every weight file present and every one the manifest lists: an unlisted or a missing one is an error.
        verify_files(path, manifest, merged_weight_files(path) + list(manifest.files))
        attn = resolve_attn_implementation(attn_implementation or "auto")
        model = load_merged_model(path, manifest.mm_projector_type, dtype=dtype, attn_implementation=attn)
        merged_image_token_check(path, model, tokenizer)
        quantize_llm_linears(model, quantization, device)
    else:
        model = _build_run_model(path, manifest, tokenizer, dtype=dtype, attn_implementation=attn_implementation,
                                 quantization=quantization, device=device)
    model.to(device).eval()
    return LoadedModel(path=path, manifest=manifest, model=model, tokenizer=tokenizer)


def _build_run_model(path: str, manifest: Manifest, tokenizer: PreTrainedTokenizerBase, *, dtype: torch.dtype,
                     attn_implementation: str | None, quantization: QuantSettings | None,
                     device: str | torch.device) -> nn.Module:
    from llava_ln.checkpoint.run_start import build_start_model

    args = model_arguments_from(manifest, attn_implementation)
    meta_model, spec = build_start_model(args, tokenizer, dtype, on_meta=True)
    if manifest.image_token_id is not None and spec.image_token_id != manifest.image_token_id:
        raise LlavaLnError(f"{path}: the tokenizer gives <image> id {spec.image_token_id}, the run used "
                           f"{manifest.image_token_id} (different tokenizer?)")
    if manifest.vision_model_type not in (None, spec.vision_model_type):
        raise LlavaLnError(f"{path}: the run trained with a {manifest.vision_model_type} vision tower, but "
                           f"{manifest.vision_tower} is a {spec.vision_model_type} (checkpoint from another model, or "
                           "a different --vision_tower?)")
    has_tensors = bool(tensor_files(path, TRAINED_STEM))
    verify_run_files(path, manifest)
    if has_tensors:
        check_run_against_base(path, manifest, meta_model)
    del meta_model
    model, _ = build_start_model(args, tokenizer, dtype)
    quantize_llm_linears(model, quantization, device)
    if has_tensors:
        return apply_run(model, path, manifest)
    from llava_ln.checkpoint.zero_shards import zero_checkpoint_dir

    if zero_checkpoint_dir(path) is None:
        raise LlavaLnError(f"{path}: no {TRAINED_STEM}.safetensors and no DeepSpeed checkpoint "
                           "(incomplete run folder?)")
    return _apply_zero_checkpoint(model, path, manifest)


def _apply_zero_checkpoint(model, path: str, manifest: Manifest):
    """Apply consolidated DeepSpeed shards: the trained module is rebuilt exactly as training built it."""
    from llava_ln.checkpoint.zero_shards import consolidate_zero_checkpoint
    from llava_ln.tuning.plan import apply_tune_mode

    print(f"{path}: consolidating DeepSpeed ZeRO shards (read as plain tensors, never unpickled)")
    state = consolidate_zero_checkpoint(path)
    load_run_connector(model, path, manifest)
    model, plan = apply_tune_mode(model, tuning_arguments(manifest))
    tensors = {strip_peft_prefix(name): t for name, t in state.items()}
    missing = sorted(plan.trainable - set(tensors))
    if missing:
        raise LlavaLnError(f"{path}: the DeepSpeed checkpoint lacks trained tensor {missing[0]} "
                           f"(saved by another --tune_mode or model?)")
    assign_tensors(unwrap(model), tensors, source=path)
    return model
