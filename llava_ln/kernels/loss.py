"""The training loss through the fused head: what the training step calls instead of logits + F.cross_entropy.

`supervised_lm_loss(hidden, lm_head, labels, backend=...)` takes the LLM's final (normed) hidden
states [B, T, H], keeps the rows whose next token is supervised, and returns the mean
next-token cross-entropy over them, the same value as F.cross_entropy on the model's logits
with ignore_index -100 (reduction "sum": their sum, what a token-weighted step weighs). backend
"torch" (fused_loss.py) and "liger" never build [rows, vocab] logits; "none" is the unfused
reference (logits for the supervised rows only, as today).

`supervised_targets(labels)` is the one home of the shift: position t is supervised when label t + 1
is not IGNORE_INDEX. `count_supervised_tokens(labels)` counts those positions, which is the number
of token losses a micro-batch contributes (the training loop weighs a step with it).

`multimodal_supervised_loss(model, batch, backend=...)` is the whole training loss of a batch in
the collator's contract: it runs model.forward.multimodal_forward with no head rows, catches the
language model's final hidden states with a forward hook and calls supervised_lm_loss. The
fused loss runs as a call of the head module itself (_call_as), so module hooks (DeepSpeed
ZeRO-3's parameter gathering, forward and backward) treat it as the head's use.

Labels may sit on the CPU while the model runs on the meta device (exact accounting of a step
with no weights: training.memory.step_account): rows are selected with the labels' values and the
targets follow the hidden states' device.
"""
import torch
import torch.nn.functional as F
from torch import nn

from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.kernels import liger
from llava_ln.kernels.fused_loss import REDUCTIONS, fused_linear_cross_entropy
from llava_ln.model.forward import multimodal_forward
from llava_ln.model.parts import language_model_of, lm_head_of

LOSS_BACKENDS = ("torch", "liger", "none")


def supervised_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(next-token targets [B, T - 1], their supervised mask [B, T - 1]) of labels [B, T]: position t predicts
    label t + 1, and counts when that label is not IGNORE_INDEX."""
    targets = labels[:, 1:]
    return targets, targets != IGNORE_INDEX


def count_supervised_tokens(labels: torch.Tensor) -> int:
    """How many token losses a micro-batch with these labels contributes to the training loss."""
    return int(supervised_targets(labels)[1].sum())


def supervised_rows(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden rows [N, H], next-token targets [N]) at the positions whose next token is supervised."""
    targets, supervised = supervised_targets(labels)
    positions = F.pad(supervised, (0, 1), value=False)  # the last position predicts nothing
    return hidden[positions], targets[supervised].to(hidden.device)


def _unfused(rows, lm_head, targets, reduction: str):
    logits = lm_head(rows)
    if rows.shape[0] == 0:  # keeps the head in the graph with a zero loss
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction=reduction)


def supervised_lm_loss(hidden: torch.Tensor, lm_head: nn.Module, labels: torch.Tensor, *, backend: str = "torch",
                       chunk_rows: int | None = None, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy of `labels` [B, T] given final hidden states [B, T, H]: the mean over the
    supervised tokens, or their sum with reduction "sum"."""
    if backend not in LOSS_BACKENDS:
        raise ValueError(f"loss backend {backend!r} is not one of {LOSS_BACKENDS}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r} is not one of {REDUCTIONS}")
    rows, targets = supervised_rows(hidden, labels)
    # A head that is not exactly nn.Linear (a PEFT wrapper, a quantised subclass) runs as the module it is.
    if backend == "none" or type(lm_head) is not nn.Linear:
        return _unfused(rows, lm_head, targets, reduction)

    def fused(hidden_rows, row_targets):
        if backend == "liger" and hidden_rows.shape[0] > 0:
            return liger.linear_cross_entropy(hidden_rows, lm_head.weight, lm_head.bias, targets=row_targets,
                                              reduction=reduction)
        return fused_linear_cross_entropy(hidden_rows, lm_head.weight, lm_head.bias, targets=row_targets,
                                          chunk_rows=chunk_rows, reduction=reduction)

    return _call_as(lm_head, fused, rows, targets)


def _call_as(module: nn.Module, forward, *args):
    """module(*args) with `forward` standing in for its forward during this one call.

    The fused loss reads the head's weight directly; calling it through the head module keeps every
    module hook in the loop. That is what DeepSpeed ZeRO-3 needs: it gathers a module's partitioned
    parameters before the module's forward and again when the gradient reaches the module's outputs,
    so the head weight is whole both when the loss reads it and when its gradient is accumulated.
    """
    own = vars(module).get("forward")
    module.forward = forward
    try:
        return module(*args)
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


def multimodal_supervised_loss(model: nn.Module, batch: dict, *, backend: str = "torch",
                               chunk_rows: int | None = None, reduction: str = "mean") -> torch.Tensor:
    """The training loss of a batch (input_ids, labels, pixel_values, ...) through the fused head (reduction:
    as supervised_lm_loss)."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    captured = []

    def keep_hidden(module, args, output):
        captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

    handle = language_model_of(model).register_forward_hook(keep_hidden)
    try:
        no_rows = torch.zeros(0, dtype=torch.long, device=labels.device)  # the model's own head runs on nothing
        multimodal_forward(model, **inputs, logits_to_keep=no_rows)
    finally:
        handle.remove()
    return supervised_lm_loss(captured[-1], lm_head_of(model), labels, backend=backend, chunk_rows=chunk_rows,
                              reduction=reduction)
