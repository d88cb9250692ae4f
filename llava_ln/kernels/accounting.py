"""Measure what a forward pass keeps for backward: a saved-tensor counter and a flash-like attention.

`SavedTensorBytes` is a context manager around autograd's saved_tensors_hooks that adds up the
bytes of every tensor an op saves for backward, parameters (and views of them) excluded, two
ways: `packed` counts every save (what bench/baseline/step_account.py reports, so the same tensor
saved by two ops counts twice) and `unique` counts each underlying tensor once (the memory
actually kept alive). It works on the meta device, so full-size shapes cost no memory. Set
`.scope` (for example from module hooks) and both counts are also split by scope in `by_scope`:
scope -> [packed, unique], a tensor's unique bytes going to the scope that saved it first.

`flash_like_attention` runs attention through aten's flash-attention op, which saves what a
GPU flash kernel saves (q, k, v, output, log-sum-exp); it runs on CUDA and on the meta device
(a CPU has no kernel for that op), which is where accounting happens. Register it with transformers under FLASH_LIKE to count a model as it trains on a GPU.
"""
import torch

# No "flash" in the name: transformers treats such names as flash-attention packages to import.
FLASH_LIKE = "llava_ln_kernel_like"


class SavedTensorBytes:
    """Bytes saved for backward inside the `with` block (parameters of `modules` excluded)."""

    def __init__(self, *modules):
        self._parameters = {id(p) for module in modules for p in module.parameters()}
        self.packed = 0
        self.unique = 0  # set when the block exits
        self._unique = {}  # id(base tensor) -> (base tensor, bytes); the reference keeps ids stable
        self.records = []  # (shape, dtype, bytes) of every counted save, in order
        self.scope = None  # set by the caller; saves are also counted per scope
        self.by_scope = {}  # scope -> [packed, unique]

    def _pack(self, tensor):
        base = tensor if tensor._base is None else tensor._base
        if id(tensor) in self._parameters or id(base) in self._parameters:
            return tensor
        size = tensor.numel() * tensor.element_size()
        self.packed += size
        self.records.append((tuple(tensor.shape), tensor.dtype, size))
        counts = self.by_scope.setdefault(self.scope, [0, 0])
        counts[0] += size
        if id(base) not in self._unique:
            self._unique[id(base)] = (base, base.numel() * base.element_size())
            counts[1] += self._unique[id(base)][1]
        return tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        self.unique = sum(size for _, size in self._unique.values())
        self._unique = {}  # drop the references: the counter must not keep activations alive
        return False


def flash_like_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Causal attention as transformers' attention interface calls it, through aten's flash op.

    Grouped key/value heads are repeated to the query's head count first, as transformers' SDPA
    path does when the kernel cannot group them itself.
    """
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    causal = getattr(module, "is_causal", True)
    output = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout, causal, False,
                                                                 scale=scaling)[0]
    return output.transpose(1, 2).contiguous(), None


def register_flash_like_attention() -> str:
    """Make attn_implementation=FLASH_LIKE available to transformers models; returns the name."""
    from transformers import AttentionInterface

    AttentionInterface.register(FLASH_LIKE, flash_like_attention)
    return FLASH_LIKE
