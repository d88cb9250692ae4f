"""LLaVA's `.bin` tensor files load tensor-only: projectors work, anything else is refused unexecuted."""
import os

import pytest
import torch
from model_helpers import build

from llava_ln.checkpoint.run_folder import connector_parameters, load_connector
from llava_ln.checkpoint.tensors import load_torch_tensors_safely
from llava_ln.core.errors import LlavaLnError


class _Payload:
    """A pickle that would run code on load: it touches a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _llava_projector(model) -> dict:
    """The connector under LLaVA's names (nn.Sequential indices 0 and 2), with new values."""
    generator = torch.Generator().manual_seed(3)
    renamed = {}
    for name, param in connector_parameters(model).items():
        index = {"linear_1": 0, "linear_2": 2}[name.split(".")[-2]]
        renamed[f"model.mm_projector.{index}.{name.rsplit('.', 1)[-1]}"] = torch.randn(param.shape, generator=generator)
    return renamed


@pytest.mark.parametrize("as_folder", [False, True])
def test_llava_mm_projector_bin_loads_as_the_stage1_connector(tmp_path, tiny_llm, tiny_vision, as_folder):
    model, _ = build(tiny_llm, tiny_vision, "llama", "ln")
    stored = _llava_projector(model)
    torch.save(stored, tmp_path / "mm_projector.bin")
    values = load_connector(model, str(tmp_path if as_folder else tmp_path / "mm_projector.bin"))
    params = connector_parameters(model)
    for index, linear in ((0, "linear_1"), (2, "linear_2")):
        for kind in ("weight", "bias"):
            expected = stored[f"model.mm_projector.{index}.{kind}"]
            torch.testing.assert_close(params[f"model.multi_modal_projector.{linear}.{kind}"].detach(), expected)
            torch.testing.assert_close(values[f"model.multi_modal_projector.{linear}.{kind}"], expected)


def test_code_in_a_bin_file_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "was_executed"
    torch.save({"model.mm_projector.0.weight": _Payload(str(marker))}, tmp_path / "evil.bin")
    with pytest.raises(LlavaLnError, match="refusing to unpickle") as err:
        load_torch_tensors_safely(str(tmp_path / "evil.bin"))
    assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("payload,message", [
    ({"step": 3}, "entry 'step' is a int"),
    ([torch.zeros(2)], "holds a list"),
])
def test_non_tensor_content_is_refused(tmp_path, payload, message):
    torch.save(payload, tmp_path / "x.bin")
    with pytest.raises(LlavaLnError, match=message):
        load_torch_tensors_safely(str(tmp_path / "x.bin"))


def test_missing_bin_is_named(tmp_path):
    with pytest.raises(LlavaLnError, match="does not exist"):
        load_torch_tensors_safely(os.path.join(tmp_path, "none.bin"))
