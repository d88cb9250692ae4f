"""The GPU suite's optional quantized-base steps: `bash bench/gpu_suite.sh --quant`.

They run INSTEAD of the usual steps, in a device call of their own (the usual suite fills its budget),
after toy_world:
  quant_zero2_ln      `llava-ln train --bits 4 --tune_mode ln` on the toy world under the real `deepspeed`
                      launcher, ZeRO-2, bf16: bitsandbytes on CUDA, and DeepSpeed's bf16 cast of a module
                      whose block linears hold packed 4-bit weights
  quant_eval_vqav2    `llava-ln eval --bits 4 --score` of that run (the quantized base it trained on)
  quant_export_hf4    `llava-ln export --format hf --bits 4` on the GPU, verified in a fresh transformers process
  quant_13b_ln        bench/quantized_throughput.py, 13B shape, `ln` at 4 bits, batch 16 x 2048 per optimizer
                      step through accumulation (micro-batches 4 and 2); passes when some micro-batch peaks at
                      or below 24 GiB (the target: a 24 GB card)
  quant_13b_qlora     the same for QLoRA (`lora` r=128 on the 4-bit base), micro-batch 4
  quant_13b_baseline  bench/baseline/hf_peft_baseline.py --size 13b --modes lora --batch 4 (bf16 LoRA, no
                      quantization): the tokens/s and peak that quant_table puts ours next to
bitsandbytes comes from the suite's /tmp/site-extra (the usual steps never see it); these steps put it on
their PYTHONPATH. Expected: about 5 minutes on an H200 after the install.
"""
import math
import os
import sys

from bench import gpu_suite_checks as checks
from bench.gpu_suite_runner import Step

SITE_EXTRA = "/tmp/site-extra"
EVAL_BATCH = 16
TARGET_PEAK_GIB = 24.0
THROUGHPUT_FLAGS = {  # bench/quantized_throughput.py flags per profile device
    "cuda": ["--size", "13b", "--batch", "16", "--seq", "2048", "--steps", "2", "--warmup", "1"],
    "cpu": ["--size", "tiny", "--batch", "4", "--seq", "128", "--steps", "1", "--warmup", "1"],
}
MICRO = {"cuda": ("4,2", "4", "4"), "cpu": ("2,1", "2", "2")}  # ln, qlora, baseline


def _env() -> dict:
    return {"PYTHONPATH": os.pathsep.join(p for p in (SITE_EXTRA, os.environ.get("PYTHONPATH", "")) if p)}


def quant_steps(world: str, runs: str, logs: str, p, baseline: str, train_argv, cli) -> list[Step]:
    """The chain of quantized-base steps; train_argv and cli are gpu_suite_run's argv builders."""
    run = os.path.join(runs, "quant_zero2_ln")
    evaluated, exported = os.path.join(runs, "quant_eval_vqav2"), os.path.join(runs, "quant_export_hf4")
    ln_log, qlora_log, base_log = (os.path.join(logs, f"{n}.out") for n in ("quant_13b_ln", "quant_13b_qlora",
                                                                            "quant_13b_baseline"))
    shapes, (ln_micro, qlora_micro, base_micro) = THROUGHPUT_FLAGS[p.device], MICRO[p.device]
    bench = [sys.executable, "-m", "bench.quantized_throughput", "--bits", "4", *shapes]
    return [
        Step("quant_zero2_ln", lambda: train_argv(world, p, 2, run, "", bits=4), p.train_timeout_s,
             needs=("toy_world",), env=_env(),
             facts=lambda: checks.train_facts(run, 2, p.precision, p.device, checkpoint_step=p.stage2_steps // 2)),
        Step("quant_eval_vqav2", lambda: cli("eval", "--benchmark", "vqav2", "--model_path", run,
                                             "--data", f"{world}/eval/vqav2", "--output_dir", evaluated, "--score",
                                             "--batch_size", EVAL_BATCH, "--max_new_tokens", 8,
                                             "--dtype", p.eval_dtype, "--device", p.device, "--bits", 4),
             p.eval_timeout_s, needs=("quant_zero2_ln",), env=_env(),
             facts=lambda: checks.eval_facts(evaluated, "vqav2", EVAL_BATCH)),
        Step("quant_export_hf4", lambda: cli("export", "--checkpoint", run, "--format", "hf", "--bits", 4,
                                             "--output_dir", exported, "--device", p.device),
             p.eval_timeout_s, needs=("quant_zero2_ln",), env=_env(),
             facts=lambda: checks.export_facts(exported, os.path.join(logs, "quant_export_hf4.out"))),
        Step("quant_13b_ln", [*bench, "--modes", "ln", "--micro_batches", ln_micro], p.throughput_timeout_s,
             env=_env(), facts=lambda: quant_throughput_facts(ln_log, p.device == "cuda")),
        Step("quant_13b_qlora", [*bench, "--modes", "lora", "--micro_batches", qlora_micro], p.throughput_timeout_s,
             env=_env(), facts=lambda: quant_throughput_facts(qlora_log, False)),
        Step("quant_13b_baseline", [sys.executable, baseline, "--modes", "lora", "--batch", base_micro,
                                    *_baseline_shape(shapes)], p.throughput_timeout_s,
             facts=lambda: checks.throughput_facts(base_log, ["lora"])),
    ]


def _baseline_shape(shapes: list) -> list:
    """hf_peft_baseline.py's flags for the same size and sequence (it has no accumulation)."""
    flags = dict(zip(shapes[::2], shapes[1::2]))
    return ["--size", flags["--size"], "--seq", flags["--seq"], "--steps", "3", "--warmup", "2"]


def quant_throughput_facts(log_path: str, check_target: bool) -> dict:
    """bench/quantized_throughput.py's lines: per micro-batch tokens/s and peak; the 24 GiB target for ln."""
    lines = [r for r in checks._read_jsonl(log_path) if "mode" in r]
    facts = {"configs": [{k: r.get(k) for k in ("mode", "micro_batch", "accumulation", "tokens_per_s",
                                                "peak_mem_gib", "held_gib", "static_estimate_gib", "error")
                          if r.get(k) is not None} for r in lines]}
    measured = [r for r in lines if "error" not in r]
    problems = []
    if not measured:
        problems.append("no configuration measured")
    if any(not math.isfinite(r["loss_last"]) for r in measured):
        problems.append("non-finite loss")
    if check_target:
        fitting = [r for r in measured if r.get("peak_mem_gib", math.inf) <= TARGET_PEAK_GIB]
        facts["fits_target"] = bool(fitting)
        if not fitting:
            problems.append(f"no micro-batch peaked at or below {TARGET_PEAK_GIB} GiB")
    facts["problems"] = problems
    return facts


def quant_table(logs: str) -> list[dict]:
    """13B rows: ours at 4 bits (every micro-batch) and the baseline's bf16 LoRA, tokens/s and peak."""
    rows = []
    for name, impl in (("quant_13b_ln", "llava-ln 4-bit"), ("quant_13b_qlora", "llava-ln 4-bit"),
                       ("quant_13b_baseline", "baseline bf16")):
        for record in checks._read_jsonl(os.path.join(logs, f"{name}.out")):
            if "mode" not in record:
                continue
            rows.append({k: v for k, v in {
                "impl": impl, "mode": record["mode"], "micro_batch": record.get("micro_batch", record.get("batch")),
                "accumulation": record.get("accumulation", 1), "tokens_per_s": record.get("tokens_per_s"),
                "peak_gib": record.get("peak_mem_gib"), "error": record.get("error")}.items() if v is not None})
    return rows
