"""Training: strategies (plain PyTorch / DDP, DeepSpeed ZeRO), the loop, checkpoints and resume.

  args                 the training flags (Hugging Face TrainingArguments names)
  llava_flags          LLaVA's flags: aliases, no-ops and one-line refusals; the default tune mode
  memory               precision policy, gradient checkpointing, static memory estimate
  quantized_base       what a --bits 4|8 base allows: tune modes, ZeRO stages (checked before loading)
  step_account         the real training step on the meta device: exact saved bytes and FLOPs, no weights
  recompute            --gradient_checkpointing true|false|auto: checkpointed blocks and estimated peak
  optim                AdamW with bf16 moments and/or row-sparse embedding gradients (trainable-state memory)
  strategy             the Strategy interface, the training module, plain PyTorch / DDP
  strategy_deepspeed   DeepSpeed ZeRO-1/2/3, and its JSON config filled from the flags
  zero_config_types    the JSON type of every DeepSpeed config field llava-ln fills or knows
  zero_init            ZeRO-3 from the start: the model created partitioned, each rank loading its partitions
  loop                 the loop and its data order (a pure function of seed and epoch)
  checkpointing        run folders and resumable checkpoint-<step>/ folders, for every strategy
  resume_files         reading resume state without trusting it: checksums, then every field's type
  grad_stats           per-group gradient norms per step and their variance over the log window
  shared_storage       multi-node: every rank sees the same OUTPUT_DIR and resumes the same checkpoint
  reporting            output folder, logging, progress, log.jsonl, run_config.json
  run_ownership        one run per folder: run ids, --overwrite_output_dir moves aside, `latest`, pruning
  resume_check         the flags that define a run, compared on resume (--allow_changed_flags)
  flag_checks          numeric flags checked before anything loads
  step_guard           per-step all-rank checks: non-finite loss/gradients skipped or stopping the run
  save_guard           saves that fail as one (disk full, non-finite tensors), nothing non-finite written
  stop_signals         SIGTERM/SIGINT: finish the step, checkpoint, exit 128+signal

Why a custom loop and not transformers' Trainer: every requirement of this project that the
Trainer makes hard is simple here.
  * Trainable-only, pickle-free, world-size-independent checkpoints: the Trainer (with DeepSpeed)
    saves DeepSpeed's own per-rank pickled checkpoints of the whole engine; we read each trainable
    tensor's fp32 master and Adam moments by name through DeepSpeed's public tensor-fragment API
    and write safetensors.
  * Exact resume: the data order is a function of (seed, epoch) and the position a step count;
    RNG, schedule and optimizer step count are restored explicitly.
  * Per-group learning rates and clipping under every config: the optimizer is built from the
    TuningPlan's named groups and handed to DeepSpeed, the schedule is a LambdaLR on it, and a
    DeepSpeed `scheduler` block (which would flatten the rates) is refused; clipping is
    DeepSpeed's gradient_clipping (filled from --max_grad_norm) or clip_grad_norm_.
  * Frozen weights in bf16, trainable ones fp32, no Trainer-private overrides anywhere.
Distributed code lives here and in core.distributed, never in model code.
"""
