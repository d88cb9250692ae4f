"""Open the checkpoint that merge/export start from: a run folder, a checkpoint-<step>, or a merged folder.

A run folder is rebuilt as load_checkpoint does (base models + stage-1 connector + LoRA
adapter + trained tensors), after a header-only check of every stored tensor against the
base, so a checkpoint from another model fails with one line naming the tensor. A folder
that holds only DeepSpeed ZeRO shards is consolidated here (see zero.py). The base paths
recorded in the manifest can be overridden when the run was trained on another machine.
"""
import os
from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from llava_ln.checkpoint.loading import model_arguments_from
from llava_ln.checkpoint.manifest import Manifest, read_manifest
from llava_ln.checkpoint.run_io import STAGE1_CONNECTOR_STEM, TRAINED_STEM, apply_run
from llava_ln.checkpoint.tensors import tensor_files
from llava_ln.core.errors import LlavaLnError

PEFT_PREFIX = "base_model.model."


@dataclass
class BaseOverrides:
    """Flags that relocate the base models a run folder's manifest points at."""

    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Base LLM to use instead of the one recorded in the run's manifest."}
    )
    tokenizer_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Tokenizer to use instead of the recorded one (default: follows the LLM)."}
    )
    vision_tower: Optional[str] = field(
        default=None, metadata={"help": "Vision tower to use instead of the recorded one."}
    )

    def any(self) -> bool:
        return any((self.model_name_or_path, self.tokenizer_name_or_path, self.vision_tower))


@dataclass
class Source:
    path: str
    manifest: Manifest  # with overrides applied; a merged folder's "." paths made absolute
    model: object  # LlavaForConditionalGeneration, or a PeftModel around it for lora runs
    tokenizer: object

    @property
    def image_processor_path(self) -> str:
        return self.manifest.vision_tower


def reference_attention() -> str:
    """Attention for our side of merge/export: never FlashAttention-2, which has no float32 kernels.

    Verification runs in float32 (and transformers loads exports with SDPA by default), so
    "auto" is kept only where it cannot pick flash.
    """
    from llava_ln.model.attention import flash_attention_available

    return "sdpa" if flash_attention_available()[0] else "auto"


def effective_manifest(path: str, overrides: BaseOverrides | None = None) -> Manifest:
    manifest = read_manifest(path)
    overrides = overrides or BaseOverrides()
    if manifest.kind == "merged":
        if overrides.any():
            raise LlavaLnError(f"{path} is a merged checkpoint: it carries its own base, so "
                               "--model_name_or_path / --tokenizer_name_or_path / --vision_tower do not apply")
        here = os.path.abspath(path)
        return replace(manifest, **{k: here for k in ("llm", "tokenizer", "vision_tower")
                                    if getattr(manifest, k) == "."})
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


def load_source(path: str, overrides: BaseOverrides | None = None, dtype=torch.float32, device="cpu") -> Source:
    """Rebuild the model path describes, in eval mode, with clear errors for mismatching checkpoints."""
    from llava_ln.model.tokens import load_tokenizer

    if not os.path.isdir(path):
        raise LlavaLnError(f"--checkpoint {path}: no such folder")
    manifest = effective_manifest(path, overrides)
    if manifest.kind == "merged":
        from llava_ln.checkpoint.loading import load_checkpoint

        loaded = load_checkpoint(path, dtype=dtype, device=device, attn_implementation=reference_attention())
        return Source(path, manifest, loaded.model, loaded.tokenizer)
    tokenizer = load_tokenizer(manifest.tokenizer)
    model = _build_run_model(path, manifest, tokenizer, dtype)
    return Source(path, manifest, model.to(device).eval(), tokenizer)


def _build_run_model(path: str, manifest: Manifest, tokenizer, dtype):
    from llava_ln.export.validate import check_run_against_base
    from llava_ln.model.builder import build_mllm

    args = model_arguments_from(manifest, reference_attention())
    meta_model, spec = build_mllm(args, tokenizer, on_meta=True)
    if manifest.image_token_id is not None and spec.image_token_id != manifest.image_token_id:
        raise LlavaLnError(f"{path}: the tokenizer gives <image> id {spec.image_token_id}, the run used "
                           f"{manifest.image_token_id} (different tokenizer?)")
    has_tensors = bool(tensor_files(path, TRAINED_STEM))
    if has_tensors:
        check_run_against_base(path, manifest, meta_model)
    del meta_model
    model, _ = build_mllm(args, tokenizer, dtype=dtype)
    if has_tensors:
        return apply_run(model, path, manifest)
    from llava_ln.export.zero import zero_checkpoint_dir

    if zero_checkpoint_dir(path) is None:
        raise LlavaLnError(f"{path}: no {TRAINED_STEM}.safetensors and no DeepSpeed checkpoint "
                           "(incomplete run folder?)")
    return _apply_zero_checkpoint(model, path, manifest)


def _apply_zero_checkpoint(model, path: str, manifest: Manifest):
    """Apply consolidated DeepSpeed shards: the trained module is rebuilt exactly as training built it."""
    from llava_ln.checkpoint.apply import assign_tensors
    from llava_ln.checkpoint.connector_io import load_connector
    from llava_ln.export.zero import consolidate_zero_checkpoint
    from llava_ln.model.parts import unwrap
    from llava_ln.tuning.apply import apply_tune_mode
    from llava_ln.tuning.args import TuningArguments

    print(f"{path}: consolidating DeepSpeed ZeRO shards with DeepSpeed's zero_to_fp32 utilities")
    state = consolidate_zero_checkpoint(path)
    if tensor_files(path, STAGE1_CONNECTOR_STEM):
        load_connector(model, os.path.join(path, STAGE1_CONNECTOR_STEM + ".safetensors"))
    elif manifest.pretrain_mm_mlp_adapter and manifest.stage == 2:
        load_connector(model, manifest.pretrain_mm_mlp_adapter)
    lora = manifest.lora or {}
    tuning = TuningArguments(tune_mode=manifest.tune_mode, tune_embeddings=manifest.tune_embeddings,
                             lora_r=lora.get("r", 128), lora_alpha=lora.get("alpha", 256),
                             lora_dropout=lora.get("dropout", 0.0))
    model = apply_tune_mode(model, tuning)
    tensors = {name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name: t for name, t in state.items()}
    expected = {n for n, p in unwrap(model).named_parameters() if p.requires_grad}
    missing = sorted(expected - set(tensors))
    if missing:
        raise LlavaLnError(f"{path}: the DeepSpeed checkpoint lacks trained tensor {missing[0]} "
                           f"(saved by another --tune_mode or model?)")
    assign_tensors(model, tensors, source=path)
    return model
