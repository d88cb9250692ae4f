"""The --tune_mode switch: which parameters train, how they are grouped, at which learning rates.

  args     the tuning flags (--tune_mode, --tune_embeddings, LoRA, --mm_projector_lr, --norm_lr)
  modes    the paper's tuning modes as data (TuneMode)
  groups   every parameter sorted into one of seven groups by module identity and class
  plan     apply_tune_mode: the only place that sets requires_grad; returns the TuningPlan that the
           optimizer, the manifest, the checkpointer, merge and export read
"""
