"""What `llava-ln compare` trains: its runs (one per tuning mode, plus named variants) and their flags.

Every stage-2 run starts from the same stage-1 connector and reads the same data in the same order
(same seed, batch and step count); runs differ only in --tune_mode, in the mode's learning rates and,
for a variant, in the few settings it names.

Learning rates per mode, as train.py flags, are the recipe's (recipe.py: LLaVA-1.5-7B's, or the toy
world's). Each mode has a headline rate, the one `--lr MODE=RATE` sets (recipe.headline_rate): the norm
rate for ln and ln_simple, the base rate for the others (for lora, the LoRA factors').

Variants (`--variants`) are named runs that differ from a mode's run in a few settings, written
inline, `NAME=MODE key=value ...` separated by ";", or as a YAML / JSON file mapping names to
{"mode": MODE, key: value}. Keys: `data` (the stage-2 data: a toy mix such as conversation:300, or
--data_path's own syntax), `lr` (the headline rate), `steps` (stage-2 optimizer steps), and any
train.py flag without its dashes (norm_lr, mm_projector_lr, tune_embeddings, lora_r, num_train_epochs,
vision_tune_mode with mm_vision_tower_lr: the same LLM mode with its vision tower tuned).
"""
import os
import shlex
from dataclasses import dataclass, field

from llava_ln.core.bounded_json import MAX_DEPTH, METADATA_MAX_BYTES, depth_of, read_json, read_text
from llava_ln.core.errors import LlavaLnError
from llava_ln.experiments.recipe import Recipe, headline_rate
from llava_ln.tuning.modes import TUNE_MODES
from llava_ln.tuning.vision_modes import VISION_TUNE_MODES


@dataclass(kw_only=True)
class RunSpec:
    """One stage-2 training run of the comparison."""

    name: str
    mode: str
    rates: dict  # train.py rate flags -> value
    data: str | None = None  # None: the comparison's stage-2 data
    steps: int | None = None  # None: the comparison's step count
    flags: dict = field(default_factory=dict)  # any other train.py flag -> value
    variant_of: str | None = None  # the mode, for a variant

    def train_flags(self) -> list[str]:
        argv = ["--tune_mode", self.mode]
        for key, value in {**self.rates, **self.flags}.items():
            argv += [f"--{key}", _flag_value(value)]
        return argv


def _flag_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_rates(text: str) -> dict:
    """'ln=1e-2,lora=2e-4' -> {"ln": 0.01, "lora": 0.0002}."""
    rates = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        mode, sep, value = item.partition("=")
        if not sep or mode not in TUNE_MODES:
            raise LlavaLnError(f"--lr {item!r}: expected MODE=RATE with MODE one of {', '.join(TUNE_MODES)}")
        rates[mode] = _positive(value, f"--lr {item}")
    return rates


def _positive(value, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LlavaLnError(f"{where}: {value!r} is not a number") from None
    if number < 0:
        raise LlavaLnError(f"{where}: must not be negative")
    return number


def mode_rates(mode: str, recipe: Recipe, overrides: dict) -> dict:
    """The recipe's rates for the mode as train.py flags, its headline rate replaced when --lr names the mode."""
    rates = recipe.rates[mode].flags()
    if mode in overrides:
        rates[headline_rate(mode)] = overrides[mode]
    return rates


def mode_runs(modes: list, recipe: Recipe, overrides: dict) -> list[RunSpec]:
    for mode in modes:
        if mode not in TUNE_MODES:
            raise LlavaLnError(f"--modes: {mode!r} is not one of {', '.join(TUNE_MODES)}")
    if len(set(modes)) != len(modes):
        raise LlavaLnError(f"--modes {','.join(modes)}: a mode is listed twice")
    return [RunSpec(name=mode, mode=mode, rates=mode_rates(mode, recipe, overrides)) for mode in modes]


def parse_variants(text: str) -> dict:
    """{name: {"mode": MODE, key: value}} from the inline form or a .yaml/.yml/.json file."""
    if not text:
        return {}
    if text.endswith((".yaml", ".yml", ".json")):
        if not os.path.isfile(text):
            raise LlavaLnError(f"--variants {text}: no such file")
        if text.endswith(".json"):
            payload = read_json(text, "--variants")
        else:
            payload = _read_yaml(text)
        if not isinstance(payload, dict) or not all(isinstance(v, dict) for v in payload.values()):
            raise LlavaLnError(f"--variants {text}: expected a mapping of names to {{mode: ..., key: value}}")
        return {str(name): dict(values) for name, values in payload.items()}
    variants = {}
    for chunk in filter(None, (part.strip() for part in text.split(";"))):
        words = shlex.split(chunk)
        name, sep, mode = words[0].partition("=")
        if not sep or not name or not mode:
            raise LlavaLnError(f"--variants {chunk!r}: expected NAME=MODE key=value ...")
        values = {"mode": mode}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if not sep or not key:
                raise LlavaLnError(f"--variants {chunk!r}: {word!r} is not key=value")
            values[key] = value
        variants[name] = values
    return variants


def _read_yaml(path: str):
    """A variants YAML file, bounded as JSON files are: a regular file of metadata size, no aliases, shallow."""
    import yaml

    text = read_text(path, "--variants", METADATA_MAX_BYTES)
    try:
        # An alias repeats a node by reference; nested ones grow exponentially once walked (a "billion laughs").
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise LlavaLnError(f"--variants {path}: YAML aliases (*name) are not accepted; write each value out")
        payload = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise LlavaLnError(f"--variants {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if depth_of(payload) > MAX_DEPTH:
        raise LlavaLnError(f"--variants {path}: YAML nested more than {MAX_DEPTH} levels deep")
    return payload


def variant_runs(variants: dict, recipe: Recipe, overrides: dict, taken: set) -> list[RunSpec]:
    runs = []
    for name, values in variants.items():
        values = dict(values)
        mode = str(values.pop("mode", ""))
        where = f"--variants {name}"
        if mode not in TUNE_MODES:
            raise LlavaLnError(f"{where}: mode {mode!r} is not one of {', '.join(TUNE_MODES)}")
        if name in taken or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise LlavaLnError(f"{where}: the name must be new and use only letters, digits, '_', '-', '.'")
        taken.add(name)
        rates = mode_rates(mode, recipe, overrides)
        if "lr" in values:
            rates[headline_rate(mode)] = _positive(values.pop("lr"), f"{where} lr")
        for key in ("learning_rate", "norm_lr", "mm_projector_lr", "mm_vision_tower_lr"):
            if key in values:
                rates[key] = _positive(values.pop(key), f"{where} {key}")
        tower = values.get("vision_tune_mode")
        if tower is not None and tower not in VISION_TUNE_MODES:  # checked here, not hours later in its run
            raise LlavaLnError(f"{where}: vision_tune_mode {tower!r} is not one of {', '.join(VISION_TUNE_MODES)}")
        steps = values.pop("steps", None)
        runs.append(RunSpec(name=name, mode=mode, rates=rates, data=values.pop("data", None),
                            steps=int(_positive(steps, f"{where} steps")) if steps is not None else None,
                            flags=values, variant_of=mode))
    return runs
