"""A packed row (--packing) computes what its samples compute unpacked: per-sample losses and gradients.

Samples of different lengths (with and without images) go through the training forward once as a
right-padded batch and once packed (into one row, and into two rows of which one is padded); the per-sample sums of token losses and the
gradients of every trainable weight must agree to fp32 rounding, for a LLaMA and a Qwen2 toy LLM,
under SDPA (transformers' block-diagonal mask from restarting position ids) and eager attention.
"""
import pytest
import torch
import torch.nn.functional as F
from model_helpers import build

from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.encode import DataCollator
from llava_ln.data.packing import PackedCollator
from llava_ln.model.forward import multimodal_forward
from llava_ln.model.packed_attention import packed_attention_problem
from llava_ln.model.parts import language_model_of, unwrap
from llava_ln.training.packing import check_packing_model, packing_attention_problem


class _PadTokenizer:
    pad_token_id = 0


def _samples(spec, lengths, with_image, seed=0):
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for number, (length, image) in enumerate(zip(lengths, with_image)):
        ids = torch.randint(5, 250, (length,), generator=gen)
        ids[ids == spec.image_token_id] = 5
        labels = ids.clone()
        prompt = 3
        if image:
            ids[1:1 + spec.num_image_tokens] = spec.image_token_id
            prompt += spec.num_image_tokens
        labels[:prompt] = IGNORE_INDEX
        pixels = torch.randn(1, 3, 28, 28, generator=gen) if image else None
        samples.append({"id": f"s{number}", "input_ids": ids, "labels": labels, "pixel_values": pixels})
    return samples


def _token_losses(logits, labels):
    """Next-token cross-entropy per position ([T-1]), 0 where the target is masked."""
    return F.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=IGNORE_INDEX, reduction="none")


def _per_sample(model, batch, packed_rows=None):
    """(per-sample loss sums, summed loss) of one forward of `batch`; packed_rows: the sample lengths of each row."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = multimodal_forward(model, **inputs).logits
    labels = batch["labels"]
    if packed_rows is None:
        sums = [_token_losses(logits[row], labels[row]).sum() for row in range(labels.shape[0])]
        return torch.stack(sums), torch.stack(sums).sum()
    sums, total = [], 0.0
    for row, lengths in enumerate(packed_rows):
        row_losses = _token_losses(logits[row], labels[row])
        total = total + row_losses.sum()
        start = 0
        for length in lengths:
            sums.append(row_losses[start:start + length - 1].sum())
            # The position before the next sample's first token predicts nothing (its label is masked).
            assert start == 0 or row_losses[start - 1] == 0
            start += length
    return torch.stack(sums), total


def _gradients(model):
    return {n: p.grad.clone() for n, p in unwrap(model).named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family,attention,row_tokens", [("llama", "sdpa", None), ("qwen2", "sdpa", None),
                                                          ("llama", "eager", None), ("llama", "sdpa", 40)])
@pytest.mark.parametrize("images", [(True, False, True), (False, False, False)], ids=["images", "text_only"])
def test_packed_rows_match_the_padded_batch(tiny_llm, tiny_vision, family, attention, row_tokens, images):
    torch.manual_seed(0)
    model, spec = build(tiny_llm, tiny_vision, family, "full")
    language_model_of(model).config._attn_implementation = attention
    model.eval()
    lengths = [9 + spec.num_image_tokens, 31, 5 + spec.num_image_tokens]  # lengths differ by up to 6x
    samples = _samples(spec, lengths, images)
    padded, packed = DataCollator(_PadTokenizer())(samples), PackedCollator(0, row_tokens or sum(lengths))(samples)
    rows = [lengths] if row_tokens is None else [lengths[:1], lengths[1:]]  # rows of 40: 13 | 31 + 9, padded
    assert packed["input_ids"].shape == (len(rows), max(map(sum, rows)))

    per_padded, total_padded = _per_sample(model, padded)
    total_padded.backward()
    grads_padded = _gradients(model)
    model.zero_grad(set_to_none=True)
    per_packed, total_packed = _per_sample(model, packed, packed_rows=rows)
    total_packed.backward()
    grads_packed = _gradients(model)

    torch.testing.assert_close(per_packed, per_padded, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(total_packed, total_padded, rtol=1e-5, atol=1e-5)
    assert grads_packed.keys() == grads_padded.keys() and len(grads_packed) > 10
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_packed[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_without_restarting_positions_the_samples_would_attend_to_each_other(tiny_llm, tiny_vision):
    """The check above can fail: the same row without its position ids (one long sequence) differs."""
    torch.manual_seed(0)
    model, spec = build(tiny_llm, tiny_vision, "llama", "full")
    model.eval()
    lengths = [12, 20]
    packed = PackedCollator(0, sum(lengths))(_samples(spec, lengths, (False, False)))
    with torch.no_grad():
        confined, _ = _per_sample(model, packed, packed_rows=[lengths])
        leaking, _ = _per_sample(model, {**packed, "position_ids": None}, packed_rows=[lengths])
    torch.testing.assert_close(leaking[0], confined[0])  # the first sample sees nothing before it either way
    assert not torch.allclose(leaking[1], confined[1], atol=1e-4)


def test_a_packed_image_count_mismatch_names_its_sample(tiny_llm, tiny_vision):
    model, spec = build(tiny_llm, tiny_vision, "llama", "ln")
    samples = _samples(spec, [8 + spec.num_image_tokens, 10], (True, False))
    batch = PackedCollator(0, 100)(samples)
    batch["image_counts"] = torch.tensor([0, 1])  # the image is claimed by the wrong sample
    with pytest.raises(LlavaLnError, match="sample s0: .* image placeholder positions"):
        multimodal_forward(model, **{k: v for k, v in batch.items() if k != "labels"})


def test_an_attention_that_cannot_confine_packed_samples_is_refused(tiny_llm, tiny_vision):
    model, _ = build(tiny_llm, tiny_vision, "llama", "ln")
    assert packing_attention_problem(model) is None
    language_model_of(model).config._attn_implementation = "paged|sdpa"
    with pytest.raises(LlavaLnError, match="--packing: attention implementation 'paged|sdpa'"):
        check_packing_model(model)


@pytest.mark.parametrize("kernels", ["none", "torch"])
def test_the_training_loss_of_a_packed_batch_is_that_of_its_samples(tiny_llm, tiny_vision, kernels):
    """The training step's loss (TrainingModule: the unfused head, or the fused head + loss) is the mean over the
    same supervised tokens packed or not, so any per-token weighting of it sees the same tokens."""
    from llava_ln.kernels import apply_kernels
    from llava_ln.training.strategy import TrainingModule

    torch.manual_seed(0)
    model, spec = build(tiny_llm, tiny_vision, "llama", "ln")
    apply_kernels(model, kernels, torch.device("cpu"))
    model.eval()
    lengths = [9 + spec.num_image_tokens, 31, 5 + spec.num_image_tokens]
    samples = _samples(spec, lengths, (True, False, True))
    padded, packed = DataCollator(_PadTokenizer())(samples), PackedCollator(0, 40)(samples)
    supervised = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in (padded, packed)]
    assert supervised[0] == supervised[1] > 0
    torch.testing.assert_close(TrainingModule(model)(packed), TrainingModule(model)(padded), rtol=1e-5, atol=1e-6)


# A tiny decoder of each family: what every family's config calls its sizes (only those it has are set).
_TINY_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                   intermediate_size=64, ffn_dim=64, word_embed_proj_dim=32, vocab_size=128,
                   max_position_embeddings=64, sliding_window=8)


def _tiny_decoder(family: str, attention: str, **config_values):
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(family)
    for name, value in {**_TINY_SIZES, **config_values}.items():
        if hasattr(config, name):
            setattr(config, name, value)
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:config.num_hidden_layers]
    return AutoModel.from_config(config, attn_implementation=attention).eval()


# (family, the verdict it must get, config values): mistral picks its mask factory into a variable, gemma3 passes a
# copied keyword dict; OPT calls the factory without position ids, an LFM2 convolution layer carries tokens over.
FAMILIES = [("llama", "allowed", {}), ("mistral", "allowed", {}), ("gemma3_text", "allowed", {}),
            ("opt", "refused", {}), ("lfm2", "refused", {"layer_types": ["conv", "full_attention"]})]


@pytest.mark.parametrize("family,verdict,config_values", FAMILIES, ids=[f for f, _, _ in FAMILIES])
def test_the_packing_verdict_is_what_the_model_computes(family, verdict, config_values):
    """A family is refused exactly when a sample packed after another computes something else than alone."""
    torch.manual_seed(0)
    llm = _tiny_decoder(family, "sdpa", **config_values)
    first, second = torch.randint(3, 100, (1, 12)), torch.randint(3, 100, (1, 10))
    positions = torch.cat([torch.arange(12), torch.arange(10)])[None]
    with torch.no_grad():
        packed = llm(input_ids=torch.cat([first, second], 1), position_ids=positions, use_cache=False)
        alone = llm(input_ids=second, position_ids=positions[:, 12:], use_cache=False)
    leaks = not torch.allclose(packed.last_hidden_state[0, 12:], alone.last_hidden_state[0], atol=1e-5)
    problem = packed_attention_problem(llm)
    assert leaks == (verdict == "refused") and (problem is not None) == leaks, problem
