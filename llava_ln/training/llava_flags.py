"""LLaVA's training flags on llava-ln: each works (an alias, or a no-op with its obvious meaning) or is refused.

translate_llava_flags(argv) rewrites a LLaVA command line into llava-ln's flags before parse_flags;
what it mapped, dropped and warned about is logged once logging is up and kept in run_config.json
under "llava_flags". Refusals are one line that says what to use (docs/training.md, "Porting a LLaVA
script", lists every flag).

Two decisions LLaVA makes implicitly are made explicit here:
  * the tune mode: LLaVA trains every LLM weight unless --lora_enable or --tune_mm_mlp_adapter says
    otherwise, so a command line without --tune_mode (or those two) gets `--tune_mode full`, with a
    warning that names --tune_mode ln as the paper's method;
  * where <image> goes: LLaVA moves it to the front of its turn (data.image_placement does that by
    default; --keep_image_placement true keeps the record's text).
After the tuning plan exists, warn_ineffective names every given flag that changes nothing in the
chosen mode (--lora_r without LoRA, --mm_projector_lr with a frozen connector, ...).
"""
import logging
import os
from dataclasses import MISSING, dataclass, field, fields

from llava_ln.core.errors import LlavaLnError
from llava_ln.data.args import DataArguments
from llava_ln.model.args import ModelArguments
from llava_ln.training.args import TrainingArguments
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.vision_modes import FROZEN

logger = logging.getLogger("llava_ln.train")

# --version -> (--conv_template, what differs from LLaVA's template, or "" when the text is identical).
VERSIONS = {
    "v1": ("vicuna_v1", ""),
    "vicuna_v1": ("vicuna_v1", ""),
    "plain": ("plain", ""),
    "v0_plain": ("plain", ""),
    "llava_v1": ("vicuna_v1", "LLaVA's llava_v1 system prompt says 'human' where vicuna_v1's says 'user'"),
    "llama_2": ("llama_2", "llava-ln's llama_2 system prompt replaces Meta's safety prompt"),
    "llava_llama_2": ("llama_2", "llava-ln's llama_2 system prompt is not LLaVA's 'helpful language and vision "
                                 "assistant' text"),
    "mistral_instruct": ("mistral", "LLaVA writes ' </s>' after a reply, llava-ln's mistral writes '</s>'"),
    "chatml_direct": ("chatml", "LLaVA's chatml_direct uses the system prompt 'Answer the questions.' and no newline "
                                "between turns"),
    "mistral_direct": ("chatml", "LLaVA's mistral_direct uses the system prompt 'Answer the questions.' and no "
                                 "newline between turns"),
    "llama3": ("llama_3", "llava-ln's llama_3 system prompt is its own"),
    "llava_llama_3": ("llama_3", "llava-ln's llama_3 system prompt is its own"),
}
REFUSED_VERSIONS = {
    "v0": "its '###' separators", "default": "its '###' separators", "llava_v0": "its '###' separators",
    "v0_mmtag": "<Image></Image> tags", "v1_mmtag": "<Image></Image> tags", "mpt": "MPT models",
}
TEMPLATE_CHOICES = "plain, vicuna_v1, llama_2, mistral, chatml, llama_3 or auto"
# LLaVA's train.py defaults (with transformers' TrainingArguments) for the flags whose llava-ln default
# differs; llava-ln's own are its dataclasses' (our_default). A LLaVA command line that leaves one out
# gets a warning naming both. docs/training.md quotes both lists.
LLAVA_DEFAULTS = {
    "mm_vision_select_layer": "-1", "mm_projector_type": "linear", "image_aspect_ratio": "square",
    "model_max_length": "512", "learning_rate": "5e-5", "lr_scheduler_type": "linear", "num_train_epochs": "3",
    "lora_r": "64", "lora_alpha": "16", "loss_weighting": "llava",
}
_FLAG_CLASSES = (ModelArguments, DataArguments, TuningArguments, TrainingArguments)
LORA_ONLY = ("lora_r", "lora_alpha")
ADAMW = ("adamw_torch", "adamw_torch_fused", "adamw_hf", "adamw")


def flag_text(value) -> str:
    """A default as a command line writes it: 2e-5, 1, -2, pad."""
    if isinstance(value, float):
        return f"{value:g}".replace("e-0", "e-")
    return str(value)


def our_default(name: str) -> str:
    """llava-ln's default for a train.py flag, read from the dataclass that declares it."""
    for flags_class in _FLAG_CLASSES:
        for spec in fields(flags_class):
            if spec.name == name and spec.default is not MISSING:
                return flag_text(spec.default)
    raise KeyError(name)


def _bool(flag: str, value) -> bool:
    text = "true" if value is None else str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "t"):
        return True
    if text in ("false", "0", "no", "n", "f"):
        return False
    raise LlavaLnError(f"--{flag} {value}: expected True or False")


@dataclass
class LlavaFlags:
    """What the translation did: the flags the user gave, and what became of each LLaVA flag."""

    explicit: set = field(default_factory=set)  # llava-ln flag names given directly or through an alias
    mapped: list = field(default_factory=list)  # {"given", "becomes", "note"}
    warnings: list = field(default_factory=list)
    cache_dir: str | None = None
    unset_defaults: list = field(default_factory=list)  # LLAVA_DEFAULTS a LLaVA command line left out

    def note(self, given: str, becomes: str, note: str = "") -> None:
        self.mapped.append({"given": given, "becomes": becomes, "note": note})

    def report(self, decided: dict | None = None) -> None:
        """Log the mapping (INFO) and the warnings; call once logging is configured.

        decided: flags a multimodal --model_name_or_path set (their defaults did not apply).
        """
        for name in self.unset_defaults:
            if name not in (decided or {}):
                theirs, ours = LLAVA_DEFAULTS[name], our_default(name)
                self.warnings.append(f"--{name} not given: llava-ln's default is {ours}, LLaVA's is {theirs}; pass "
                                     f"--{name} {theirs} for LLaVA's behaviour")
        for entry in self.mapped:
            logger.info("LLaVA flag %s -> %s%s", entry["given"], entry["becomes"] or "(no effect here)",
                        f" ({entry['note']})" if entry["note"] else "")
        for line in self.warnings:
            logger.warning("%s", line)

    def record(self) -> dict:
        return {"mapped": self.mapped, "warnings": self.warnings}

    def apply_cache_dir(self) -> None:
        """--cache_dir: where hub downloads go (transformers and huggingface_hub read it at call time)."""
        if self.cache_dir:
            from huggingface_hub import constants

            constants.HF_HUB_CACHE = os.path.abspath(self.cache_dir)
            os.environ["HF_HUB_CACHE"] = constants.HF_HUB_CACHE

    def warn_ineffective(self, plan, args) -> list:
        """Warn about each given flag the chosen mode ignores; returns the lines (also kept for run_config)."""
        lines = []
        if not plan.mode.uses_lora:
            # The tower's LoRA has its own rank and alpha but shares --lora_dropout (tuning.plan).
            shared = ("lora_dropout",) if plan.vision_mode.uses_lora else ()
            lines += [f"--{name} has no effect: --tune_mode {plan.mode.name} trains no LoRA"
                      for name in ("lora_r", "lora_alpha", "lora_dropout") if name in self.explicit
                      and name not in shared]
        if "mm_projector_lr" in self.explicit and not plan.trains_connector:
            lines.append(f"--mm_projector_lr has no effect: the connector is frozen in --tune_mode {plan.mode.name}")
        trains_norms = any(plan.group_of[n] == "llm_norms" for n in plan.trainable)
        if "norm_lr" in self.explicit and not trains_norms:
            lines.append(f"--norm_lr has no effect: no LLM norm trains in --tune_mode {plan.mode.name}")
        if not plan.vision_mode.uses_lora:
            lines += [f"--{name} has no effect: --vision_tune_mode {plan.vision_mode.name} trains no tower LoRA"
                      for name in ("vision_lora_r", "vision_lora_alpha") if name in self.explicit]
        if "mm_vision_tower_lr" in self.explicit and not plan.tower_trains:
            lines.append("--mm_vision_tower_lr has no effect: the vision tower is frozen (--vision_tune_mode frozen)")
        if "gradient_checkpointing_ratio" in self.explicit and not args.gradient_checkpointing:
            lines.append("--gradient_checkpointing_ratio has no effect without --gradient_checkpointing")
        for line in lines:
            logger.warning("%s", line)
        self.warnings += lines
        return lines


def _tokens(argv) -> list[tuple[str, list]]:
    """[(flag name or "", values)]: "--a=b" and "--a b" alike; a bare flag has no values."""
    items = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            name, sep, value = token[2:].partition("=")
            items.append((name, [value] if sep else []))
        elif items:
            items[-1][1].append(token)
        else:
            items.append(("", [token]))
    return items


def _one(name: str, values: list):
    if len(values) > 1:
        raise LlavaLnError(f"--{name}: one value expected, got {' '.join(values)}")
    return values[0] if values else None


def translate_llava_flags(argv) -> tuple[list, LlavaFlags]:
    """(llava-ln argv, LlavaFlags) for a command line that may use LLaVA's flag names."""
    flags = LlavaFlags()
    items = _tokens(list(argv))
    given = {name: _one(name, values) for name, values in items if name}
    out = []
    for name, values in items:
        if not name:
            out += values
            continue
        value = _one(name, values) if name in _RULES else None
        replacement = _RULES[name](flags, name, value, given) if name in _RULES else None
        if replacement is None:
            out += [f"--{name}", *values]
            flags.explicit.add(name)
        else:
            out += replacement
            flags.explicit.update(t[2:] for t in replacement if t.startswith("--"))
    if any(name in _RULES and name != "image_aspect_ratio" for name in given):  # a LLaVA command line
        lora = given.get("tune_mode") == "lora" or _bool("lora_enable", given.get("lora_enable", "false"))
        flags.unset_defaults = [name for name in LLAVA_DEFAULTS if name not in flags.explicit
                                and (lora or name not in LORA_ONLY)]
    if "tune_mode" not in flags.explicit:
        out += ["--tune_mode", "full"]
        flags.note("(no --tune_mode)", "--tune_mode full", "LLaVA trains every LLM weight unless told otherwise")
        flags.warnings.append("no --tune_mode given: training every LLM weight (--tune_mode full), as LLaVA's "
                              "finetune.sh does; pass --tune_mode ln for the paper's LayerNorm tuning")
    return out, flags


# ---- one rule per LLaVA flag: returns the llava-ln tokens, [] to drop it, or None to pass it through ----

def _version(flags, name, value, given):
    if value in REFUSED_VERSIONS:
        raise LlavaLnError(f"--version {value}: llava-ln has no template with {REFUSED_VERSIONS[value]}; use "
                           f"--conv_template ({TEMPLATE_CHOICES})")
    if value not in VERSIONS:
        raise LlavaLnError(f"--version {value!r} is not a LLaVA template llava-ln knows; use --conv_template "
                           f"({TEMPLATE_CHOICES})")
    template, difference = VERSIONS[value]
    if given.get("conv_template") not in (None, template):
        raise LlavaLnError(f"--version {value} means --conv_template {template}, but --conv_template "
                           f"{given['conv_template']} is also given; pass one of them")
    flags.note(f"--version {value}", f"--conv_template {template}", difference)
    if difference:
        flags.warnings.append(f"--version {value} -> --conv_template {template}: {difference}")
    return [] if "conv_template" in given else ["--conv_template", template]


def _mode_switch(mode: str):
    def rule(flags, name, value, given):
        if not _bool(name, value):
            flags.note(f"--{name} {value}", "")
            return []
        other = "tune_mm_mlp_adapter" if name == "lora_enable" else "lora_enable"
        if other in given and _bool(other, given[other]):
            raise LlavaLnError("--lora_enable True and --tune_mm_mlp_adapter True together train the connector alone "
                               "in LLaVA; pass --tune_mode connector (or --tune_mode lora)")
        if given.get("tune_mode") not in (None, mode):
            raise LlavaLnError(f"--{name} True means --tune_mode {mode}, but --tune_mode {given['tune_mode']} is also "
                               "given; pass one of them")
        flags.note(f"--{name} True", f"--tune_mode {mode}")
        return [] if "tune_mode" in given else ["--tune_mode", mode]
    return rule


def _freeze_connector(flags, name, value, given):
    if not _bool(name, value):
        flags.note(f"--{name} {value}", "")
        return []
    flags.note(f"--{name} True", "--tune_connector false")
    return ["--tune_connector", "false"]


def _false_only(what: str):
    def rule(flags, name, value, given):
        if _bool(name, value):
            raise LlavaLnError(f"--{name} True is not supported ({what}); LLaVA-1.5 sets it False")
        flags.note(f"--{name} False", "", "LLaVA-1.5's setting; nothing to do")
        return []
    return rule


def _value_only(allowed: tuple, what: str):
    def rule(flags, name, value, given):
        if value not in allowed:
            raise LlavaLnError(f"--{name} {value}: {what}")
        flags.note(f"--{name} {value}", "", "llava-ln's behaviour already")
        return []
    return rule


def _no_op(note: str):
    def rule(flags, name, value, given):
        flags.note(f"--{name} {value}" if value is not None else f"--{name}", "", note)
        return []
    return rule


def _refuse(instead: str):
    def rule(flags, name, value, given):
        raise LlavaLnError(f"--{name} is not supported; {instead}")
    return rule


def _unfreeze_tower(flags, name, value, given):
    """LLaVA-NeXT's switch for training the whole tower (at --mm_vision_tower_lr, a llava-ln flag of the same name)."""
    if "mm_tunable_parts" in given:
        # LLaVA-NeXT reads this switch only without --mm_tunable_parts; a contradiction between the two is refused.
        if _bool(name, value) != ("mm_vision_tower" in _tunable_parts(given["mm_tunable_parts"])):
            raise LlavaLnError(f"--{name} {value} contradicts --mm_tunable_parts {given['mm_tunable_parts']}; pass one "
                               "of them")
        flags.note(f"--{name} {value}", "", "--mm_tunable_parts decides the tower")
        return []
    if not _bool(name, value):
        flags.note(f"--{name} {value}", "", "the tower stays frozen, llava-ln's default")
        return []
    if given.get("vision_tune_mode") not in (None, "full"):
        raise LlavaLnError(f"--{name} True means --vision_tune_mode full, but --vision_tune_mode "
                           f"{given['vision_tune_mode']} is also given; pass one of them")
    flags.note(f"--{name} True", "--vision_tune_mode full")
    return [] if "vision_tune_mode" in given else ["--vision_tune_mode", "full"]


# LLaVA-NeXT's --mm_tunable_parts names what trains; each part becomes the llava-ln flag that owns it.
TUNABLE_PARTS = ("mm_language_model", "mm_mlp_adapter", "mm_vision_tower")


def _tunable_parts(value) -> set:
    parts = {part.strip() for part in str(value or "").split(",") if part.strip()}
    if "mm_vision_resampler" in parts:
        raise LlavaLnError("--mm_tunable_parts mm_vision_resampler: llava-ln's models have no vision resampler; "
                           f"use parts of {', '.join(TUNABLE_PARTS)}")
    unknown = sorted(parts - set(TUNABLE_PARTS))
    if unknown or not parts:
        raise LlavaLnError(f"--mm_tunable_parts {value!r}: expected a comma-separated list of "
                           f"{', '.join(TUNABLE_PARTS)}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return parts


def _mm_tunable_parts(flags, name, value, given):
    """LLaVA-NeXT's list of what trains: the LLM (--tune_mode), the connector, the tower (--vision_tune_mode full).

    LLaVA-NeXT ignores --tune_mm_mlp_adapter and --freeze_mm_mlp_adapter when this list is given, so
    both together are refused rather than silently resolved. An explicit --tune_mode (ln, lora, ...)
    or --lora_enable True decides how the LLM trains when mm_language_model is listed.
    """
    parts = _tunable_parts(value)
    for switch in ("tune_mm_mlp_adapter", "freeze_mm_mlp_adapter"):
        if switch in given and _bool(switch, given[switch]):
            raise LlavaLnError(f"--mm_tunable_parts and --{switch} True both say what trains (LLaVA-NeXT ignores the "
                               "second); pass one of them")
    lora = "lora_enable" in given and _bool("lora_enable", given["lora_enable"])
    out = []
    if "mm_language_model" in parts:
        if given.get("tune_mode") == "connector":
            raise LlavaLnError("--mm_tunable_parts lists mm_language_model, but --tune_mode connector freezes the "
                               "LLM; pass one of them")
        if "tune_mode" not in given and not lora:
            out += ["--tune_mode", "full"]  # LLaVA-NeXT trains every LLM weight
    else:
        if lora:
            raise LlavaLnError("--lora_enable True trains the LLM, but --mm_tunable_parts does not list "
                               "mm_language_model; pass one of them")
        if given.get("tune_mode") not in (None, "connector"):
            raise LlavaLnError(f"--mm_tunable_parts does not list mm_language_model (the LLM stays frozen), but "
                               f"--tune_mode {given['tune_mode']} trains it; pass one of them")
        if "tune_mode" not in given:
            out += ["--tune_mode", "connector"]  # only the connector and/or the tower train
    trains_connector = "mm_mlp_adapter" in parts
    if "tune_connector" in given:
        if _bool("tune_connector", given["tune_connector"]) != trains_connector:
            raise LlavaLnError(f"--tune_connector {given['tune_connector']} contradicts --mm_tunable_parts {value}; "
                               "pass one of them")
    else:
        out += ["--tune_connector", "true" if trains_connector else "false"]
    if "mm_vision_tower" in parts:
        if given.get("vision_tune_mode") not in (None, "full"):
            raise LlavaLnError(f"--mm_tunable_parts lists mm_vision_tower (the whole tower), but --vision_tune_mode "
                               f"{given['vision_tune_mode']} is also given; pass one of them")
        if "vision_tune_mode" not in given:
            out += ["--vision_tune_mode", "full"]
    elif given.get("vision_tune_mode") not in (None, FROZEN):
        raise LlavaLnError(f"--mm_tunable_parts does not list mm_vision_tower (the tower stays frozen), but "
                           f"--vision_tune_mode {given['vision_tune_mode']} trains it; pass one of them")
    flags.note(f"--{name} {value}", " ".join(out), "the listed parts train, the others stay frozen")
    return out


def _group_by_length(flags, name, value, given):
    if not _bool(name, value):
        flags.note(f"--{name} {value}", "")
        return []
    flags.note("--group_by_length True", "--group_by_modality_length True",
               "batches of similar length, image and text-only samples apart")
    return [] if "group_by_modality_length" in given else ["--group_by_modality_length", "true"]


def _image_aspect_ratio(flags, name, value, given):
    if value == "anyres":
        raise LlavaLnError("--image_aspect_ratio anyres (LLaVA-NeXT tiling) is not supported; use pad")
    return None


def _cache_dir(flags, name, value, given):
    flags.cache_dir = value
    flags.note(f"--cache_dir {value}", "", "Hugging Face hub downloads go there")
    return []


def _eval_strategy(flags, name, value, given):
    flags.note(f"--eval_strategy {value}", f"--evaluation_strategy {value}")
    return ["--evaluation_strategy", str(value)]


_RULES = {
    "version": _version,
    "lora_enable": _mode_switch("lora"),
    "tune_mm_mlp_adapter": _mode_switch("connector"),
    "freeze_mm_mlp_adapter": _freeze_connector,
    "mm_use_im_start_end": _false_only("llava-ln has no image start/end tokens"),
    "mm_use_im_patch_token": _false_only("llava-ln adds only the <image> token"),
    "mm_patch_merge_type": _value_only(("flat",), "only flat (LLaVA-1.5) is supported"),
    "lora_bias": _value_only(("none",), "llava-ln's LoRA trains no biases; use none"),
    "lora_weight_path": _value_only(("",), "start from a run folder instead (--model_name_or_path RUN)"),
    "optim": _value_only(ADAMW, "llava-ln trains with AdamW (torch); use adamw_torch"),
    # --eval_steps is llava-ln's own flag (evaluation during training with --eval_benchmarks; alone it does nothing).
    "per_device_eval_batch_size": _no_op("llava-ln's in-training evaluation batch is --eval_batch_size"),
    "eval_strategy": _eval_strategy,
    "remove_unused_columns": _no_op("llava-ln's collator builds the batch itself"),
    "is_multimodal": _no_op("llava-ln is always multimodal"),
    "mpt_attn_impl": _no_op("MPT models are not supported; the flag changes nothing"),
    "group_by_length": _group_by_length,
    "image_aspect_ratio": _image_aspect_ratio,
    "cache_dir": _cache_dir,
    "freeze_backbone": _refuse("use --tune_mode connector (only the connector trains) or ln_simple"),
    "unfreeze_mm_vision_tower": _unfreeze_tower,
    "mm_tunable_parts": _mm_tunable_parts,
    "fsdp": _refuse("use --deepspeed zero_configs/zero3.json"),
    "fsdp_config": _refuse("use --deepspeed zero_configs/zero3.json"),
}
