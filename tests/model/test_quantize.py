"""model/quantize.py: which layers become bitsandbytes layers, and their bytes counted from shapes alone."""
import pytest
import torch
from torch import nn

from llava_ln.core.errors import LlavaLnError
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.model.quantize import (
    QuantSettings,
    block_linears,
    measured_bytes,
    quant_settings,
    quantization_of,
    quantize_llm_linears,
    quantized_footprint,
    weight_bytes,
)

bnb = pytest.importorskip("bitsandbytes")
SETTINGS = [QuantSettings(4, "nf4", True), QuantSettings(4, "fp4", False), QuantSettings(8)]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.describe())
@pytest.mark.parametrize("shape", [(64, 32), (96, 200), (1000, 130)])
def test_bytes_from_shapes_are_the_bytes_bitsandbytes_allocates(settings, shape):
    """(1000, 130): 2032 blocks of 64, so the double-quant statistics span a partial block of 256."""
    model = nn.Sequential(nn.Linear(shape[1], shape[0]))
    layer = _quantize_one(model[0], settings)
    assert measured_bytes(layer) == weight_bytes(shape, settings)


def _quantize_one(linear, settings):
    from llava_ln.model.quantize import _quantized_copy

    return _quantized_copy(bnb, linear, settings, cpu_inference_layout=False).to("cpu")


@pytest.fixture(scope="module")
def model_factory(tiny_llm, tiny_vision):
    llm, vision = tiny_llm("qwen2"), tiny_vision("clip")  # Qwen2: q/k/v biases, tied embeddings

    def build():
        return build_mllm(ModelArguments(model_name_or_path=llm, vision_tower=vision), load_tokenizer(llm))[0]

    return build


def test_only_the_llm_block_linears_are_replaced(model_factory):
    model = model_factory()
    expected = {name for name, _ in block_linears(model)}
    footprint = quantized_footprint(model, SETTINGS[0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.eval()
    assert quantize_llm_linears(model, SETTINGS[0]) == len(expected) == 2 * 7
    replaced = {n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert replaced == expected
    assert all(not m.training for m in model.modules())  # eval mode carried over to the new layers
    assert footprint.bytes == sum(measured_bytes(model.get_submodule(n)) for n in expected)
    for name, param in model.named_parameters():
        if name.rpartition(".")[0] in expected and name.endswith(".weight"):
            assert param.dtype == torch.uint8 and not param.requires_grad
        else:  # biases of the quantized layers, norms, embeddings, head, connector, tower: untouched
            assert torch.equal(param, before[name]), name
    assert quantization_of(model) == SETTINGS[0] and model.is_loaded_in_4bit
    with pytest.raises(ValueError, match="already quantized"):
        quantize_llm_linears(model, SETTINGS[0])


def test_quantized_forward_stays_close_to_the_original(model_factory):
    model = model_factory().eval()
    ids = torch.tensor([[1, 7, 42, 99, 3]])
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        errors = {}
        for settings in SETTINGS:
            quantized = model_factory().eval()
            quantize_llm_linears(quantized, settings)
            errors[settings.bits, settings.quant_type] = float((quantized(input_ids=ids).logits - reference).abs().max())
    assert 0 < errors[8, "nf4"] < errors[4, "nf4"] < 0.5 * reference.abs().max()


@pytest.mark.parametrize("flags,message", [((3,), "--bits 3"), ((4, "int4"), "--quant_type 'int4'")])
def test_flag_values_are_checked(flags, message):
    with pytest.raises(LlavaLnError, match=message):
        quant_settings(*flags)
    assert quant_settings(16) is None


def test_a_model_loaded_in_4bit_elsewhere_is_not_quantized_again(model_factory):
    model = model_factory()
    name, linear = block_linears(model)[0]
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, _quantize_one(linear, SETTINGS[0]))
    with pytest.raises(LlavaLnError, match="already quantized"):
        quantize_llm_linears(model, SETTINGS[0])
