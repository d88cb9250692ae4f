"""Optimizer parameter groups: per-group learning rates and no weight decay on norms and biases.

The groups are plain dicts with a "name" key so that tests (and a curious user) can check
what DeepSpeed's optimizer really received.
"""
from llava_ln.model.parts import unwrap
from llava_ln.tuning.groups import classify_parameters


def _decays(name: str, group: str, param) -> bool:
    # Norm weights/biases and every bias are excluded, as is customary for AdamW.
    return group != "llm_norms" and not name.endswith(".bias") and param.ndim > 1


def optimizer_param_groups(model, learning_rate: float, weight_decay: float,
                           mm_projector_lr: float | None = None, norm_lr: float | None = None) -> list[dict]:
    """Trainable parameters split into named groups, each with its lr and weight_decay."""
    llava = unwrap(model)
    params = dict(llava.named_parameters())
    buckets: dict[str, dict] = {}
    for name, group in classify_parameters(model).items():
        param = params[name]
        if not param.requires_grad:
            continue
        if group == "connector":
            role, lr = "connector", mm_projector_lr if mm_projector_lr is not None else learning_rate
        elif group == "llm_norms":
            role, lr = "norms", norm_lr if norm_lr is not None else learning_rate
        else:
            role, lr = "other", learning_rate
        decay = _decays(name, group, param)
        key = f"{role}_{'decay' if decay else 'no_decay'}"
        bucket = buckets.setdefault(
            key, {"name": key, "params": [], "lr": lr, "weight_decay": weight_decay if decay else 0.0}
        )
        bucket["params"].append(param)
    return list(buckets.values())
