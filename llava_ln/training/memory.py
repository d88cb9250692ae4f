"""Gradient checkpointing, whole or partial.

transformers' non-reentrant checkpointing is switched on for the model, then switched off
again on the last blocks when --gradient_checkpointing_ratio < 1: every block left out
keeps its activations (more memory) and skips its recompute in backward (less time). The
per-block switch is the documented `gradient_checkpointing` attribute of transformers'
GradientCheckpointingLayer. Non-reentrant checkpointing needs no input that requires
grad, which matters here because the embeddings are frozen in most tuning modes.
"""
import logging

from llava_ln.model.parts import decoder_layers_of, unwrap

logger = logging.getLogger(__name__)


def enable_gradient_checkpointing(model, ratio: float = 1.0) -> int:
    """Checkpoint the first round(ratio * n_blocks) LLM blocks; returns how many."""
    llava = unwrap(model)
    llava.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    llava.config.use_cache = False
    blocks = decoder_layers_of(model)
    keep = round(ratio * len(blocks))
    for index, block in enumerate(blocks):
        if index >= keep and hasattr(block, "gradient_checkpointing"):
            block.gradient_checkpointing = False
    logger.info("gradient checkpointing on %d of %d LLM blocks", keep, len(blocks))
    return keep
