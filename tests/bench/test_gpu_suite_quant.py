"""The GPU suite's quantized-base steps (bench/gpu_suite_quant.py): their judgement on made-up outputs.

The chain itself runs at tiny size on a CPU with `bash bench/gpu_suite.sh --dry_run --quant` (70 s on an
idle 2-core machine, 4 minutes on a busy one; not part of make test, whose budget the usual dry run already uses; every command it
runs is covered by tests/training/test_quantized.py and tests/export/test_quantized_export.py).
"""
import json

from bench import gpu_suite_quant as quant


def _lines(path, records: list) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"torch": "x"}) + "\n")
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return str(path)


def test_the_24_gib_target_fails_a_step_only_when_no_micro_batch_fits(tmp_path):
    fits = {"mode": "ln", "micro_batch": 2, "tokens_per_s": 900.0, "peak_mem_gib": 19.5, "loss_last": 6.9}
    too_big = {"mode": "ln", "micro_batch": 4, "tokens_per_s": 1000.0, "peak_mem_gib": 31.2, "loss_last": 6.9}
    oom = {"mode": "ln", "micro_batch": 8, "error": "OOM"}
    good = quant.quant_throughput_facts(_lines(tmp_path / "a.out", [too_big, fits, oom]), check_target=True)
    assert good["problems"] == [] and good["fits_target"] is True and len(good["configs"]) == 3
    bad = quant.quant_throughput_facts(_lines(tmp_path / "b.out", [too_big, oom]), check_target=True)
    assert bad["fits_target"] is False and "24.0 GiB" in bad["problems"][0]
    nan = dict(fits, loss_last=float("nan"))
    assert "non-finite loss" in quant.quant_throughput_facts(_lines(tmp_path / "c.out", [nan]), False)["problems"]
    assert quant.quant_throughput_facts(_lines(tmp_path / "d.out", [oom]), False)["problems"] == [
        "no configuration measured"]


def test_quant_table_puts_ours_next_to_the_baseline(tmp_path):
    _lines(tmp_path / "quant_13b_ln.out", [{"mode": "ln", "micro_batch": 4, "accumulation": 4, "tokens_per_s": 5.0,
                                            "peak_mem_gib": 20.0, "loss_last": 1.0}])
    _lines(tmp_path / "quant_13b_baseline.out", [{"mode": "lora", "batch": 4, "tokens_per_s": 4.0,
                                                  "peak_mem_gib": 60.0}])
    rows = quant.quant_table(str(tmp_path))
    assert rows == [
        {"impl": "llava-ln 4-bit", "mode": "ln", "micro_batch": 4, "accumulation": 4, "tokens_per_s": 5.0,
         "peak_gib": 20.0},
        {"impl": "baseline bf16", "mode": "lora", "micro_batch": 4, "accumulation": 1, "tokens_per_s": 4.0,
         "peak_gib": 60.0},
    ]
