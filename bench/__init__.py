"""Benchmarks: they print numbers (none is a timed test). Run each from the repository root as
`python -m bench.NAME --help`; the GPU suite as `bash bench/gpu_suite.sh`. Measured results: bench/results/.

Training step, at the LLaVA-1.5 shapes (llava_ln.model.shapes) with random weights:
  train_throughput      tokens/s and peak memory per tune mode, llava-ln's own step (GPU; --size tiny on a CPU)
  quantized_throughput  the same on a 4-bit or 8-bit base, with gradient accumulation
  step_cost             one step counted exactly on the meta device (bytes saved, FLOPs), llava-ln vs transformers
  kernel_account        a LLaMA-7B block's saved bytes and FLOPs with and without the lean kernels (meta device)
  zero3_memory          per-rank peak CPU memory of 2-rank ZeRO-3 against one process
  training_step         what the throughput benchmarks share: configs, random weights, a batch, timed steps
Data, evaluation and the toy world:
  data_loading          DataLoader + collator samples/s, and record indexing speed
  packing               padding share of random, length-grouped and packed batches (toy world, a mix665k
                        model), and CPU step time per supervised token, packed vs grouped
  generation_throughput `llava-ln eval` generation at batch size 1 vs 16
  toy_learnability      a hand-written two-stage loop on the toy world, scored per tune mode
  toy_quantized         the demo's recipe with and without a 4-bit base: the share of the VQA gain kept
The plain transformers + PEFT baseline (baseline/: the team's scripts and recorded H200 results, kept unchanged):
  hf_baseline           what the baseline does (its script, its modes, what it trains), for the comparisons
The GPU suite (gpu_suite.sh installs the wheels prepare_gpu_wheels.sh fetched, then runs gpu_suite_run):
  gpu_suite_run         its steps and its summary: trainings from the demo's recipe, eval, export, throughput
  gpu_suite_runner      runs a step: own process group, log, time limit, prerequisites, fact check
  gpu_suite_checks      what each step wrote, read back and judged
  gpu_suite_quant       the quantized-base steps (--quant)
  gpu_suite_install     records how the wheel install went
"""
