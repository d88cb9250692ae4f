"""Apply a tuning mode: wrap with PEFT LoRA when asked, then set requires_grad everywhere.

This is the single owner of requires_grad in llava-ln: every other module reads it.
"""
import logging

from torch import nn

from llava_ln.core.errors import LlavaLnError
from llava_ln.model.parts import decoder_layers_of, language_model_of, unwrap
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.groups import GROUPS, classify_parameters
from llava_ln.tuning.modes import TuneMode, get_tune_mode, resolve_tune_embeddings

logger = logging.getLogger(__name__)

_QV_NAMES = ("q_proj", "v_proj")
_MLP_NAMES = ("mlp", "feed_forward")


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


def _wrap_lora(model, args: TuningArguments):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=lora_target_modules(model),
        bias="none",
    )
    return get_peft_model(model, config)


def trainable_parameter_names(model, mode: TuneMode, tune_embeddings: bool) -> set[str]:
    groups = classify_parameters(model)
    train_groups = set(mode.groups)
    if tune_embeddings:
        train_groups |= {"embeddings", "lm_head"}
    names = {name for name, group in groups.items() if group in train_groups}
    if mode.block_part:
        names |= _block_part_parameter_names(model, mode.block_part)
    return names


def apply_tune_mode(model, args: TuningArguments):
    """Return the model ready for training in args.tune_mode (a PeftModel for lora)."""
    mode = get_tune_mode(args.tune_mode)
    tune_embeddings = resolve_tune_embeddings(mode, args.tune_embeddings)
    if mode.uses_lora:
        model = _wrap_lora(model, args)
    trainable = trainable_parameter_names(model, mode, tune_embeddings)
    for name, param in unwrap(model).named_parameters():
        param.requires_grad_(name in trainable)
    if not trainable:
        raise LlavaLnError(f"--tune_mode {mode.name} leaves nothing to train in this model")
    logger.info("tune_mode=%s (%s)\n%s", mode.name, mode.summary, format_trainable_table(model))
    return model


def format_trainable_table(model) -> str:
    """A plain-text table of parameters per group: total and trainable."""
    llava = unwrap(model)
    params = dict(llava.named_parameters())
    totals = {g: 0 for g in GROUPS}
    trained = {g: 0 for g in GROUPS}
    for name, group in classify_parameters(model).items():
        totals[group] += params[name].numel()
        if params[name].requires_grad:
            trained[group] += params[name].numel()
    lines = [f"{'group':<14}{'total':>16}{'trainable':>16}"]
    for group in GROUPS:
        lines.append(f"{group:<14}{totals[group]:>16,}{trained[group]:>16,}")
    all_total, all_trained = sum(totals.values()), sum(trained.values())
    pct = 100.0 * all_trained / all_total if all_total else 0.0
    lines.append(f"{'all':<14}{all_total:>16,}{all_trained:>16,}  ({pct:.4f}% trainable)")
    return "\n".join(lines)
