"""--model_name_or_path as a multimodal checkpoint: which layout it is, what its config says, its backbones.

Two layouts besides a plain causal LM are read here (a llava-ln run or merged folder is recognised
by its manifest one layer up, in checkpoint.run_start):

  hf_llava   transformers' LlavaForConditionalGeneration folder (llava-hf models, and our exports):
             config.json with text_config + vision_config; the vision tower, connector and LLM all
             live in the folder's weights, `<image>` is already in the tokenizer.
  llava      original LLaVA (LlavaLlamaForCausalLM / LlavaMistralForCausalLM, e.g. liuhaotian/llava-v1.5-7b):
             an LLM config with `mm_*` keys, the LLM's own weight names plus `model.mm_projector.*`
             (safetensors or .bin), and the vision tower NAMED in `mm_vision_tower` (LLaVA loads it from
             there, ignoring any tower weights in the checkpoint; --vision_tower overrides the name).

A Source answers config-level questions (the LLM's config, the tower's name or config, the connector
type, feature layer and selection, the image squaring the model was trained with) and loads the LLM
and, for hf_llava, the tower and connector, through transformers' own from_pretrained, so every
on-disk key format transformers knows is read. The original layout's `mm_projector` tensors are read
by checkpoint.run_start (tensor-only for .bin). What cannot be reproduced exactly (image start/end
tokens, LLaVA-NeXT's any-resolution tiling, a multi-layer feature selection, a non-GELU projector) is
refused with one line instead of being approximated.
"""
import os
from dataclasses import KW_ONLY, dataclass, field

import torch
from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig, PretrainedConfig

from llava_ln.core.bounded_json import JsonLimitError, read_json
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.pretrained import load_pretrained

HF_LLAVA = "hf_llava"
ORIGINAL_LLAVA = "llava"

# Original LLaVA's causal-LM classes and config model types -> the plain LLM's model type.
_ORIGINAL_ARCHITECTURES = {"LlavaLlamaForCausalLM": "llama", "LlavaMistralForCausalLM": "mistral",
                           "LlavaQwenForCausalLM": "qwen2", "LlavaMixtralForCausalLM": "mixtral"}
_ORIGINAL_MODEL_TYPES = {"llava": "llama", "llava_llama": "llama", "llava_mistral": "mistral", "llava_qwen": "qwen2",
                         "llava_mixtral": "mixtral"}
# Keys original LLaVA adds to the LLM's config (besides every mm_* key); none of them is the LLM's.
_ORIGINAL_EXTRA_KEYS = ("use_mm_proj", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter", "tune_mm_vision_resampler",
                        "unfreeze_mm_vision_tower", "image_aspect_ratio", "image_grid_pinpoints", "vision_tower",
                        "tokenizer_padding_side", "tokenizer_model_max_length", "architectures", "model_type",
                        "_name_or_path", "transformers_version")


def _raw_config(path: str) -> dict | None:
    """config.json as written (no class applied), or None when there is none to read."""
    try:
        config, _ = PretrainedConfig.get_config_dict(path)
    except (OSError, ValueError):
        return None
    return config


def _is_original(config: dict) -> bool:
    architectures = config.get("architectures") or []
    return "mm_vision_tower" in config or any(a in _ORIGINAL_ARCHITECTURES for a in architectures) or (
        config.get("model_type") in _ORIGINAL_MODEL_TYPES and "text_config" not in config and "mm_hidden_size" in config)


def _is_hf_llava(config: dict) -> bool:
    return config.get("model_type") == "llava" and "text_config" in config and "vision_config" in config


@dataclass
class Source:
    """A multimodal checkpoint given as --model_name_or_path (see the module docstring)."""

    kind: str
    path: str
    config: dict  # config.json as written
    _: KW_ONLY
    _loaded: dict = field(default_factory=dict, repr=False)  # hf_llava: the model, loaded once

    # ---- what the config says ----

    def record(self) -> dict:
        """What a manifest keeps to rebuild the start (the path absolute when it is a local folder)."""
        return {"kind": self.kind, "path": os.path.abspath(self.path) if os.path.isdir(self.path) else self.path}

    def text_config(self):
        if self.kind == HF_LLAVA:
            return self.llava_config().text_config
        model_type = self._original_llm_type()
        values = {k: v for k, v in self.config.items() if not k.startswith("mm_") and k not in _ORIGINAL_EXTRA_KEYS}
        return AutoConfig.for_model(model_type, **values)

    def llava_config(self):
        from transformers import LlavaConfig

        return LlavaConfig.from_dict(self.config)

    def vision_tower(self) -> str:
        """Where the tower is: the folder itself (hf_llava) or the checkpoint LLaVA names in mm_vision_tower."""
        if self.kind == HF_LLAVA:
            return self.path
        name = self.config.get("mm_vision_tower") or self.config.get("vision_tower")
        if not name:
            raise LlavaLnError(f"--model_name_or_path {self.path}: its config names no mm_vision_tower; pass --vision_tower")
        return name

    def settings(self) -> dict:
        """The model flags the checkpoint fixes: connector type, feature layer and selection."""
        if self.kind == HF_LLAVA:
            config = self.llava_config()
            layer = config.vision_feature_layer
            if not isinstance(layer, int):
                raise LlavaLnError(f"--model_name_or_path {self.path}: vision_feature_layer {layer} selects several "
                                   "layers; llava-ln builds single-layer features only")
            if config.projector_hidden_act != "gelu" or not getattr(config, "multimodal_projector_bias", True):
                raise LlavaLnError(f"--model_name_or_path {self.path}: its projector ({config.projector_hidden_act}, "
                                   f"bias {config.multimodal_projector_bias}) is not the mlp2x_gelu connector llava-ln builds")
            has_cls = getattr(config.vision_config, "model_type", "") in ("clip_vision_model", "clip")
            feature = "cls_patch" if config.vision_feature_select_strategy == "full" and has_cls else "patch"
            return {"mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": layer,
                    "mm_vision_select_feature": feature}
        self._refuse_unsupported_original()
        return {"mm_projector_type": self.config.get("mm_projector_type") or "linear",
                "mm_vision_select_layer": int(self.config.get("mm_vision_select_layer", -1)),
                "mm_vision_select_feature": self.config.get("mm_vision_select_feature") or "patch"}

    def image_aspect_ratio(self) -> str | None:
        """How the model's images were squared in training (None: the checkpoint does not say)."""
        if self.kind == ORIGINAL_LLAVA:
            # LLaVA's "square" (its default) lets the CLIP processor resize the short side and crop the centre.
            return {"pad": "pad", "square": "square"}.get(self.config.get("image_aspect_ratio") or "square")
        processor = model_json(self.path, "preprocessor_config.json")
        if processor is None:
            return None
        return "pad" if processor.get("do_pad") else "square"

    def image_token_id(self) -> int | None:
        if self.kind != HF_LLAVA:
            return None
        return self.llava_config().image_token_id

    def _original_llm_type(self) -> str:
        for architecture in self.config.get("architectures") or []:
            if architecture in _ORIGINAL_ARCHITECTURES:
                return _ORIGINAL_ARCHITECTURES[architecture]
        model_type = _ORIGINAL_MODEL_TYPES.get(self.config.get("model_type"))
        if model_type is None:
            raise LlavaLnError(f"--model_name_or_path {self.path}: original LLaVA checkpoint with architectures "
                               f"{self.config.get('architectures')}; supported: {', '.join(_ORIGINAL_ARCHITECTURES)}")
        return model_type

    def _refuse_unsupported_original(self) -> None:
        where = f"--model_name_or_path {self.path}"
        if self.config.get("mm_use_im_start_end"):
            raise LlavaLnError(f"{where}: trained with image start/end tokens (mm_use_im_start_end true), which llava-ln "
                               "does not build (LLaVA-1.5 checkpoints have it false)")
        merge = self.config.get("mm_patch_merge_type") or "flat"
        if merge != "flat" or (self.config.get("image_aspect_ratio") or "") == "anyres":
            raise LlavaLnError(f"{where}: LLaVA-NeXT any-resolution tiling (mm_patch_merge_type {merge}) is not "
                               "supported; llava-ln builds LLaVA-1.5's one-image-one-grid model")

    # ---- weights (through transformers' from_pretrained) ----

    def load_llm(self, dtype, attn_implementation: str, vision_attn: str = "sdpa"):
        """The LLM as a causal LM with the checkpoint's weights (hf_llava: the whole model is loaded here, once)."""
        if self.kind == HF_LLAVA:
            return self._llm_view(self._llava(dtype, attn_implementation, vision_attn))
        config = self.text_config()
        llm_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        with quiet_load_report():
            # mm_projector and any saved tower weights are not the LLM's: reported unexpected and skipped.
            try:
                return load_pretrained(llm_class, self.path, config=config, dtype=dtype,
                                                 attn_implementation=attn_implementation)
            except (OSError, ValueError) as err:
                raise LlavaLnError(f"--model_name_or_path {self.path}: cannot load the LLaVA checkpoint's LLM ({err})") \
                    from None

    def load_vision(self):
        """hf_llava: the folder's own vision tower (after load_llm)."""
        return self._loaded["model"].model.vision_tower

    def load_projector(self):
        """hf_llava: the folder's own connector, transformers' LlavaMultiModalProjector (after load_llm)."""
        return self._loaded["model"].model.multi_modal_projector

    def _llava(self, dtype, text_attn: str, vision_attn: str):
        """The whole LlavaForConditionalGeneration, loaded once; its parts are handed out."""
        if "model" not in self._loaded:
            from transformers import LlavaForConditionalGeneration

            attn = {"text_config": text_attn, "vision_config": vision_attn}
            with quiet_load_report():
                try:
                    self._loaded["model"] = load_pretrained(LlavaForConditionalGeneration,
                        self.path, dtype=dtype, attn_implementation=attn)
                except (OSError, ValueError) as err:
                    raise LlavaLnError(f"--model_name_or_path {self.path}: cannot load the LLaVA model ({err})") from None
        return self._loaded["model"]

    def _llm_view(self, llava):
        """A causal-LM wrapper (built on meta) around the loaded LLaVA's language model and head."""
        from transformers import AutoModelForCausalLM

        config = llava.config.text_config
        with torch.device("meta"):
            causal = AutoModelForCausalLM.from_config(config, attn_implementation=config._attn_implementation)
        setattr(causal, causal.base_model_prefix, llava.model.language_model)
        causal.set_output_embeddings(llava.lm_head)
        if any(t.is_meta for t in (*causal.parameters(), *causal.buffers())):
            raise LlavaLnError(f"--model_name_or_path {self.path}: its {type(causal).__name__} holds more than a "
                               "language model and a head; llava-ln cannot take it apart")
        return causal


def model_json(path: str, name: str) -> dict | None:
    """A model folder's JSON file as a dict; None when absent, not valid JSON or not an object (bounded read)."""
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        return None
    try:
        value = read_json(file, "model file")
    except JsonLimitError as err:
        if "not valid JSON" in str(err):
            return None  # not a layout we recognise; the loader that reads it says more
        raise
    return value if isinstance(value, dict) else None


def detect_source(path: str | None) -> Source | None:
    """The multimodal layout at path, or None for a plain causal LM (or nothing readable)."""
    if not path:
        return None
    config = _raw_config(path)
    if config is None:
        return None
    if _is_hf_llava(config):
        return Source(HF_LLAVA, path, config)
    if _is_original(config):
        if os.path.isfile(os.path.join(path, "non_lora_trainables.bin")):
            raise LlavaLnError(f"--model_name_or_path {path} is a LLaVA LoRA output folder (adapter + "
                               "non_lora_trainables.bin); merge it into its base first with LLaVA's "
                               "scripts/merge_lora_weights.py")
        return Source(ORIGINAL_LLAVA, path, config)
    return None


class quiet_load_report:
    """Hide transformers' load report, which lists the parts that are expected to be skipped."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self.previous)
        return False
