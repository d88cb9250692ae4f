"""Experiments on top of training and evaluation: the demo, the tuning-mode comparison and its analyses.

The demo (`llava-ln demo`): the whole pipeline on the toy world (stage 1 -> stage 2 -> five benchmarks -> report).
  recipe       the demo's hyperparameters and the `llava-ln train` flags of both stages
  benchmarks   evaluate a run on the toy benchmarks and pick each one's headline number
  report       report.md and report.png
"""
