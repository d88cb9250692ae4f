"""Every lean norm and MLP equals the transformers module it replaces: forward, input and parameter gradients.

Modules come from tiny models of each family (apply_kernels picks them by class). fp32 must agree to
rounding; in bf16 both are compared with the original run in fp32 on the same values, and the lean
module may not be further from that reference than the original is, beyond a bf16 rounding step.
"""
import copy

import pytest
import torch
from kernel_helpers import KERNEL_FAMILIES, module_pairs, relative_error, run_with_grads, tiny_lm

from llava_ln.kernels.apply import apply_kernels

EXPECTED = {  # family -> (norm class, MLP class) apply_kernels must find
    "llama": ("LlamaRMSNorm", "LlamaMLP"), "mistral": ("MistralRMSNorm", "MistralMLP"),
    "qwen2": ("Qwen2RMSNorm", "Qwen2MLP"), "phi": ("LayerNorm", "PhiMLP"),
    "gpt_neox": ("LayerNorm", "GPTNeoXMLP"), "gemma": ("GemmaRMSNorm", "GemmaMLP"),
    "gemma2": ("Gemma2RMSNorm", "Gemma2MLP"),
}
BF16_STEP = 2.0**-7  # two bf16 roundings, relative


def _width(module) -> int:
    weight = getattr(module, "weight", None)
    if weight is not None and weight.dim() == 1:
        return weight.shape[0]
    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear)).in_features


def _inputs(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, _width(module), generator=gen) * 2.0 + 0.3
    with torch.no_grad():
        out = module(x)
    return x, torch.randn(out.shape, generator=gen)


def _all_trainable(*modules):
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(True)


@pytest.mark.parametrize("family", KERNEL_FAMILIES)
def test_each_family_has_its_norm_and_mlp_replaced(family):
    classes = {name.split(":")[0] for name, _, _ in module_pairs(family)}
    assert set(EXPECTED[family]) <= classes


@pytest.mark.parametrize("family", KERNEL_FAMILIES)
def test_lean_modules_match_in_fp32(family):
    for name, original, lean in module_pairs(family):
        _all_trainable(original, lean)
        x, grad_out = _inputs(original)
        out_o, dx_o, grads_o = run_with_grads(original, x, grad_out)
        out_l, dx_l, grads_l = run_with_grads(lean, x, grad_out)
        assert out_l.dtype == out_o.dtype, name
        torch.testing.assert_close(out_l, out_o, rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(dx_l, dx_o, rtol=1e-4, atol=1e-5, msg=name)
        assert grads_l.keys() == grads_o.keys() and grads_o, name
        for key in grads_o:
            torch.testing.assert_close(grads_l[key], grads_o[key], rtol=1e-4, atol=1e-5, msg=f"{name} {key}")


@pytest.mark.parametrize("family", KERNEL_FAMILIES)
def test_lean_modules_match_in_bf16(family):
    for name, original, lean in module_pairs(family):
        _all_trainable(original, lean)
        reference = copy.deepcopy(original)  # fp32, run on the bf16-rounded values
        original.to(torch.bfloat16)
        lean.to(torch.bfloat16)
        x, grad_out = _inputs(original.float())
        original.to(torch.bfloat16)
        x, grad_out = x.bfloat16(), grad_out.bfloat16()
        with torch.no_grad():
            for p_ref, p_bf in zip(reference.parameters(), original.parameters()):
                p_ref.copy_(p_bf.float())
        truth = run_with_grads(reference, x.float(), grad_out.float())
        got_o = run_with_grads(original, x, grad_out)
        got_l = run_with_grads(lean, x, grad_out)
        assert got_l[0].dtype == got_o[0].dtype == torch.bfloat16, name
        pairs = [("output", got_l[0], got_o[0], truth[0]), ("input grad", got_l[1], got_o[1], truth[1])]
        pairs += [(key, got_l[2][key], got_o[2][key], truth[2][key]) for key in truth[2]]
        for what, lean_value, original_value, true_value in pairs:
            lean_error = relative_error(lean_value, true_value)
            original_error = relative_error(original_value, true_value)
            assert lean_error <= original_error + BF16_STEP, f"{name} {what}: {lean_error} vs {original_error}"


@pytest.mark.parametrize("family", ["llama", "gemma", "phi"])
def test_norms_with_fp32_master_weights_and_bf16_input(family):
    """The training setup: trainable norm weights stay fp32 while activations are bf16."""
    for name, original, lean in module_pairs(family):
        if not (hasattr(original, "weight") and original.weight.dim() == 1):
            continue
        x, grad_out = _inputs(original)
        x = x.bfloat16()
        out_o, dx_o, grads_o = run_with_grads(original, x, grad_out)
        out_l, dx_l, grads_l = run_with_grads(lean, x, grad_out)
        assert dx_l.dtype == dx_o.dtype == torch.bfloat16, name
        assert out_l.dtype == out_o.dtype, name
        # The native mixed-dtype LayerNorm rounds even its fp32 weight/bias gradients to bf16's grid.
        assert relative_error(out_l, out_o) < BF16_STEP and relative_error(dx_l, dx_o) < 2 * BF16_STEP, name
        for key in grads_o:
            assert grads_l[key].dtype == torch.float32
            assert relative_error(grads_l[key], grads_o[key]) < 2 * BF16_STEP, f"{name} {key}"


def _model_grads(model, ids, autocast=False, checkpointing=False):
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family,autocast,checkpointing", [("llama", True, False), ("phi", True, False),
                                                           ("qwen2", False, True)])
def test_whole_model_norm_tuning_matches(family, autocast, checkpointing):
    """Norm-only tuning of a whole model: same loss and norm gradients, under CPU autocast or recompute."""
    original = tiny_lm(family)
    for module in original.modules():
        for param in module.parameters(recurse=False):
            param.requires_grad_(param.dim() == 1 and "Norm" in type(module).__name__)
    lean = copy.deepcopy(original)
    apply_kernels(lean, "torch")
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(3))
    loss_o, grads_o = _model_grads(original, ids, autocast, checkpointing)
    loss_l, grads_l = _model_grads(lean, ids, autocast, checkpointing)
    tolerance = 2e-2 if autocast else 1e-5
    torch.testing.assert_close(loss_l, loss_o, rtol=tolerance, atol=tolerance)
    assert grads_l.keys() == grads_o.keys() and grads_o
    for key in grads_o:
        assert relative_error(grads_l[key], grads_o[key]) < (5e-2 if autocast else 1e-4), key


def test_lora_wrapped_projections_still_train_through_the_lean_mlp():
    from peft import LoraConfig, get_peft_model

    base = tiny_lm("llama")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["gate_proj", "up_proj", "down_proj"], init_lora_weights=False)
    original = get_peft_model(copy.deepcopy(base), config)
    lean = get_peft_model(copy.deepcopy(base), config)
    with torch.no_grad():
        for p_lean, p_orig in zip(lean.parameters(), original.parameters()):
            p_lean.copy_(p_orig)
    report = apply_kernels(lean, "torch")
    assert report.replaced["LlamaMLP"] == {"torch:gated(silu)": 2}
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(4))
    loss_o, grads_o = _model_grads(original, ids)
    loss_l, grads_l = _model_grads(lean, ids)
    torch.testing.assert_close(loss_l, loss_o)
    lora = [key for key in grads_o if "lora_" in key]
    assert lora and set(lora) <= set(grads_l)
    for key in lora:
        torch.testing.assert_close(grads_l[key], grads_o[key], rtol=1e-4, atol=1e-6)
