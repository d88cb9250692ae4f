"""Trainable-state memory options (training/optim.py): row-sparse embedding gradients give exactly torch's AdamW;
bf16 moments halve the moments' bytes, round without bias and still converge like fp32 moments."""
import copy

import pytest
import torch
from torch import nn

from llava_ln.training.optim import LeanAdamW, clip_grad_norm, stochastic_round_to_bf16


class _TinyLM(nn.Module):
    """Embedding -> tanh -> untied head: the shape of what `ln` trains at the ends of the LLM."""

    def __init__(self, sparse: bool, vocab: int = 50, hidden: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden, sparse=sparse)
        self.head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, ids):
        return nn.functional.cross_entropy(self.head(torch.tanh(self.embed(ids))).flatten(0, 1), ids.flatten())


def _batches(steps: int, vocab: int = 50):
    generator = torch.Generator().manual_seed(0)
    # Ids from a narrow window that moves: most rows go unused for several steps, then come back.
    return [torch.randint(0, 10, (2, 6), generator=generator) + (7 * step) % (vocab - 10) for step in range(steps)]


def _train(model, optimizer, batches, max_norm: float):
    for ids in batches:
        model(ids).backward()
        clip_grad_norm(list(model.parameters()), max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model


@pytest.mark.parametrize("max_norm", [float("inf"), 0.05])
def test_sparse_embedding_gradients_give_torch_adamw_exactly(max_norm):
    torch.manual_seed(0)
    dense = _TinyLM(sparse=False)
    sparse = copy.deepcopy(dense)
    sparse.embed.sparse = True
    settings = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    batches = _batches(12)
    reference = _train(dense, torch.optim.AdamW(dense.parameters(), foreach=False, **settings), batches, max_norm)
    lean = _train(sparse, LeanAdamW(sparse.parameters(), **settings), batches, max_norm)
    assert not torch.equal(reference.embed.weight, _TinyLM(sparse=False).embed.weight)  # it trained
    for (name, want), got in zip(reference.named_parameters(), lean.parameters()):
        # Clipping sums the squared norms in another order than torch's, so allow fp32 rounding there.
        torch.testing.assert_close(got, want, rtol=0 if max_norm == float("inf") else 1e-6,
                                   atol=0 if max_norm == float("inf") else 1e-7, msg=name)


def test_sparse_gradient_holds_only_the_rows_used():
    model = _TinyLM(sparse=True)
    ids = torch.tensor([[3, 3, 7, 9]])
    model(ids).backward()
    grad = model.embed.weight.grad.coalesce()
    assert grad.is_sparse and sorted(grad.indices()[0].tolist()) == [3, 7, 9]


def test_stochastic_rounding_is_unbiased():
    generator = torch.Generator().manual_seed(0)
    value = torch.full((200_000,), 1.0 + 2**-10)  # an eighth of the way from bf16's 1 to its next value, 1 + 2**-7
    rounded = stochastic_round_to_bf16(value, generator).float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0 + 2**-7}
    assert abs(rounded.mean().item() - value[0].item()) < 2e-5
    nearest = value.to(torch.bfloat16).float()
    assert nearest.mean().item() == 1.0  # what rounding to nearest would give: biased


def test_bf16_moments_halve_their_bytes_and_converge_like_fp32():
    torch.manual_seed(0)
    base = _TinyLM(sparse=False)
    batches = _batches(40) * 2
    losses, state_bytes = {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        model = copy.deepcopy(base)
        optimizer = LeanAdamW(model.parameters(), lr=3e-2, state_dtype=dtype)
        _train(model, optimizer, batches, float("inf"))
        with torch.no_grad():
            losses[dtype] = sum(float(model(ids)) for ids in batches[:40]) / 40
        state_bytes[dtype] = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                                 for k, t in s.items() if k != "step")
    with torch.no_grad():
        start = sum(float(base(ids)) for ids in batches[:40]) / 40
    assert state_bytes[torch.bfloat16] * 2 == state_bytes[torch.float32]
    assert losses[torch.float32] < 0.6 * start
    assert abs(losses[torch.bfloat16] - losses[torch.float32]) < 0.03 * start
