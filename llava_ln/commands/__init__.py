"""The `llava-ln` subcommands, grouped by stage; each command is a function taking argv (see cli.py).

  prepare   describe, inspect-data, toy    (before training)
  evaluate  eval, score
  ship      merge, export
  demo      demo: the whole pipeline on the toy world, continued where it stopped when run again
  experiments  compare (tuning modes side by side), analyze
  args      the flags of describe, inspect-data, toy, merge, export and demo (no torch at import)
Training's entry point is llava_ln/train.py (so `deepspeed llava_ln/train.py` works as in LLaVA).
"""
