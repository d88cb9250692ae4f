"""Run several trainings one after another in ONE fresh process: `python run_trainings.py ARGV_LISTS.json`.

The DeepSpeed tests use it for single-rank runs: DeepSpeed keeps its process group for the
life of the process, which must not leak into the pytest process; one process for all the
runs pays the torch/transformers import once.
"""
import json
import sys

from llava_ln.core.errors import run_command
from llava_ln.train import main

if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        runs = json.load(handle)
    for argv in runs:
        code = run_command(main, argv)
        if code:
            sys.exit(code)
