"""Checkpoint formats: a run folder holds a manifest plus only the tensors that were trained.

  manifest        manifest.json: what a folder holds and how to rebuild it (the single source of truth)
  tensors         named tensors in safetensors files, sharded when large; checked reads
  run_folder      a training run's folder (trained tensors, LoRA adapter, stage-1 connector)
  merged_folder   a standalone folder: every weight, in LlavaForConditionalGeneration's layout
  zero_shards     DeepSpeed's own per-rank shards, consolidated without unpickling untrusted code
  loading         load_checkpoint: any of the above as a model, ready for evaluation, merge or export
  llava_sources   start a run from a multimodal checkpoint (LLaVA layouts or our own folders), exactly

Loading never guesses from folder names: manifest.json says what to rebuild and what to apply.
"""
