"""Commands built on the experiments package: `llava-ln compare` and `llava-ln analyze` (demo: commands/demo.py).

compare: tuning modes (and variants) trained the same way, evaluated, tabulated and plotted
(experiments/compare.py). analyze: layer-representation similarity of checkpoints and the gradient
statistics of their runs (experiments/analyze.py).
"""
import logging
import os

from llava_ln.commands.args import ANALYZE_FLAGS, COMPARE_FLAGS
from llava_ln.core.flags import parse_command_flags


def compare_main(argv) -> int:
    from llava_ln.experiments.compare import run_compare

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    (args,) = parse_command_flags(argv, COMPARE_FLAGS)
    payload = run_compare(args)
    print(open(os.path.join(args.output_dir, "comparison.md"), encoding="utf-8").read())
    from llava_ln.experiments.plots import NO_MATPLOTLIB

    print("comparison: " + os.path.join(args.output_dir, "comparison.json")
          + "".join(f", {path}" for path in payload["plots"] or []))
    if payload["plots"] is None:
        print(NO_MATPLOTLIB)
    return 0


def analyze_main(argv) -> int:
    from llava_ln.experiments.analyze import print_result, run_analyze

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    (args,) = parse_command_flags(argv, ANALYZE_FLAGS)
    print_result(run_analyze(args), args.json)
    return 0
