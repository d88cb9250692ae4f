"""Leaving the framework: merged standalone checkpoints, the transformers-native format, PEFT adapters.

  llava-ln merge  --checkpoint RUN --output_dir OUT            merge.py (layout: merged_io.py)
  llava-ln export --checkpoint RUN --format hf      --output_dir OUT   hf_export.py
  llava-ln export --checkpoint RUN --format peft-ln --output_dir OUT   peft_ln.py

Every path starts from source.py (run folder, checkpoint-<step>, ZeRO shards via zero.py, or
a merged folder; stored tensors are checked against the base first, validate.py) and every
export is verified: our pipeline (reference.py) against plain transformers / PEFT in a fresh
process (child.py, hf_child.py, peft_child.py), compared by compare.py.
"""
