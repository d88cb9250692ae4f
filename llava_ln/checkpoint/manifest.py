"""manifest.json: the single source of truth about what a checkpoint folder holds.

A training run writes one (run_manifest) from what was composed (the model spec), the data
format and the TuningPlan; loading, merge and export rebuild the model from it and never guess
from folder names.

Format 2 adds `files`: the sha256 of every file the manifest covers (checkpoint.integrity).
read_manifest checks every field's type, so a hand-edited or damaged manifest stops with one line
naming the field instead of failing later, deep inside loading.
"""
import os
from dataclasses import MISSING, asdict, dataclass, field, fields

from llava_ln import __version__
from llava_ln.checkpoint.integrity import check_digest_map
from llava_ln.core.atomic import write_json_atomic
from llava_ln.core.bounded_json import read_json_object
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.quantize import quant_settings
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.modes import TUNE_MODES
from llava_ln.tuning.vision_modes import FROZEN, VISION_TUNE_MODES

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 2  # 2: `files` (checksums)
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
    # The run started from a multimodal checkpoint, {"kind", "path"} (checkpoint.run_start); llm names it too.
    source: dict | None = None
    tune_connector: bool | None = None  # --tune_connector, when it overrode the mode
    files: dict = field(default_factory=dict)  # relative path -> sha256 of every covered file
    # {"bits", "quant_type", "double_quant"} when training saw the block linears quantized (--bits 4|8);
    # the folder still holds trained tensors only, applied to the unquantized base when loaded.
    quantization: dict | None = None
    # The vision tower's tuning: a tower that trains has its tensors in trained.safetensors (ln, full) or
    # in the PEFT adapter beside the LLM's (lora, with its own {"r", "alpha", "dropout"}).
    vision_tune_mode: str = FROZEN
    vision_tune_last_layers: int = 0
    vision_lora: dict | None = None
    # The tower's kind (its config's model_type): towers of two kinds can share every tensor name and shape
    # (CLIP's and SigLIP's encoder layers do), so only this tells a run's trained tensors from another tower's.
    # None in manifests written before it was recorded.
    vision_model_type: str | None = None
    format_version: int = FORMAT_VERSION
    llava_ln_version: str = __version__

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def has_adapter(self) -> bool:
        """The run folder holds a PEFT adapter (LoRA on the LLM, on the tower, or both)."""
        return self.lora is not None or self.vision_lora is not None


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
    payload = read_json_object(path)
    known = {f.name for f in fields(Manifest)}
    required = [f.name for f in fields(Manifest) if f.default is MISSING and f.default_factory is MISSING]
    absent = [name for name in required if name not in payload]
    if absent:
        raise LlavaLnError(f"{path} lacks required field(s): {', '.join(absent)}")
    version = payload.get("format_version", 1)
    if not _is_int(version) or version < 1:
        raise LlavaLnError(f"{path}: format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise LlavaLnError(f"{path} has format_version {version}; upgrade llava-ln to read it")
    if version >= 2 and "files" not in payload:
        raise LlavaLnError(f"{path} lacks required field(s): files")
    values = {k: v for k, v in payload.items() if k in known}
    values.setdefault("format_version", version)
    check_field_types(values, path)
    return Manifest(**values)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(check):
    return lambda value: value is None or check(value)


def _non_empty_str(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _lora(value) -> bool:
    return isinstance(value, dict) and _is_int(value.get("r")) and value["r"] > 0 and all(
        isinstance(value.get(k), (int, float)) and not isinstance(value.get(k), bool) for k in ("alpha", "dropout"))


def _tensor_entries(value) -> bool:
    """trained_tensors: {name: [dim, ..., dtype name]}."""
    return isinstance(value, dict) and all(
        isinstance(name, str) and isinstance(entry, list) and entry and isinstance(entry[-1], str)
        and all(_is_int(d) and d >= 0 for d in entry[:-1]) for name, entry in value.items())


# field -> (check, what the field must be)
_FIELD_CHECKS = {
    "kind": (lambda v: v in KINDS, f"one of {', '.join(KINDS)}"),
    "llm": (_non_empty_str, "a path or hub id"),
    "tokenizer": (_non_empty_str, "a path or hub id"),
    "vision_tower": (_non_empty_str, "a path or hub id"),
    "mm_projector_type": (_non_empty_str, "a connector type"),
    "mm_vision_select_layer": (_is_int, "an integer"),
    "mm_vision_select_feature": (_non_empty_str, "a string"),
    "tune_mode": (lambda v: v in TUNE_MODES, f"one of {', '.join(TUNE_MODES)}"),
    "conv_template": (_non_empty_str, "a template name"),
    "image_aspect_ratio": (_non_empty_str, "a string"),
    "tune_embeddings": (lambda v: isinstance(v, bool), "true or false"),
    "lora": (_optional(_lora), "null or {\"r\": int > 0, \"alpha\": number, \"dropout\": number}"),
    "stage": (lambda v: v in (1, 2) and _is_int(v), "1 or 2"),
    "pretrain_mm_mlp_adapter": (_optional(_non_empty_str), "null or a path"),
    "attn_implementation": (_non_empty_str, "a string"),
    "image_token_id": (_optional(lambda v: _is_int(v) and v >= 0), "null or a token id"),
    "num_image_tokens": (_optional(lambda v: _is_int(v) and v > 0), "null or a positive integer"),
    "global_step": (_optional(lambda v: _is_int(v) and v >= 0), "null or a step count"),
    "trained_tensors": (_tensor_entries, "an object of tensor name -> [dims..., dtype]"),
    "source": (_optional(lambda v: isinstance(v, dict) and all(isinstance(v.get(k), str) for k in ("kind", "path"))),
               "null or {\"kind\": str, \"path\": str}"),
    "tune_connector": (_optional(lambda v: isinstance(v, bool)), "null, true or false"),
    "vision_tune_mode": (lambda v: v in VISION_TUNE_MODES, f"one of {', '.join(VISION_TUNE_MODES)}"),
    "vision_tune_last_layers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "vision_lora": (_optional(_lora), "null or {\"r\": int > 0, \"alpha\": number, \"dropout\": number}"),
    "vision_model_type": (_optional(_non_empty_str), "null or a model_type"),
    "llava_ln_version": (lambda v: isinstance(v, str), "a string"),
}


def check_field_types(values: dict, where: str) -> None:
    """One line naming the first field whose value has the wrong type."""
    for name, (check, expected) in _FIELD_CHECKS.items():
        if name in values and not check(values[name]):
            shown = repr(values[name])
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise LlavaLnError(f"{where}: field {name!r} is {shown}, expected {expected}")
    if "files" in values:
        check_digest_map(values["files"], where)


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
        quantization=_quantization(model_args),
        vision_tune_mode=plan.vision_mode.name,
        vision_tune_last_layers=plan.vision_last_layers,
        vision_lora=plan.vision_lora.to_dict() if plan.vision_lora else None,
        vision_model_type=spec.vision_model_type,
    )


def _quantization(model_args) -> dict | None:
    settings = quant_settings(model_args.bits, model_args.quant_type, model_args.double_quant)
    return settings.to_dict() if settings else None


def tuning_arguments(manifest: Manifest) -> TuningArguments:
    """The TuningArguments that rebuild the run's trainable set (LoRA settings as the run had them)."""
    defaults = TuningArguments()
    lora = manifest.lora or {}
    vision_lora = manifest.vision_lora or {}
    dropout = lora.get("dropout", vision_lora.get("dropout", defaults.lora_dropout))  # one dropout for both
    return TuningArguments(tune_mode=manifest.tune_mode, tune_embeddings=manifest.tune_embeddings,
                           lora_r=lora.get("r", defaults.lora_r), lora_alpha=lora.get("alpha", defaults.lora_alpha),
                           lora_dropout=dropout, tune_connector=manifest.tune_connector,
                           vision_tune_mode=manifest.vision_tune_mode,
                           vision_tune_last_layers=manifest.vision_tune_last_layers,
                           vision_lora_r=vision_lora.get("r", defaults.vision_lora_r),
                           vision_lora_alpha=vision_lora.get("alpha", defaults.vision_lora_alpha))
