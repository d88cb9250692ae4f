"""Trainable-state memory: AdamW with bf16 moments and/or row-sparse gradients for the input embeddings.

`ln` trains the input embeddings and the LM head, 262M parameters at 7B. Under the plain PyTorch
strategy each costs 16 bytes (fp32 master, fp32 gradient, two fp32 Adam moments): 4.2 GB. Two
options make that cheaper (both: plain PyTorch strategy only; ZeRO partitions these states
across ranks instead):

--sparse_embedding_grad (exact). The input embedding looks rows up, so its gradient is zero
  outside the rows a micro-batch uses. Its `sparse` flag makes autograd produce only those rows
  (coalesced after each backward) instead of a dense [vocab, hidden] fp32 tensor: 512 MB less at
  7B, and a step of 8 x 2048 tokens uses a few thousand of the 32K rows. The update stays plain
  AdamW: every row's moments decay as they do under a zero gradient, the used rows add theirs, and
  every row is updated, with the same operations as torch.optim.AdamW's single-tensor path (bit
  for bit on a CPU; on CUDA torch's fused kernel rounds differently, within fp32 rounding).
  Clipping includes the sparse gradient's norm. Not offered: updating only the used rows (lazy
  Adam, torch.optim.SparseAdam), which is a different optimizer (the moments of unused rows would
  neither decay nor keep moving their weights). Needs an untied head (a tied one makes the
  gradient dense anyway) and one process (DDP's reducer would densify it).
--optim_state_dtype bf16 (approximate). Both Adam moments are stored in bf16: 4 bytes less per
  trainable parameter (1.05 GB at 7B `ln`). Each step computes in fp32 and rounds the moments
  back stochastically (unbiased): rounding to nearest would freeze the second moment, whose
  per-step change (1 - beta2 = 0.1% of itself) is below half a bf16 ulp (0.2%). The rounding
  noise is a function of (step, parameter, chunk), so a resumed run repeats it exactly. The
  result differs from fp32 AdamW by that rounding: docs/training.md shows the measured effect.

Large tensors are processed in chunks of rows, so the step's fp32 temporaries stay small.
"""
import math
from collections.abc import Iterable

import torch
from torch import nn

from llava_ln.core.distributed import DistContext
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.parts import input_embeddings_of, lm_head_of
from llava_ln.training.args import TrainingArguments

CHUNK_ELEMENTS = 2**24  # fp32 temporaries of at most 64 MB per chunk
STATE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def stochastic_round_to_bf16(values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """fp32 -> bf16, rounding up with probability equal to the dropped fraction (unbiased in expectation)."""
    bits = values.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, generator=generator, device=bits.device, dtype=torch.int32)
    truncated = (bits + noise) & -65536  # clear the 16 low bits that bf16 drops
    return truncated.view(torch.float32).to(torch.bfloat16)


class LeanAdamW(torch.optim.Optimizer):
    """AdamW (torch's formula, decoupled weight decay, no amsgrad) with moments in `state_dtype`
    and sparse gradients allowed (see the module docstring)."""

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], *, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 state_dtype: torch.dtype = torch.float32, seed: int = 0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.state_dtype = state_dtype
        self.seed = seed

    def _init_state(self, param) -> dict:
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(param, dtype=self.state_dtype, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, dtype=self.state_dtype,
                                                   memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        index = 0
        for group in self.param_groups:
            for param in group["params"]:
                index += 1
                if param.grad is None:
                    continue
                state = self._init_state(param)
                state["step"] += 1
                self._update(param, param.grad, state, group=group, index=index)
        return loss

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict, *, group: dict, index: int) -> None:
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        step = int(state["step"])
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        if grad.is_sparse:
            grad = grad.coalesce()
            rows, row_values = grad.indices()[0], grad.values()
        rows_per_chunk = max(1, CHUNK_ELEMENTS // max(1, param[0].numel() if param.dim() else 1))
        flat = param.dim() == 0
        for chunk, start in enumerate(range(0, 1 if flat else param.shape[0], rows_per_chunk)):
            stop = start + rows_per_chunk
            p = param if flat else param[start:stop]
            m_stored = state["exp_avg"] if flat else state["exp_avg"][start:stop]
            v_stored = state["exp_avg_sq"] if flat else state["exp_avg_sq"][start:stop]
            if grad.is_sparse:
                g = torch.zeros_like(p)
                inside = (rows >= start) & (rows < start + p.shape[0])
                g.index_copy_(0, rows[inside] - start, row_values[inside].to(p.dtype))
            else:
                g = grad if flat else grad[start:stop]
            fp32_state = m_stored.dtype == torch.float32
            m = m_stored if fp32_state else m_stored.float()
            v = v_stored if fp32_state else v_stored.float()
            # The operations and their order of torch.optim.AdamW's single-tensor path.
            p.mul_(1 - lr * group["weight_decay"])
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
            p.addcdiv_(m, denom, value=-step_size)
            if not fp32_state:
                # [IMPORTANT] Deliberate approximation (--optim_state_dtype bf16): the moments are computed in fp32
                # and stored rounded to bf16, stochastically so the rounding is unbiased; the update therefore
                # differs from fp32 AdamW by that rounding noise (docs/training.md measures the effect).
                generator = torch.Generator(device=p.device)
                generator.manual_seed(self.seed * 1_000_003 + step * 10_007 + index * 101 + chunk)
                m_stored.copy_(stochastic_round_to_bf16(m, generator))
                v_stored.copy_(stochastic_round_to_bf16(v, generator))


def uses_lean_optimizer(args: TrainingArguments) -> bool:
    return args.optim_state_dtype != "fp32" or args.sparse_embedding_grad


def make_lean_adamw(param_groups: list[dict], args: TrainingArguments) -> LeanAdamW:
    return LeanAdamW(param_groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                     eps=args.adam_epsilon, weight_decay=args.weight_decay,
                     state_dtype=STATE_DTYPES[args.optim_state_dtype], seed=args.seed)


def _coalesce_grad(param) -> None:
    param.grad = param.grad.coalesce()


def use_sparse_embedding_grad(model: nn.Module, context: DistContext) -> str:
    """Make the trainable input embedding produce row-sparse gradients (--sparse_embedding_grad); returns a note."""
    embedding = input_embeddings_of(model)
    if not embedding.weight.requires_grad:
        return "--sparse_embedding_grad: the input embeddings do not train in this mode; nothing to do"
    if context.distributed:
        raise LlavaLnError("--sparse_embedding_grad needs one process (DDP would densify the gradient); drop it or "
                           "use --deepspeed")
    if lm_head_of(model).weight is embedding.weight:
        raise LlavaLnError("--sparse_embedding_grad: the input embeddings are tied to the LM head, whose gradient is "
                           "dense; drop the flag")
    if not isinstance(embedding, torch.nn.Embedding):
        raise LlavaLnError(f"--sparse_embedding_grad: the input embedding is a {type(embedding).__name__}, "
                           "not an nn.Embedding")
    embedding.sparse = True
    # One row per looked-up token until coalesced: merge duplicates right after each backward.
    embedding.weight.register_post_accumulate_grad_hook(_coalesce_grad)
    return (f"--sparse_embedding_grad: {embedding.weight.shape[0]} x {embedding.weight.shape[1]} embedding gets "
            "gradients for the rows each step uses")


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ (the pre-clip norm), also for sparse gradients."""
    params = [p for p in params if p.grad is not None]
    if not any(p.grad.is_sparse for p in params):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    squares = []
    for p in params:
        grad = p.grad.coalesce() if p.grad.is_sparse else p.grad
        if p.grad.is_sparse:
            p.grad = grad
        values = grad.values() if grad.is_sparse else grad
        squares.append(torch.linalg.vector_norm(values.float()) ** 2)
    total = torch.stack(squares).sum().sqrt()
    if math.isfinite(max_norm):
        coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for p in params:
            p.grad.mul_(coefficient.to(p.grad.dtype))
    return total


def trainable_state_savings(model: nn.Module, args: TrainingArguments) -> int:
    """Bytes per device the two options save against 16 bytes per trainable parameter (for the recompute plan)."""
    saved = 0
    if args.optim_state_dtype == "bf16":
        saved += 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)
    if args.sparse_embedding_grad:
        weight = input_embeddings_of(model).weight
        if weight.requires_grad and weight is not lm_head_of(model).weight:
            saved += 4 * weight.numel()
    return saved
