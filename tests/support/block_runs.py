"""Recomputation made visible: how often each LLM decoder block runs in a step, and what it keeps for backward.

transformers checkpoints a block's `forward`, not its `__call__`, so hooks on the block itself fire once
whether the block is recomputed or not. A forward pre-hook on the block's first submodule
(`input_layernorm`, which every decoder block of the supported families runs first) fires each time the
block's computation starts, the recomputation during backward included.
"""
import contextlib

from llava_ln.model.parts import decoder_layers_of


def count_block_runs(model) -> list[int]:
    """Counters, one per LLM block, that grow each time the block's computation starts (for the model's life)."""
    blocks = decoder_layers_of(model)
    runs = [0] * len(blocks)
    for index, block in enumerate(blocks):
        def started(module, args, index=index):
            runs[index] += 1

        block.input_layernorm.register_forward_pre_hook(started)
    return runs


@contextlib.contextmanager
def saves_by_block(model, saved):
    """While open, a SavedTensorBytes counter `saved` files what each block saves under the block's index
    (a checkpointed block saves only its inputs; what it recomputes is saved during backward)."""
    handles = []
    for index, block in enumerate(decoder_layers_of(model)):
        handles.append(block.register_forward_pre_hook(lambda module, args, index=index: setattr(saved, "scope", index)))
        handles.append(block.register_forward_hook(lambda module, args, output: setattr(saved, "scope", None)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
