"""The demo: the whole pipeline on the toy world (stage 1 -> stage 2 -> five benchmarks -> report)."""
