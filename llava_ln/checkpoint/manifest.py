"""manifest.json: the single source of truth about what a checkpoint folder holds.

A training run writes one (run_manifest) from what was composed (the model spec), the data
format and the TuningPlan; loading, merge and export rebuild the model from it and never guess
from folder names.
"""
import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields

from llava_ln import __version__
from llava_ln.core.atomic import write_json_atomic
from llava_ln.core.errors import LlavaLnError
from llava_ln.tuning.args import TuningArguments

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
KINDS = ("trained", "merged")


@dataclass
class Manifest:
    """kind="trained": base models + trained tensors; kind="merged": a standalone Llava folder."""

    kind: str
    llm: str  # base LLM path or hub id
    tokenizer: str
    vision_tower: str
    mm_projector_type: str
    mm_vision_select_layer: int
    mm_vision_select_feature: str
    tune_mode: str
    conv_template: str
    image_aspect_ratio: str
    tune_embeddings: bool = False
    lora: dict | None = None  # {"r", "alpha", "dropout"} for lora runs
    stage: int = 2
    pretrain_mm_mlp_adapter: str | None = None
    attn_implementation: str = "auto"
    image_token_id: int | None = None
    num_image_tokens: int | None = None
    global_step: int | None = None
    trained_tensors: dict = field(default_factory=dict)  # name -> [shape..., dtype]
    # The run started from a multimodal checkpoint, {"kind", "path"} (checkpoint.llava_sources); llm names it too.
    source: dict | None = None
    tune_connector: bool | None = None  # --tune_connector, when it overrode the mode
    format_version: int = FORMAT_VERSION
    llava_ln_version: str = __version__

    def to_dict(self) -> dict:
        return asdict(self)


def write_manifest(directory: str, manifest: Manifest) -> str:
    if manifest.kind not in KINDS:
        raise ValueError(f"unknown manifest kind {manifest.kind!r}")
    path = os.path.join(directory, MANIFEST_NAME)
    write_json_atomic(path, manifest.to_dict())
    return path


def read_manifest(directory: str) -> Manifest:
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.exists(path):
        raise LlavaLnError(f"{directory} has no {MANIFEST_NAME}: not a llava-ln checkpoint folder")
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise LlavaLnError(f"{path} is not valid JSON ({err})") from None
    known = {f.name for f in fields(Manifest)}
    required = [f.name for f in fields(Manifest) if f.default is MISSING and f.default_factory is MISSING]
    absent = [name for name in required if name not in payload]
    if absent:
        raise LlavaLnError(f"{path} lacks required field(s): {', '.join(absent)}")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise LlavaLnError(f"{path} has format_version {payload['format_version']}; upgrade llava-ln to read it")
    return Manifest(**{k: v for k, v in payload.items() if k in known})


def _recorded(path: str | None) -> str | None:
    # Local folders are recorded absolute so a manifest still resolves from another cwd.
    return os.path.abspath(path) if path and os.path.exists(path) else path


def run_manifest(spec, model_args, data_args, plan, pretrain_adapter: str | None) -> Manifest:
    """The manifest of a training run: what was composed, the data format, and what the plan trains."""
    return Manifest(
        kind="trained",
        llm=spec.llm,
        tokenizer=_recorded(model_args.tokenizer_name_or_path or model_args.model_name_or_path),
        vision_tower=spec.vision_tower,
        mm_projector_type=spec.mm_projector_type,
        mm_vision_select_layer=spec.mm_vision_select_layer,
        mm_vision_select_feature=spec.mm_vision_select_feature,
        tune_mode=plan.mode.name,
        conv_template=data_args.conv_template,
        image_aspect_ratio=data_args.image_aspect_ratio,
        tune_embeddings=plan.tune_embeddings,
        lora=plan.lora.to_dict() if plan.lora else None,
        stage=plan.stage,
        pretrain_mm_mlp_adapter=_recorded(pretrain_adapter),
        attn_implementation=spec.attn_implementation,
        image_token_id=spec.image_token_id,
        num_image_tokens=spec.num_image_tokens,
        source=spec.source,
        tune_connector=None if plan.trains_connector == ("connector" in plan.mode.groups) else plan.trains_connector,
    )


def tuning_arguments(manifest: Manifest) -> TuningArguments:
    """The TuningArguments that rebuild the run's trainable set (LoRA settings as the run had them)."""
    defaults = TuningArguments()
    lora = manifest.lora or {}
    return TuningArguments(tune_mode=manifest.tune_mode, tune_embeddings=manifest.tune_embeddings,
                           lora_r=lora.get("r", defaults.lora_r), lora_alpha=lora.get("alpha", defaults.lora_alpha),
                           lora_dropout=lora.get("dropout", defaults.lora_dropout),
                           tune_connector=manifest.tune_connector)
