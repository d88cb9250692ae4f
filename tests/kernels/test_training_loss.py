"""End to end on a composed tiny LLaVA: the kernels' loss path equals today's TrainingModule.

multimodal_supervised_loss (lean modules swapped in, fused head + loss) against TrainingModule
(transformers' modules, logits at supervised positions, F.cross_entropy) on a mixed image / text
batch: same loss, same gradient for every trainable parameter, for the mean and for the sum that
token weighting uses. Qwen2 has a tied head, Phi a head with bias; ln trains the head and
embeddings, ln_simple only the norms.
"""
import copy

import pytest
import torch
from kernel_helpers import relative_error
from model_helpers import build, mixed_batch

from llava_ln.kernels.apply import apply_kernels
from llava_ln.kernels.loss import multimodal_supervised_loss
from llava_ln.training.strategy import TrainingModule


def _step(loss_fn, model, batch):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family,mode,reduction", [("llama", "ln", "mean"), ("qwen2", "ln", "mean"), ("phi", "ln", "mean"),
                                                   ("llama", "ln_simple", "mean"), ("qwen2", "ln", "sum")])
def test_kernel_loss_path_matches_training_module(tiny_llm, tiny_vision, family, mode, reduction):
    model, spec = build(tiny_llm, tiny_vision, family, mode)
    lean = copy.deepcopy(model)
    report = apply_kernels(lean, "torch")
    assert report.replaced
    batch = mixed_batch(spec)
    loss_ref, grads_ref = _step(lambda m, b: TrainingModule(m, reduction)(b), model, batch)
    loss, grads = _step(lambda m, b: multimodal_supervised_loss(m, b, backend="torch", chunk_rows=5,
                                                                reduction=reduction), lean, batch)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    assert grads.keys() == grads_ref.keys()
    for name, grad in grads_ref.items():
        assert grad is not None and grads[name] is not None, name
        assert relative_error(grads[name], grad) < 1e-4, name
