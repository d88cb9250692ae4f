"""Stage 1 / stage 2 specifics: the starting connector, what the run folder must carry, its manifest.

Stage 2 starts from the stage-1 connector (--pretrain_mm_mlp_adapter: the safetensors file
or the stage-1 run folder). It is loaded before the strategy wraps the model (so shapes are
checked on whole tensors, and a mismatch names the tensor); once the strategy exists, the
fp32 file values are written into the masters as well, so neither bf16 loading nor
DeepSpeed's bf16 module turns them into rounded copies. When the run does not train the
connector (ln_simple, or lora without it), its values are stored in the run folder as
stage1_connector.safetensors, so the folder alone rebuilds the model.
"""
import os

import torch

from llava_ln.checkpoint.connector_io import CONNECTOR_PREFIX, load_connector, load_connector_tensors
from llava_ln.checkpoint.manifest import Manifest
from llava_ln.model.parts import unwrap
from llava_ln.tuning.modes import get_tune_mode, resolve_tune_embeddings


def connector_parameters(model) -> dict:
    return {n: p for n, p in unwrap(model).named_parameters() if n.startswith(CONNECTOR_PREFIX)}


def load_stage1_connector(model, path: str | None) -> dict | None:
    """Load the stage-1 connector into the model; return its exact (file) values, or None without a path."""
    if not path:
        return None
    load_connector(model, path)
    return {k: v.float() for k, v in load_connector_tensors(path).items() if k in connector_parameters(model)}


def restore_exact_connector(strategy, model, values: dict | None) -> None:
    """After the strategy set up its masters: put the fp32 file values into trainable connector masters."""
    if not values:
        return
    for name, param in connector_parameters(model).items():
        if param.requires_grad:
            strategy.set_master(param, values[name])


def frozen_connector_values(model, loaded: dict | None) -> dict | None:
    """The connector to store beside a run that does not train it (None when it trains)."""
    params = connector_parameters(model)
    if any(p.requires_grad for p in params.values()):
        return None
    if loaded:
        return loaded
    return {n: p.detach().float().cpu().clone() for n, p in params.items()}


def run_stage(tune_mode: str, pretrain_adapter: str | None) -> int:
    return 1 if tune_mode == "connector" and not pretrain_adapter else 2


def build_manifest(spec, model_args, data_args, tuning_args, args) -> Manifest:
    mode = get_tune_mode(tuning_args.tune_mode)
    tune_embeddings = resolve_tune_embeddings(mode, tuning_args.tune_embeddings)
    tokenizer = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    adapter = args.pretrain_mm_mlp_adapter
    return Manifest(
        kind="trained",
        llm=spec.llm,
        tokenizer=os.path.abspath(tokenizer) if os.path.isdir(tokenizer) else tokenizer,
        vision_tower=spec.vision_tower,
        mm_projector_type=spec.mm_projector_type,
        mm_vision_select_layer=spec.mm_vision_select_layer,
        mm_vision_select_feature=spec.mm_vision_select_feature,
        tune_mode=mode.name,
        conv_template=data_args.conv_template,
        image_aspect_ratio=data_args.image_aspect_ratio,
        tune_embeddings=tune_embeddings,
        lora=({"r": tuning_args.lora_r, "alpha": tuning_args.lora_alpha, "dropout": tuning_args.lora_dropout}
              if mode.uses_lora else None),
        stage=run_stage(mode.name, adapter),
        pretrain_mm_mlp_adapter=os.path.abspath(adapter) if adapter else None,
        attn_implementation=spec.attn_implementation,
        image_token_id=spec.image_token_id,
        num_image_tokens=spec.num_image_tokens,
    )


def final_tensor_dtype(tune_mode: str, precision) -> torch.dtype:
    """fp32 masters for partial modes (small); the 16-bit compute dtype for full finetuning (7B: 13.5 GB)."""
    return precision.compute_dtype if tune_mode == "full" else torch.float32
