"""Apply a tuning mode and say what it decided: the TuningPlan every later step reads.

`apply_tune_mode` wraps the model with PEFT LoRA when the mode (or the tower's mode) asks for it, sets
requires_grad on every parameter (the only place in llava-ln that does), classifies the parameters
once, and returns a TuningPlan: the mode and stage, the tower's mode and scope, the trainable
parameter names per group, how they split into optimizer groups, the dtype trained tensors are saved
in, whether the LLM's linear layers stay frozen, and the LoRA settings (the LLM's and the tower's).
The optimizer, the run manifest, the checkpointer, merge and export take the plan instead of
re-deriving any of it from the mode's name.
"""
import contextlib
import logging
import re
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import check_flag_domains
from llava_ln.model.parts import decoder_layers_of, language_model_of, unwrap
from llava_ln.model.quantize import logical_numel, quantization_of
from llava_ln.tuning.args import TuningArguments, check_tuning_names
from llava_ln.tuning.groups import GROUPS, classify_parameters
from llava_ln.tuning.modes import TuneMode, get_tune_mode, refuse_on_quantized_base, resolve_tune_embeddings
from llava_ln.tuning.tower_scope import tower_lora_targets, tower_scope
from llava_ln.tuning.vision_modes import FROZEN, VISION_TUNE_MODES, VisionTuneMode, get_vision_tune_mode

logger = logging.getLogger(__name__)

_QV_NAMES = ("q_proj", "v_proj")
_MLP_NAMES = ("mlp", "feed_forward")
ADAPTER_GROUPS = ("lora", "vision_lora")  # PEFT factors: saved in the adapter, not in trained.safetensors
VISION_GROUPS = ("vision_norms", "vision_other", "vision_lora")
NORM_GROUPS = ("llm_norms", "vision_norms")  # never weight-decayed


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: int
    dropout: float

    def to_dict(self) -> dict:
        """The manifest's `lora` entry."""
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout}


@dataclass(frozen=True, kw_only=True)
class OptimizerGroup:
    """One optimizer parameter group: its role decides the learning rate, `decay` the weight decay."""

    name: str  # e.g. "norms_no_decay"
    # "connector" (--mm_projector_lr), "norms" (--norm_lr), "vision_norms" / "vision_lora" / "vision_other"
    # (--mm_vision_tower_lr) or "other" (--learning_rate)
    role: str
    decay: bool
    parameters: tuple  # names relative to the Llava model


@dataclass(frozen=True, kw_only=True)
class TuningPlan:
    mode: TuneMode
    stage: int  # 1: the connector alone from scratch; 2: instruction tuning (any mode)
    tune_embeddings: bool
    lora: LoraSettings | None
    group_of: dict  # every parameter name (relative to the Llava model) -> its group
    numel: dict  # every parameter name -> number of elements
    trainable: frozenset  # names of the parameters that train
    optimizer_groups: tuple  # OptimizerGroup, in a fixed order
    mm_projector_lr: float | None = None
    norm_lr: float | None = None
    vision_mode: VisionTuneMode = VISION_TUNE_MODES[FROZEN]
    vision_last_layers: int = 0  # --vision_tune_last_layers (0: every reachable encoder layer)
    vision_lora: LoraSettings | None = None
    mm_vision_tower_lr: float | None = None

    @property
    def lora_names(self) -> frozenset:
        """Trainable adapter tensors, the LLM's and the tower's (saved in the PEFT adapter, not in
        trained.safetensors)."""
        return frozenset(n for n in self.trainable if self.group_of[n] in ADAPTER_GROUPS)

    @property
    def has_adapter(self) -> bool:
        """The model is a PeftModel: LoRA on the LLM, on the tower, or both."""
        return self.lora is not None or self.vision_lora is not None

    @property
    def tower_trains(self) -> bool:
        return any(self.group_of[n] in VISION_GROUPS for n in self.trainable)

    @property
    def trains_connector(self) -> bool:
        return any(self.group_of[n] == "connector" for n in self.trainable)

    @property
    def llm_linears_frozen(self) -> bool:
        """No linear weight of the LLM's blocks trains (norm-only and LoRA modes)."""
        return not self.mode.trains_llm_linears

    def saved_dtype(self, compute_dtype: torch.dtype) -> torch.dtype:
        """dtype of trained.safetensors: fp32 masters, or the 16-bit compute dtype for full finetuning."""
        return compute_dtype if self.mode.saves_compute_dtype else torch.float32

    def counts(self) -> dict:
        """{group: {"total": n, "trainable": n}} over the nine groups."""
        counts = {group: {"total": 0, "trainable": 0} for group in GROUPS}
        for name, group in self.group_of.items():
            counts[group]["total"] += self.numel[name]
            if name in self.trainable:
                counts[group]["trainable"] += self.numel[name]
        return counts

    def param_groups(self, model, learning_rate: float, weight_decay: float) -> list[dict]:
        """The optimizer's parameter groups (tensors of model), each with its own lr and weight_decay.

        Plain dicts with a "name" key, so that a test (or a curious user) can check what DeepSpeed's
        optimizer really received.
        """
        params = dict(unwrap(model).named_parameters())
        rates = {"connector": self.mm_projector_lr, "norms": self.norm_lr, "other": None,
                 **{group: self.mm_vision_tower_lr for group in VISION_GROUPS}}
        groups = []
        for group in self.optimizer_groups:
            lr = rates[group.role] if rates[group.role] is not None else learning_rate
            groups.append({"name": group.name, "params": [params[n] for n in group.parameters], "lr": lr,
                           "weight_decay": weight_decay if group.decay else 0.0})
        return groups

    def table(self) -> str:
        """A plain-text table of parameters per group: total and trainable."""
        counts = self.counts()
        lines = [f"{'group':<14}{'total':>16}{'trainable':>16}"]
        for group in GROUPS:
            lines.append(f"{group:<14}{counts[group]['total']:>16,}{counts[group]['trainable']:>16,}")
        total = sum(c["total"] for c in counts.values())
        trained = sum(c["trainable"] for c in counts.values())
        pct = 100.0 * trained / total if total else 0.0
        lines.append(f"{'all':<14}{total:>16,}{trained:>16,}  ({pct:.4f}% trainable)")
        return "\n".join(lines)


def _block_prefixes(model) -> list[str]:
    """Names (relative to the Llava model) of the decoder blocks."""
    layers = decoder_layers_of(model)
    names = {id(m): n for n, m in unwrap(model).named_modules()}
    return [names[id(block)] for block in layers]


def _block_part_parameter_names(model, part: str) -> set[str]:
    """Parameters of q/v projections or of the MLP of every decoder block."""
    llava = unwrap(model)
    selected = set()
    for prefix in _block_prefixes(model):
        block = llava.get_submodule(prefix)
        children = dict(block.named_modules())
        if part == "attn_qv":
            hits = [n for n in children if n.rsplit(".", 1)[-1] in _QV_NAMES]
            if len(hits) != 2:
                raise LlavaLnError(
                    f"--tune_mode attn_qv: block {prefix} has no separate q_proj/v_proj "
                    f"({type(language_model_of(model)).__name__} fuses them); choose another mode"
                )
        else:
            hits = [n for n in children if n in _MLP_NAMES]
            if len(hits) != 1:
                raise LlavaLnError(f"--tune_mode attn_mlp: block {prefix} has no `mlp` submodule")
        for hit in hits:
            selected |= {f"{prefix}.{hit}.{p}" for p, _ in children[hit].named_parameters()}
    return selected


def lora_target_modules(model) -> list[str]:
    """Every nn.Linear inside the LLM's decoder blocks (q, k, v, o, gate, up, down, ...)."""
    llava = unwrap(model)
    targets = []
    for prefix in _block_prefixes(model):
        for name, module in llava.get_submodule(prefix).named_modules():
            if isinstance(module, nn.Linear):
                targets.append(f"{prefix}.{name}")
    return targets


def _wrap_lora(model, lora: LoraSettings | None, vision_lora: LoraSettings | None, vision_targets: list):
    """One PEFT adapter for the LLM's LoRA and the tower's: the tower's modules get their own rank and alpha
    (rank_pattern / alpha_pattern, each name escaped and anchored as PEFT matches it), the dropout is shared."""
    from peft import LoraConfig

    llm_targets = lora_target_modules(model) if lora else []
    for flag, settings, targets in (("lora_r", lora, llm_targets), ("vision_lora_r", vision_lora, vision_targets)):
        if settings:
            _warn_rank_above_layers(model, flag, settings.r, targets)
    main = lora or vision_lora
    patterns = {}
    if lora and vision_lora:
        patterns = {"rank_pattern": {re.escape(t): vision_lora.r for t in vision_targets},
                    "alpha_pattern": {re.escape(t): vision_lora.alpha for t in vision_targets}}
    config = LoraConfig(r=main.r, lora_alpha=main.alpha, lora_dropout=main.dropout,
                        target_modules=llm_targets + list(vision_targets), bias="none", **patterns)
    return wrap_peft(model, config)


def _warn_rank_above_layers(model, flag: str, rank: int, targets: list) -> None:
    """A LoRA rank above min(in, out) of every layer it adapts buys no expressiveness (a full-rank update needs
    no more), only parameters and optimizer state; PEFT accepts it, so say so instead of training it silently."""
    llava = unwrap(model)
    most = max((min(module.in_features, module.out_features) for module in map(llava.get_submodule, targets)),
               default=None)
    if most is not None and rank > most:
        logger.warning("--%s %d is above the rank any layer it adapts can have (%d at most): the factors then hold "
                       "more parameters than a full-rank update, and learn nothing more", flag, rank, most)


@contextlib.contextmanager
def quiet_peft_wrapping():
    """Around PEFT wrapping a model (get_peft_model, PeftModel.from_pretrained): without the FutureWarning
    transformers raises when PEFT reads the deprecated `is_gradient_checkpointing`, a read that is PEFT's own and
    whose value is unchanged."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def wrap_peft(model, config):
    """get_peft_model(model, config), quietly (quiet_peft_wrapping)."""
    from peft import get_peft_model

    with quiet_peft_wrapping():
        return get_peft_model(model, config)


def _optimizer_groups(group_of: dict, trainable: set, params: dict) -> tuple:
    """Trainable parameters by (role, decay): norms and biases never decay, as is customary for AdamW."""
    buckets: dict[tuple, list] = {}
    for name, group in group_of.items():
        if name not in trainable:
            continue
        role = {"connector": "connector", "llm_norms": "norms", **{g: g for g in VISION_GROUPS}}.get(group, "other")
        ndim = len(getattr(params[name], "ds_shape", params[name].shape))  # ZeRO-3 partitions report ds_shape
        decay = group not in NORM_GROUPS and not name.endswith(".bias") and ndim > 1
        buckets.setdefault((role, decay), []).append(name)
    return tuple(OptimizerGroup(name=f"{role}_{'decay' if decay else 'no_decay'}", role=role, decay=decay,
                                parameters=tuple(names))
                 for (role, decay), names in buckets.items())


def _trainable_names(model, mode: TuneMode, tune_embeddings: bool, group_of: dict,
                     tune_connector: bool | None = None, vision: tuple | None = None) -> set:
    """The mode's trainable names; tune_connector (when not None) overrides whether the connector trains.

    vision: (VisionTuneMode, TowerScope) of a tower that tunes; its groups train inside the scope only.
    """
    train_groups = set(mode.groups) | ({"embeddings", "lm_head"} if tune_embeddings else set())
    if tune_connector is not None:
        train_groups = (train_groups | {"connector"}) if tune_connector else (train_groups - {"connector"})
    trainable = {name for name, group in group_of.items() if group in train_groups}
    if mode.block_part:
        trainable |= _block_part_parameter_names(model, mode.block_part)
    if vision is not None:
        vision_mode, scope = vision
        trainable |= {name for name, group in group_of.items()
                      if group in vision_mode.groups and scope.covers(name)}
    return trainable


def _vision_settings(model, args: TuningArguments):
    """(VisionTuneMode, TowerScope or None, tower LoRA settings or None), checked."""
    check_tuning_names(args)
    vision_mode = get_vision_tune_mode(args.vision_tune_mode)
    if vision_mode.name == FROZEN:
        return vision_mode, None, None
    scope = tower_scope(model, args.vision_tune_last_layers)
    vision_lora = None
    if vision_mode.uses_lora:
        # Checked before PEFT wraps anything: PEFT itself would fail on an empty target list with its own error.
        if not tower_lora_targets(model, scope):
            raise _nothing_of_the_tower(vision_mode, model)
        vision_lora = LoraSettings(args.vision_lora_r, args.vision_lora_alpha, args.lora_dropout)
    return vision_mode, scope, vision_lora


def _nothing_of_the_tower(vision_mode: VisionTuneMode, model) -> LlavaLnError:
    layer = unwrap(model).config.vision_feature_layer
    return LlavaLnError(f"--vision_tune_mode {vision_mode.name}: nothing of the tower can train (the feature layer "
                        f"{layer}, --mm_vision_select_layer, reaches no tensor of that kind)")


def saved_tensor_names(model, args: TuningArguments) -> frozenset:
    """What a run with args stores in trained.safetensors (every trainable tensor but LoRA factors).

    model: the unwrapped base model (the meta device is enough); nothing in it is changed.
    """
    check_flag_domains(args)  # TuningArguments built in code skip parse_flags, which checks a command line's
    mode = get_tune_mode(args.tune_mode)
    vision_mode, scope, _ = _vision_settings(model, args)
    group_of = classify_parameters(model)
    names = _trainable_names(model, mode, resolve_tune_embeddings(mode, args.tune_embeddings), group_of,
                             args.tune_connector, vision=(vision_mode, scope) if scope else None)
    return frozenset(name for name in names if group_of[name] not in ADAPTER_GROUPS)


def apply_tune_mode(model, args: TuningArguments, connector_pretrained: bool = False):
    """Make the model trainable as args.tune_mode and args.vision_tune_mode say; return (model, TuningPlan).

    The model comes back wrapped in a PeftModel for lora (LLM or tower). connector_pretrained: the
    connector comes from an earlier run or checkpoint (so a connector-only run is not stage 1).
    """
    check_flag_domains(args)  # TuningArguments built in code skip parse_flags, which checks a command line's
    mode = get_tune_mode(args.tune_mode)
    quantized = quantization_of(model)
    if quantized is not None:
        refuse_on_quantized_base(mode, quantized.bits)
    tune_embeddings = resolve_tune_embeddings(mode, args.tune_embeddings)
    lora = None
    if mode.uses_lora:
        lora = LoraSettings(args.lora_r, args.lora_alpha, args.lora_dropout)
    vision_mode, scope, vision_lora = _vision_settings(model, args)
    if lora or vision_lora:
        model = _wrap_lora(model, lora, vision_lora, tower_lora_targets(model, scope) if vision_lora else [])
    group_of = classify_parameters(model)
    trainable = _trainable_names(model, mode, tune_embeddings, group_of, args.tune_connector,
                                 vision=(vision_mode, scope) if scope else None)
    params = dict(unwrap(model).named_parameters())
    for name, param in params.items():
        param.requires_grad_(name in trainable)
    if not trainable:
        raise LlavaLnError(f"--tune_mode {mode.name} leaves nothing to train in this model")
    if scope and not any(group_of[n] in VISION_GROUPS for n in trainable):
        raise _nothing_of_the_tower(vision_mode, model)
    only_connector = all(group_of[n] == "connector" for n in trainable)
    plan = TuningPlan(
        mode=mode, stage=1 if only_connector and not connector_pretrained else 2, tune_embeddings=tune_embeddings,
        lora=lora, group_of=dict(group_of), numel={n: logical_numel(p) for n, p in params.items()},
        trainable=frozenset(trainable), optimizer_groups=_optimizer_groups(group_of, trainable, params),
        mm_projector_lr=args.mm_projector_lr, norm_lr=args.norm_lr, vision_mode=vision_mode,
        vision_last_layers=args.vision_tune_last_layers, vision_lora=vision_lora,
        mm_vision_tower_lr=args.mm_vision_tower_lr,
    )
    logger.info("tune_mode=%s (%s), vision_tune_mode=%s (%s)\n%s", mode.name, mode.summary, vision_mode.name,
                vision_mode.summary, plan.table())
    return model, plan
