"""A lean decoder block keeps less for backward than transformers' block, and exactly what a norm-only backward needs.

Measured with saved-tensor hooks on the meta device (no memory, exact shapes), attention as a flash
kernel stores it, norm weights trainable and linear layers frozen (ln_simple). Per-token figures are
the marginal cost between two sequence lengths, so per-call constants (the attention's RNG state)
cancel. The expected lean figure is built from the shapes: norm inputs and 1/rms, q, k, v, the
attention output and log-sum-exp, gate and up, and the rotary cos/sin that q*cos, rotate(q)*sin and
the same for k each save (the same two tensors, so they count once as unique memory).
"""
import pytest
import torch
from transformers import LlamaConfig, PhiConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding
from transformers.models.phi.modeling_phi import PhiDecoderLayer, PhiRotaryEmbedding

from llava_ln.kernels.accounting import SavedTensorBytes, register_flash_like_attention
from llava_ln.kernels.apply import apply_kernels

HIDDEN, HEADS, INTERMEDIATE = 64, 4, 160
SHORT, LONG = 16, 48


def _block(layer_cls, rotary_cls, config_cls, dtype, lean):
    config = config_cls(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_attention_heads=HEADS,
                        num_key_value_heads=HEADS, num_hidden_layers=1, vocab_size=100,
                        attn_implementation=register_flash_like_attention())
    with torch.device("meta"):
        block = layer_cls(config, layer_idx=0).to(dtype)
        rotary = rotary_cls(config)
    for module in block.modules():
        for param in module.parameters(recurse=False):
            param.requires_grad_("Norm" in type(module).__name__)
    if lean:
        apply_kernels(block, "torch", device="meta")
    return block, rotary


def _saved(block, rotary, tokens, dtype) -> SavedTensorBytes:
    hidden = torch.empty(1, tokens, HIDDEN, device="meta", dtype=dtype, requires_grad=True)
    positions = torch.arange(tokens, device="meta").unsqueeze(0)
    cos_sin = rotary(hidden, positions)
    with SavedTensorBytes(block) as saved:
        block(hidden, position_embeddings=cos_sin, position_ids=positions)
    return saved


def _per_token(layer_cls, rotary_cls, config_cls, dtype, lean) -> tuple[float, float]:
    block, rotary = _block(layer_cls, rotary_cls, config_cls, dtype, lean)
    short, long = _saved(block, rotary, SHORT, dtype), _saved(block, rotary, LONG, dtype)
    return (long.packed - short.packed) / (LONG - SHORT), (long.unique - short.unique) / (LONG - SHORT)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lean_llama_block_saves_exactly_what_norm_only_backward_needs(dtype):
    size = torch.tensor([], dtype=dtype).element_size()
    head_dim = HIDDEN // HEADS
    fp32 = 4
    norms = 2 * (HIDDEN * size + fp32)  # input in its dtype + 1/rms, for the two norms
    attention = 4 * HEADS * head_dim * size + HEADS * fp32  # q, k, v, output + log-sum-exp
    mlp = 2 * INTERMEDIATE * size  # gate and up
    rotary_saves = 4 * head_dim * size  # cos and sin, for q and for k
    packed, unique = _per_token(LlamaDecoderLayer, LlamaRotaryEmbedding, LlamaConfig, dtype, lean=True)
    assert packed == norms + attention + mlp + rotary_saves
    assert unique == norms + attention + mlp + rotary_saves // 2
    original_packed, original_unique = _per_token(LlamaDecoderLayer, LlamaRotaryEmbedding, LlamaConfig, dtype,
                                                  lean=False)
    assert packed < original_packed and unique < original_unique


def test_lean_phi_block_saves_less():
    """Phi: LayerNorm with bias and a composite GELU ('gelu_new') that keeps five intermediates."""
    lean = _per_token(PhiDecoderLayer, PhiRotaryEmbedding, PhiConfig, torch.bfloat16, lean=True)
    original = _per_token(PhiDecoderLayer, PhiRotaryEmbedding, PhiConfig, torch.bfloat16, lean=False)
    assert lean[0] < original[0] and lean[1] < original[1]
