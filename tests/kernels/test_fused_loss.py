"""The chunked head + loss equals the unfused path: F.cross_entropy on full fp32 logits, mean (or sum) over
supervised rows.

Loss and gradients (hidden rows, head weight, head bias) are compared with ignored rows, several
uneven chunks, a tied head (the embedding matrix, whose gradient also receives the embedding
lookup's), a head with bias, under CPU autocast with fp32 master weights, and with nothing
supervised (a zero loss that keeps the head in the graph).
"""
import pytest
import torch
import torch.nn.functional as F
from kernel_helpers import relative_error

from llava_ln.kernels.fused_loss import CHUNK_ELEMENTS, default_chunk_rows, fused_linear_cross_entropy
from llava_ln.kernels.loss import count_supervised_tokens, supervised_lm_loss, supervised_rows

ROWS, WIDTH, VOCAB = 37, 16, 50


def _problem(dtype=torch.float32, bias=False, ignored=(0, 5, 6, 30), seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(ROWS, WIDTH, generator=gen).to(dtype)
    head = torch.nn.Linear(WIDTH, VOCAB, bias=bias).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, WIDTH, generator=gen))
        if bias:
            head.bias.copy_(torch.randn(VOCAB, generator=gen))
    targets = torch.randint(0, VOCAB, (ROWS,), generator=gen)
    targets[list(ignored)] = -100
    return hidden, head, targets


def _grads(loss_fn, hidden, head, targets):
    hidden = hidden.detach().clone().requires_grad_(True)
    head.zero_grad(set_to_none=True)
    loss = loss_fn(hidden, head, targets)
    loss.backward()
    return loss.detach(), hidden.grad, head.weight.grad, None if head.bias is None else head.bias.grad


def _unfused(hidden, head, targets, reduction="mean"):
    return F.cross_entropy(head(hidden).float(), targets, ignore_index=-100, reduction=reduction)


def _fused(chunk, reduction="mean"):
    return lambda hidden, head, targets: fused_linear_cross_entropy(hidden, head.weight, head.bias, targets=targets,
                                                                    chunk_rows=chunk, reduction=reduction)


@pytest.mark.parametrize("bias,reduction", [(False, "mean"), (True, "mean"), (True, "sum")])
@pytest.mark.parametrize("chunk", [8, 64])
def test_fused_loss_equals_unfused_in_fp32(bias, chunk, reduction):
    hidden, head, targets = _problem(bias=bias)
    expected = _grads(lambda *a: _unfused(*a, reduction=reduction), hidden, head, targets)
    got = _grads(_fused(chunk, reduction), hidden, head, targets)
    for name, want, have in zip(("loss", "hidden", "weight", "bias"), expected, got):
        if want is None:
            assert have is None
            continue
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6, msg=name)


def test_fused_loss_in_bf16_is_as_close_to_fp32_as_the_unfused_path():
    hidden, head, targets = _problem(bias=True)
    truth = _grads(_unfused, hidden, head, targets)
    head_bf16 = head.to(torch.bfloat16)
    unfused = _grads(_unfused, hidden.bfloat16(), head_bf16, targets)
    fused = _grads(_fused(8), hidden.bfloat16(), head_bf16, targets)
    for name, want, base, have in zip(("loss", "hidden", "weight", "bias"), truth, unfused, fused):
        assert have.dtype == base.dtype, name
        assert relative_error(have, want) <= relative_error(base, want) + 2.0**-7, name


def test_fused_loss_under_autocast_with_fp32_master_head():
    """The GPU training setup on a CPU: fp32 head weight, bf16 matmuls, fp32 weight gradient."""
    hidden, head, targets = _problem(bias=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        unfused = _grads(_unfused, hidden, head, targets)
        fused = _grads(_fused(8), hidden, head, targets)
    for name, want, have in zip(("loss", "hidden", "weight", "bias"), unfused, fused):
        assert have.dtype == want.dtype, name
        assert relative_error(have, want) < 2e-2, name


def test_tied_head_gradient_sums_both_uses():
    """The head weight is the embedding matrix: its gradient is lookup + head, as in the unfused model."""
    gen = torch.Generator().manual_seed(1)
    embedding = torch.nn.Embedding(VOCAB, WIDTH)
    head = torch.nn.Linear(WIDTH, VOCAB, bias=False)
    head.weight = embedding.weight
    ids = torch.randint(0, VOCAB, (2, 9), generator=gen)
    labels = ids.clone()
    labels[0, :3] = -100
    mixer = torch.randn(WIDTH, WIDTH, generator=gen)

    def run(backend):
        embedding.zero_grad(set_to_none=True)
        hidden = torch.tanh(embedding(ids) @ mixer)
        loss = supervised_lm_loss(hidden, head, labels, backend=backend, chunk_rows=5)
        loss.backward()
        return loss.detach(), embedding.weight.grad

    loss_ref, grad_ref = run("none")
    loss, grad = run("torch")
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-6)


def test_supervised_rows_pick_positions_whose_next_token_is_supervised():
    hidden = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)
    labels = torch.tensor([[-100, -100, 7, 8], [-100, 5, -100, 9]])
    rows, targets = supervised_rows(hidden, labels)
    assert rows.squeeze(1).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert targets.tolist() == [7, 8, 5, 9]


def test_supervised_lm_loss_matches_the_model_loss_on_shifted_labels():
    hidden, head, _ = _problem()
    hidden = hidden[:36].reshape(4, 9, WIDTH)
    labels = torch.randint(0, VOCAB, (4, 9), generator=torch.Generator().manual_seed(2))
    labels[:, :4] = -100
    labels[2] = -100  # a sample with no supervised token
    logits = head(hidden).float()
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    for backend in ("torch", "none"):
        torch.testing.assert_close(supervised_lm_loss(hidden, head, labels, backend=backend), expected)
        summed = supervised_lm_loss(hidden, head, labels, backend=backend, reduction="sum")
        torch.testing.assert_close(summed, expected * count_supervised_tokens(labels))
    assert count_supervised_tokens(labels) == int((labels[:, 1:] != -100).sum()) == 15


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nothing_supervised_gives_zero_loss_and_zero_gradients(reduction):
    hidden, head, targets = _problem(ignored=range(ROWS))
    loss, grad_hidden, grad_weight, _ = _grads(_fused(8, reduction), hidden, head, targets)
    assert loss.item() == 0.0
    assert grad_weight is not None and not grad_weight.any() and not grad_hidden.any()


def test_an_unknown_reduction_is_refused():
    hidden, head, targets = _problem()
    with pytest.raises(ValueError, match="reduction 'none'"):
        fused_linear_cross_entropy(hidden, head.weight, targets=targets, reduction="none")


def test_frozen_head_gets_no_gradient_and_default_chunk_is_bounded():
    hidden, head, targets = _problem()
    head.weight.requires_grad_(False)
    _, grad_hidden, grad_weight, _ = _grads(_fused(None), hidden, head, targets)
    assert grad_weight is None and grad_hidden is not None
    assert default_chunk_rows(32000) == CHUNK_ELEMENTS // 32000
    assert 256 <= default_chunk_rows(152064) < default_chunk_rows(32000)
