"""Training: strategies (plain PyTorch / DDP, DeepSpeed ZeRO), the loop, checkpoints and resume.

  args                 the training flags (Hugging Face TrainingArguments names)
  llava_flags          LLaVA's flags: aliases, no-ops and one-line refusals; the default tune mode
  command_line         a train command line parsed and checked before anything loads (read_train_command)
  optim                AdamW with bf16 moments and/or row-sparse embedding gradients (trainable-state memory)
  strategy             the Strategy interface and the StepOutcome it returns, the training module, plain PyTorch / DDP
  data_order           which samples each rank reads at each micro-step (a pure function of seed and epoch)
  packing              --packing in a run: refused combinations, the model check, micro-batch shape and step size
  loop                 the loop, and the protocols of its hooks and its reporter
  grad_stats           per-group gradient norms per step and their variance over the log window
  checkpointing        run folders and resumable checkpoint-<step>/ folders, for every strategy
  reporting            output folder, logging, progress, log.jsonl, run_config.json
  zero/                DeepSpeed ZeRO-1/2/3: the strategy, its config, ZeRO-3 partitioned from the start
  memory/              precision policy, gradient checkpointing, the static estimate, the meta-device step
                       account and the --gradient_checkpointing decision
  guards/              flag and folder checks before a run, non-finite steps and stop signals during it,
                       saves that fail as one

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
