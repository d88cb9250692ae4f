"""LM head + cross-entropy in row chunks: the loss and its gradients without [rows, vocab] logits.

The unfused path builds logits = hidden @ W.T (+ b) for every supervised row, upcasts them to fp32
and keeps fp32 log-probabilities for backward: 128 KB per row at a 32K vocabulary, 600 KB at
152K. Here the rows go through the head a chunk at a time (compute-dtype logits, fp32 softmax of
that chunk only), and the gradients with respect to the hidden rows and, when they train, the
head weight and bias are computed in the same pass. Backward only scales them by the incoming
gradient of the loss, so what stays alive between forward and backward is one hidden-sized
gradient per row plus the head's gradient.

Numerics follow the unfused path under autocast: logits in the compute dtype, softmax and loss in
fp32, the logit gradient (softmax - one_hot) / n rounded to the compute dtype before the two
matmuls. The loss is the mean over rows whose target is not ignore_index (reduction "mean"), or
their sum (reduction "sum": the token-weighted training loss weighs each micro-batch's sum by the
whole step's token count); with no such row it is 0 with zero gradients (F.cross_entropy would
return nan for the mean), so the head stays in the graph.
"""
import contextlib

import torch
import torch.nn.functional as F

from llava_ln.core.constants import IGNORE_INDEX

# fp32 logit elements one chunk may hold: 2**27 (512 MB) gives 4096 rows at a 32K vocabulary.
CHUNK_ELEMENTS = 2**27


def default_chunk_rows(vocab_size: int) -> int:
    return max(256, min(8192, CHUNK_ELEMENTS // max(vocab_size, 1)))


def _autocast_dtype(device_type: str):
    """The active autocast dtype for this device type, or None."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except (RuntimeError, ValueError):  # device types autocast does not know (meta)
        pass
    return None


def _no_autocast(device_type: str):
    """Dtypes are chosen explicitly inside the function; autocast must not re-cast them."""
    try:
        return torch.autocast(device_type, enabled=False)
    except (RuntimeError, ValueError):  # meta: autocast never applies there
        return contextlib.nullcontext()


REDUCTIONS = ("mean", "sum")


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """mean (or sum) CE(hidden @ weight.T + bias, targets) over non-ignored rows; grads computed in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index: int, chunk_rows: int, reduction: str = "mean"):
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        compute_dtype = _autocast_dtype(hidden.device.type) or torch.promote_types(hidden.dtype, weight.dtype)
        rows = hidden.shape[0]
        valid = targets != ignore_index
        if reduction == "sum":
            scale = torch.ones((), dtype=torch.float32, device=hidden.device)
        else:  # 1/n as a tensor: no host sync, and 0 when nothing is supervised.
            count = valid.sum()
            scale = (count > 0).float() / count.clamp_min(1).float()
        with _no_autocast(hidden.device.type):
            w = weight.to(compute_dtype)
            b = bias.to(compute_dtype) if bias is not None else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
            for start in range(0, rows, chunk_rows):
                stop = min(start + chunk_rows, rows)
                h = hidden[start:stop].to(compute_dtype)
                chunk_valid = valid[start:stop]
                target = torch.where(chunk_valid, targets[start:stop], 0).unsqueeze(1)
                logits = F.linear(h, w, b).float()
                lse = torch.logsumexp(logits, dim=-1, keepdim=True)
                picked = logits.gather(1, target)
                total = total + ((lse - picked).squeeze(1) * chunk_valid).sum()
                if not (need_h or need_w or need_b):
                    continue
                # In place: the chunk's fp32 logits become d loss / d logits.
                probs = logits.sub_(lse).exp_()
                probs.scatter_add_(1, target, -chunk_valid.unsqueeze(1).float())
                probs.mul_(chunk_valid.unsqueeze(1) * scale)
                grad_logits = probs.to(compute_dtype)
                del logits, probs
                if need_h:
                    grad_h[start:stop] = (grad_logits @ w).to(hidden.dtype)
                if need_w:
                    grad_w.add_(grad_logits.t() @ h)  # compute-dtype product, fp32 accumulation
                if need_b:
                    grad_b.add_(grad_logits.sum(0, dtype=torch.float32))
            loss = total * scale
        saved = [
            grad_h if need_h else None,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if need_b else None,
        ]
        ctx.save_for_backward(*saved)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scaled = [None if g is None else g * grad_loss.to(g.dtype) for g in (grad_h, grad_w, grad_b)]
        return scaled[0], scaled[1], scaled[2], None, None, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                               targets: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                               chunk_rows: int | None = None, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of rows hidden [N, H] through a head (weight [V, H], bias [V] or None): the mean over the
    supervised rows, or their sum with reduction "sum"."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r} is not one of {REDUCTIONS}")
    if hidden.dim() != 2 or targets is None or targets.shape != hidden.shape[:1]:
        raise ValueError(f"expected hidden [N, H] and targets [N], got {tuple(hidden.shape)} and "
                         f"{None if targets is None else tuple(targets.shape)}")
    rows = chunk_rows or default_chunk_rows(weight.shape[0])
    return ChunkedLinearCrossEntropy.apply(hidden, weight, bias, targets, ignore_index, rows, reduction)
