"""bench.step_cost: one JSON object with the KEYS below for llava-ln's step and the plain transformers baseline,
and figures that hang together (checkpointing adds FLOPs and saves memory; auto stays within its budget)."""
import json

import pytest

from bench import step_cost

KEYS = {"saved_bytes_per_token_per_block", "flops_per_token", "recompute_flops_per_token", "checkpointed_blocks",
        "estimated_peak_gib"}
SHAPE = ["--shape", "tiny", "--mode", "ln", "--batch", "2", "--seq", "128", "--json"]


def _run(capsys, *extra) -> dict:
    assert step_cost.main([*SHAPE, *extra]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # ONE JSON object
    return json.loads(lines[0])


def test_step_cost_json_keys_and_consistency(capsys):
    on, off = _run(capsys, "--gradient_checkpointing", "on"), _run(capsys, "--gradient_checkpointing", "off")
    for result in (on, off):
        assert KEYS <= set(result) and KEYS <= set(result["baseline"])
        assert result["baseline"]["checkpointed_blocks"] == result["baseline"]["recompute_flops_per_token"] == 0
        assert 0 < result["saved_bytes_per_token_per_block"] < result["baseline"]["saved_bytes_per_token_per_block"]
    blocks = on["blocks"]
    assert (on["checkpointed_blocks"], off["checkpointed_blocks"]) == (blocks, 0)
    # Recompute costs FLOPs and buys memory; without it the step executes exactly the uncheckpointed FLOPs.
    assert on["flops_per_token"] > off["flops_per_token"] and on["recompute_flops_per_token"] > 0
    assert off["recompute_flops_per_token"] == 0 and off["flops_ratio_to_no_recompute"] == 1.0
    assert on["flops_per_token"] == pytest.approx(off["flops_per_token"] + on["recompute_flops_per_token"], abs=1)
    assert on["estimated_peak_gib"] < off["estimated_peak_gib"]
    # auto: the least recompute that fits; a budget between the two extremes gives a partial plan inside it.
    budget = (on["estimated_peak_gib"] + off["estimated_peak_gib"]) / 2
    auto = _run(capsys, "--gradient_checkpointing", "auto", "--memory_budget_gib", f"{budget:.9f}")
    assert 0 < auto["checkpointed_blocks"] <= blocks and auto["estimated_peak_gib"] <= budget
    assert off["flops_per_token"] < auto["flops_per_token"] <= on["flops_per_token"]
    roomy = _run(capsys, "--gradient_checkpointing", "auto", "--memory_budget_gib", "1000")
    assert roomy["checkpointed_blocks"] == 0 and roomy["flops_per_token"] == off["flops_per_token"]
