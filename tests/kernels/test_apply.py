"""apply_kernels: which backend it picks, what it swaps (by class), what it leaves alone and reports, and that
"none" changes nothing while "torch" keeps every parameter, name and class as they were."""
import copy

import pytest
import torch
from kernel_helpers import KERNEL_CONFIGS, tiny_lm
from torch import nn

from llava_ln.core.errors import LlavaLnError
from llava_ln.kernels.apply import apply_kernels, remove_kernels, resolve_kernel_backend


def _swapped(model):
    return [name for name, module in model.named_modules() if "forward" in vars(module)]


def _logits(model, seed=0):
    ids = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_none_changes_nothing():
    model = tiny_lm("llama")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    reference = _logits(model)
    report = apply_kernels(model, "none")
    assert (report.backend, report.replaced, report.untouched) == ("none", {}, {})
    assert _swapped(model) == []
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert torch.equal(_logits(model), reference)


def test_torch_swaps_by_class_and_keeps_parameters_names_and_classes():
    model = tiny_lm("llama")
    layers = KERNEL_CONFIGS["llama"]().num_hidden_layers
    params = dict(model.named_parameters())
    classes = {name: type(module) for name, module in model.named_modules()}
    reference = _logits(model)
    report = apply_kernels(model, "torch")
    assert report.replaced == {"LlamaRMSNorm": {"torch:norm(llama)": 2 * layers + 1},
                               "LlamaMLP": {"torch:gated(silu)": layers}}
    assert dict(model.named_parameters()).keys() == params.keys()
    assert all(p is params[name] for name, p in model.named_parameters())
    assert {name: type(module) for name, module in model.named_modules()} == classes
    torch.testing.assert_close(_logits(model), reference)
    assert "LlamaRMSNorm x5 -> torch:norm(llama)" in report.summary()


def test_unknown_classes_are_left_untouched_and_reported():
    class ScaledRMSNorm(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(width))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    class GatedMLP(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.inner = nn.Linear(width, width)

        def forward(self, x):
            return self.inner(x)

    model = tiny_lm("llama")
    width = model.config.hidden_size
    model.model.norm = ScaledRMSNorm(width)
    model.model.layers[0].mlp = GatedMLP(width)
    model.model.layers[1].mlp.act_fn = nn.ReLU()
    report = apply_kernels(model, "torch")
    assert report.untouched == {"ScaledRMSNorm": "unknown norm class", "GatedMLP": "unknown MLP class",
                                "LlamaMLP": "activation ReLU not covered"}
    assert "LlamaMLP" not in report.replaced
    assert report.replaced["LlamaRMSNorm"] == {"torch:norm(llama)": 4}
    assert "forward" not in vars(model.model.norm) and "forward" not in vars(model.model.layers[1].mlp)


def test_backend_choice():
    assert resolve_kernel_backend("auto", "cpu")[0] == "torch"
    assert resolve_kernel_backend("torch", "cpu") == ("torch", "requested")
    assert resolve_kernel_backend("none", "cpu")[0] == "none"
    with pytest.raises(LlavaLnError) as err:
        resolve_kernel_backend("liger", "cpu")
    assert "--kernels liger" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(LlavaLnError, match="--kernels 'triton'"):
        apply_kernels(tiny_lm("llama"), "triton")


def test_reapply_replaces_remove_restores_and_deepcopy_rebinds():
    model = tiny_lm("phi")
    first = apply_kernels(model, "torch")
    second = apply_kernels(model, "torch")
    assert first.replaced == second.replaced
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.model.final_layernorm.weight.mul_(2.0)
    assert not torch.allclose(_logits(clone), _logits(model))  # the clone's forward reads the clone's weight
    count = sum(sum(impls.values()) for impls in first.replaced.values())
    assert remove_kernels(model) == count and _swapped(model) == []


def test_composed_model_only_the_language_model_is_swapped(tiny_llm, tiny_vision):
    from model_helpers import build

    from llava_ln.model.parts import connector_of, language_model_of, vision_tower_of

    model, _ = build(tiny_llm, tiny_vision, "phi", "ln")
    apply_kernels(model, "torch")
    assert _swapped(vision_tower_of(model)) == [] and _swapped(connector_of(model)) == []
    assert _swapped(language_model_of(model))
