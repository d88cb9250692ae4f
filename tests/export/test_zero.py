"""ZeRO-3 checkpoints that hold only DeepSpeed shards are consolidated inside merge (no zero_to_fp32 by hand).

tests/reliability/test_files.py checks the consolidation against DeepSpeed's own on 2-rank ZeRO-2/3 shards.
"""
import os
import socket
import sys

import pytest
import torch
from export_helpers import LORA, multimodal_logits
from safetensors.torch import load_file

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.checkpoint.tensors import assign_tensors
from llava_ln.checkpoint.zero_shards import consolidate_zero_checkpoint, zero_checkpoint_dir
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.processes import free_port, run_in_group
from llava_ln.export.merge import merge_checkpoint
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode

SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
pytest.importorskip("deepspeed")


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory, tiny_llm, tiny_vision):
    out = str(tmp_path_factory.mktemp("zero") / "checkpoint-2")
    env = dict(os.environ, MASTER_PORT=str(free_port()), DS_ACCELERATOR="cpu")
    done = run_in_group([sys.executable, os.path.join(SUPPORT, "export_zero_job.py"), tiny_llm("llama"),
                         tiny_vision("clip"), out], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_shard_only_checkpoint_is_consolidated_by_merge(tmp_path, zero_run, tiny_llm, tiny_vision):
    assert not os.path.exists(os.path.join(zero_run, "trained.safetensors"))
    merged = str(tmp_path / "merged")
    result = merge_checkpoint(zero_run, merged, log=lambda *_: None)
    assert result.folded_lora
    # Reference: the trained module rebuilt by hand from the tensors the job gathered itself.
    tokenizer = load_tokenizer(tiny_llm("llama"))
    model, _ = build_mllm(ModelArguments(model_name_or_path=tiny_llm("llama"), vision_tower=tiny_vision("clip")),
                          tokenizer)
    model, _ = apply_tune_mode(model, TuningArguments(tune_mode="lora", lora_r=LORA["r"], lora_alpha=LORA["alpha"]))
    expected = load_file(os.path.join(zero_run, "expected.safetensors"))
    assign_tensors(model, {n.removeprefix("base_model.model."): t for n, t in expected.items()}, "expected")
    reference = model.merge_and_unload().eval()
    torch.testing.assert_close(multimodal_logits(load_checkpoint(merged).model), multimodal_logits(reference),
                               rtol=1e-5, atol=1e-5)


def test_a_shard_with_foreign_pickled_objects_is_refused(tmp_path, zero_run):
    import shutil

    copy = str(tmp_path / "ckpt")
    shutil.copytree(zero_run, copy)
    step_dir = zero_checkpoint_dir(copy)
    target = os.path.join(step_dir, "zero_pp_rank_0_mp_rank_00_model_states.pt")
    torch.save({"module": {}, "payload": socket.socket}, target)  # a global no DeepSpeed checkpoint holds
    with pytest.raises(LlavaLnError, match=r"model_states\.pt: refusing a DeepSpeed shard .* GLOBAL _?socket"):
        consolidate_zero_checkpoint(copy)
    with pytest.raises(LlavaLnError, match="refusing a DeepSpeed shard"):
        merge_checkpoint(copy, str(tmp_path / "merged"))
