"""The --tune_mode and --vision_tune_mode switches: which parameters train, how they are grouped, at which learning rates.

  args          the tuning flags (--tune_mode, --tune_embeddings, LoRA, --mm_projector_lr, --norm_lr, the tower's)
  modes         the paper's tuning modes as data (TuneMode)
  vision_modes  the vision tower's tuning modes as data (--vision_tune_mode: frozen, ln, lora, full)
  tower_scope   which tower modules can change the selected image features, and which of them tune
  groups        every parameter sorted into one of nine groups by module identity and class
  plan          apply_tune_mode: the only place that sets requires_grad; returns the TuningPlan that the
                optimizer, the manifest, the checkpointer, merge and export read
"""
