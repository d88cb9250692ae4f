"""Experiments on top of training and evaluation: the demo, the tuning-mode comparison and its analyses.

The demo (`llava-ln demo`): the whole pipeline on the toy world (stage 1 -> stage 2 -> five benchmarks -> report).
  recipe       the recipes as data (LLaVA-1.5-7B's, the toy world's), the demo's flags and train commands
  benchmarks   evaluate a run on the toy benchmarks and pick each one's headline number
  report       report.md and report.png
  demo_state   which of the demo's steps are done, so a rerun continues where the last one stopped
The comparison (`llava-ln compare`) and its analyses (`llava-ln analyze`):
  runs         the runs: one per tuning mode with its recipe rates, plus named variants
  launcher     each run as a child process under python / torchrun / deepspeed, output to a log
  entries      a run's comparison entry from its folder alone; comparison.json and comparison.md
  args         the flags of compare and analyze (no torch at import)
  compare_settings  what compare's flags resolve to with the toy or 7B recipe, each run's train.py flags
  run_state    one run's folder: status and attempts, train or reuse or resume, evaluation, costs
  compare      the driver: stage 1, every run (restartable, one or more at a time), the reports
  similarity   layer-representation similarity (cosine between layers' pooled hidden states)
  analyze      similarity of checkpoints and the gradient statistics of their runs
  plots        the PNG plots of both
  claims       the paper's claims C1-C9 judged from a comparison and an analysis
"""
