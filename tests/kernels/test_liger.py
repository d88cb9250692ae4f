"""--kernels liger|auto on a CPU, with a plain-torch stand-in for the liger_kernel package (fake_liger.py).

What is checked is llava-ln's side: when liger is chosen and when not, which modules of each family get a liger
kernel and which fall back to the torch functions, the arguments each liger function receives (the module's own
weight, bias and eps; offset and casting mode by norm style; never in place), the fused head + loss, the same
values and gradients as the torch backend, the report that training logs and records in run_config.json, and the
one-line errors. liger's Triton kernels themselves need a GPU and are not run here.
"""
import copy
import json
import logging
import os

import pytest
import torch
from fake_liger import FakeLiger, uninstall_liger
from kernel_helpers import KERNEL_FAMILIES, tiny_lm
from torch import nn

from llava_ln import train as train_script
from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.core.errors import LlavaLnError
from llava_ln.kernels.apply import apply_kernels, resolve_kernel_backend
from llava_ln.kernels.loss import supervised_lm_loss

EPS = 0.0123  # no family's default: an eps that reaches liger from anywhere but the module would show
NOT_INSTALLED = "liger-kernel is not installed (pip install 'llava-ln[kernels]')"

# Two blocks per tiny model. Norms: LLaMA-style blocks have two plus the final one, Gemma-2 four plus the final
# one, Phi one plus the final one. Phi's and GPT-NeoX's MLPs are not gated: liger has no kernel for them.
EXPECTED_REPLACED = {
    "llama": {"LlamaRMSNorm": {"liger:norm(llama)": 5}, "LlamaMLP": {"liger:gated(silu)": 2}},
    "mistral": {"MistralRMSNorm": {"liger:norm(llama)": 5}, "MistralMLP": {"liger:gated(silu)": 2}},
    "qwen2": {"Qwen2RMSNorm": {"liger:norm(llama)": 5}, "Qwen2MLP": {"liger:gated(silu)": 2}},
    "gemma": {"GemmaRMSNorm": {"liger:norm(gemma)": 5}, "GemmaMLP": {"liger:gated(gelu_tanh)": 2}},
    "gemma2": {"Gemma2RMSNorm": {"liger:norm(gemma)": 9}, "Gemma2MLP": {"liger:gated(gelu_tanh)": 2}},
    "phi": {"LayerNorm": {"liger:norm(layer)": 3}, "PhiMLP": {"torch:activation(gelu_tanh)": 2}},
    "gpt_neox": {"LayerNorm": {"liger:norm(layer)": 5}, "GPTNeoXMLP": {"torch:activation(gelu)": 2}},
}
# (offset, casting mode) liger_rms_norm must get: LLaMA scales by w, Gemma by (1 + w) computed in fp32.
RMS_STYLE = {"llama": (0.0, "llama"), "mistral": (0.0, "llama"), "qwen2": (0.0, "llama"), "gemma": (1.0, "gemma"),
             "gemma2": (1.0, "gemma")}


@pytest.fixture
def on_cuda(monkeypatch):
    """torch reports a CUDA device (the models still run on the CPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture
def liger(monkeypatch):
    return FakeLiger().install(monkeypatch)


def _logits_and_grads(model, seed=0):
    ids = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(seed))
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids).logits
    logits.square().mean().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_the_choice_of_backend(monkeypatch, on_cuda):
    liger = FakeLiger().install(monkeypatch)
    assert resolve_kernel_backend("liger", "cuda") == ("liger", "requested")
    assert resolve_kernel_backend("auto", "cuda") == ("liger", "auto: CUDA and liger-kernel available")
    assert resolve_kernel_backend("auto") == ("liger", "auto: CUDA and liger-kernel available")  # device from torch
    assert resolve_kernel_backend("torch", "cuda") == ("torch", "requested")
    assert resolve_kernel_backend("auto", "cpu") == ("torch", "auto: liger needs CUDA, this run is on cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_kernel_backend("auto") == ("torch", "auto: liger needs CUDA, this run is on cpu")
    assert liger.calls == []  # choosing runs no kernel


def test_auto_without_a_working_package_falls_back_to_torch_and_says_why(monkeypatch, on_cuda):
    uninstall_liger(monkeypatch)
    assert resolve_kernel_backend("auto", "cuda") == ("torch", f"auto: {NOT_INSTALLED}")
    FakeLiger(with_functional=False).install(monkeypatch)  # installed, but its functional API does not import
    backend, reason = resolve_kernel_backend("auto", "cuda")
    assert backend == "torch" and reason.startswith("auto: liger_kernel fails to import: ") and "functional" in reason


def test_liger_where_it_cannot_run_is_a_one_line_error(monkeypatch, on_cuda):
    uninstall_liger(monkeypatch)
    with pytest.raises(LlavaLnError) as err:
        apply_kernels(tiny_lm("llama"), "liger", "cuda")
    assert str(err.value) == f"--kernels liger cannot run here: {NOT_INSTALLED}; use --kernels torch or auto"
    FakeLiger().install(monkeypatch)
    with pytest.raises(LlavaLnError) as err:
        apply_kernels(tiny_lm("llama"), "liger", "cpu")
    assert str(err.value) == "--kernels liger needs a CUDA device (this run is on cpu); use --kernels torch or auto"


@pytest.mark.parametrize("family", KERNEL_FAMILIES)
def test_liger_replaces_what_it_covers_with_the_modules_own_arguments(family, liger, on_cuda):
    model = tiny_lm(family, rms_norm_eps=EPS, layer_norm_eps=EPS)
    reference = copy.deepcopy(model)
    apply_kernels(reference, "torch")
    report = apply_kernels(model, "liger", "cuda")
    assert (report.backend, report.replaced, report.untouched) == ("liger", EXPECTED_REPLACED[family], {})

    logits, grads = _logits_and_grads(model)
    want_logits, want_grads = _logits_and_grads(reference)
    torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)

    # One forward: each replaced module called its liger function once, with its own tensors.
    norms = [m for m in model.modules() if getattr(m, "_llava_ln_kernel", "").startswith("liger:norm")]
    mlps = [m for m in model.modules() if getattr(m, "_llava_ln_kernel", "").startswith("liger:gated")]
    rms, layer = liger.of("liger_rms_norm"), liger.of("liger_layer_norm")
    if family in RMS_STYLE:
        assert len(rms) == len(norms) and layer == []
        assert {id(call["W"]) for call in rms} == {id(m.weight) for m in norms}
        offset, casting = RMS_STYLE[family]
        assert all((c["eps"], c["offset"], c["casting_mode"], c["in_place"]) == (EPS, offset, casting, False)
                   for c in rms)
    else:
        assert len(layer) == len(norms) and rms == []
        assert {(id(c["W"]), id(c["B"])) for c in layer} == {(id(m.weight), id(m.bias)) for m in norms}
        assert all(c["eps"] == EPS for c in layer)
    gated = liger.of("liger_swiglu") + liger.of("liger_geglu")
    assert len(gated) == len(mlps)
    width = model.config.intermediate_size
    assert all(c["a"].shape[-1] == c["b"].shape[-1] == width for c in gated)
    if family.startswith("gemma"):  # liger's GEGLU is the tanh form, which these families use
        assert liger.of("liger_swiglu") == []


def test_a_norm_liger_does_not_cover_keeps_the_torch_function(liger, on_cuda):
    model = tiny_lm("phi")
    width = model.config.hidden_size
    model.model.final_layernorm = nn.LayerNorm(width, bias=False)  # liger's layer norm needs a bias
    report = apply_kernels(model, "liger", "cuda")
    assert report.replaced["LayerNorm"] == {"liger:norm(layer)": 2, "torch:norm(layer)": 1}
    _logits_and_grads(model)
    assert all(call["W"] is not model.model.final_layernorm.weight for call in liger.of("liger_layer_norm"))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_fused_loss_through_liger_matches_torch(liger, reduction):
    """Both reductions: "sum" is what a token-weighted step weighs (training.loop), "mean" LLaVA's weighting."""
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=True)
    hidden = torch.randn(2, 9, 16, requires_grad=True)
    labels = torch.randint(0, 50, (2, 9))
    labels[0, :4] = IGNORE_INDEX
    losses, grads = {}, {}
    for backend in ("liger", "torch", "none"):
        head.zero_grad(set_to_none=True)
        hidden.grad = None
        losses[backend] = supervised_lm_loss(hidden, head, labels, backend=backend, reduction=reduction)
        losses[backend].backward()
        grads[backend] = (hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone())
    for backend in ("torch", "none"):
        torch.testing.assert_close(losses["liger"], losses[backend], rtol=1e-5, atol=1e-6)
        for got, want in zip(grads["liger"], grads[backend]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (call,) = liger.of("liger_fused_linear_cross_entropy")
    supervised = int((labels[:, 1:] != IGNORE_INDEX).sum())  # each row predicts the next token
    assert call["input"].shape == (supervised, 16) and call["target"].shape == (supervised,)
    assert call["weight"] is head.weight and call["bias"] is head.bias
    assert (call["ignore_index"], call["reduction"]) == (IGNORE_INDEX, reduction)
    # No supervised row at all: the loss is a zero in the graph, and liger is not called with empty input.
    empty = supervised_lm_loss(hidden, head, torch.full_like(labels, IGNORE_INDEX), backend="liger",
                               reduction=reduction)
    assert empty.requires_grad and float(empty.detach()) == 0.0 and len(liger.of("liger_fused_linear_cross_entropy")) == 1


def test_the_report_is_logged(liger, on_cuda, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("llava_ln"), "propagate", True)  # training's logging setup turns it off
    with caplog.at_level(logging.INFO, logger="llava_ln.kernels.apply"):
        apply_kernels(tiny_lm("llama"), "auto", "cuda")
    assert "kernels: liger (requested auto; auto: CUDA and liger-kernel available); replaced " in caplog.text
    assert "LlamaRMSNorm x5 -> liger:norm(llama)" in caplog.text


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    from train_helpers import train_world

    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def test_training_with_kernels_liger(world, tmp_path, liger, monkeypatch):
    """`llava-ln train --kernels liger` with the kernel choice made as on a CUDA machine (the run stays on the CPU):
    the fused loss goes through liger, the losses are the torch backend's, and run_config.json records the choice."""
    from train_helpers import flags, read_log

    choose_on_cuda = apply_kernels

    def apply_kernels_as_on_cuda(model, choice, device):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.cuda, "is_available", lambda: True)
            return choose_on_cuda(model, choice, "cuda")

    runs = {}
    for kernels in ("torch", "liger"):
        runs[kernels] = str(tmp_path / kernels)
        with pytest.MonkeyPatch.context() as patch:
            if kernels == "liger":
                patch.setattr(train_script, "apply_kernels", apply_kernels_as_on_cuda)
            assert train_script.main(flags(world, runs[kernels], kernels=kernels, max_steps=2)) == 0
    with open(os.path.join(runs["liger"], "run_config.json"), encoding="utf-8") as handle:
        recorded = json.load(handle)["resolved"]["kernels"]
    assert recorded == {"requested": "liger", "backend": "liger", "reason": "requested",
                        "replaced": EXPECTED_REPLACED["llama"], "untouched": {}}
    assert len(liger.of("liger_fused_linear_cross_entropy")) == 2  # one micro-batch per step
    got, want = read_log(runs["liger"]), read_log(runs["torch"])
    assert sorted(got) == sorted(want) == [1, 2]
    for step in want:
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-5), step
