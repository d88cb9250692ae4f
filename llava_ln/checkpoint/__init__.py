"""Checkpoint formats: a run folder holds a manifest plus only the tensors that were trained.

  manifest        manifest.json: what a folder holds and how to rebuild it (the single source of truth)
  tensors         named tensors in safetensors files (hashed while written), sharded when large; checked
                  reads; PyTorch pickle files read as tensors only (load_torch_tensors_safely)
  hashed_write    writing safetensors (and small files) while hashing the bytes: no second read for checksums
  integrity       the sha256 of every file a manifest covers: recorded when written, verified before use
  run_folder      a training run's folder (trained tensors, LoRA adapter, stage-1 connector)
  merged_folder   a standalone folder: every weight, in LlavaForConditionalGeneration's layout
  zero_shards     DeepSpeed's own per-rank shards, read as plain tensors and consolidated by us (no pickle)
  loading         load_checkpoint: any of the above as a model, ready for evaluation, merge or export
  llava_sources   start a run from a multimodal checkpoint (LLaVA layouts or our own folders), exactly

Loading never guesses from folder names: manifest.json says what to rebuild and what to apply.
Nothing here ever unpickles a file: tensors come from safetensors, or from torch.load(weights_only=True).
"""
