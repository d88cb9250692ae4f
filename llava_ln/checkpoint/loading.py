"""Load any llava-ln checkpoint for inference: a run folder (base + trained tensors) or a merged one."""
from dataclasses import dataclass

import torch

from llava_ln.checkpoint.manifest import Manifest, read_manifest
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.args import ModelArguments


@dataclass
class LoadedModel:
    model: object  # LlavaForConditionalGeneration, or a PeftModel around it for unmerged lora runs
    tokenizer: object
    manifest: Manifest


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


def load_checkpoint(path: str, dtype=torch.float32, device="cpu", attn_implementation: str | None = None) -> LoadedModel:
    """Rebuild the model a checkpoint folder describes, in eval mode on device."""
    from llava_ln.model.tokens import load_tokenizer

    manifest = read_manifest(path)
    if manifest.kind == "merged":
        # A merged folder is self-contained: "." paths in its manifest mean the folder itself.
        import os
        from dataclasses import replace

        from llava_ln.export.merged_io import load_merged_model, merged_image_token_check
        from llava_ln.model.attention import resolve_attn_implementation

        here = os.path.abspath(path)
        manifest = replace(manifest, **{k: here for k in ("llm", "tokenizer", "vision_tower")
                                        if getattr(manifest, k) == "."})
        tokenizer = load_tokenizer(path)
        attn = resolve_attn_implementation(attn_implementation or "auto")
        model = load_merged_model(path, manifest.mm_projector_type, dtype=dtype, attn_implementation=attn)
        merged_image_token_check(path, model, tokenizer)
    else:
        from llava_ln.checkpoint.run_io import apply_run
        from llava_ln.model.builder import build_mllm

        tokenizer = load_tokenizer(manifest.tokenizer)
        model, spec = build_mllm(model_arguments_from(manifest, attn_implementation), tokenizer, dtype=dtype)
        if manifest.image_token_id is not None and spec.image_token_id != manifest.image_token_id:
            raise LlavaLnError(
                f"{path}: the tokenizer gives <image> id {spec.image_token_id}, the run used "
                f"{manifest.image_token_id} (different tokenizer?)"
            )
        model = apply_run(model, path, manifest)
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, manifest=manifest)
