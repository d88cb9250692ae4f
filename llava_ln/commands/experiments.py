"""Commands built on the experiments package: `llava-ln demo`, `llava-ln compare`, `llava-ln analyze`.

demo: toy world -> stage 1 -> stage 2 -> five benchmarks -> report (markdown + PNG). Everything runs
through the same entry points a user calls (`llava-ln toy`, `llava-ln train`, `llava-ln eval --score`),
so the demo is also an end-to-end check of the framework.
compare: tuning modes (and variants) trained the same way, evaluated, tabulated and plotted
(experiments/compare.py). analyze: layer-representation similarity of checkpoints and the gradient
statistics of their runs (experiments/analyze.py).
"""
import json
import logging
import os
import time

from llava_ln.commands.args import DemoArguments
from llava_ln.core.flag_domains import check_flag_domains
from llava_ln.core.flags import parse_flags
from llava_ln.experiments.recipe import STAGE2_TEMPLATE, DemoRecipe


def _step(name: str, timings: dict):
    """Context manager that prints a banner and records the step's duration."""
    from contextlib import contextmanager

    @contextmanager
    def timed():
        print(f"\n=== {name} ===", flush=True)
        started = time.time()
        yield
        timings[name] = time.time() - started
        print(f"=== {name}: {timings[name]:.1f}s ===", flush=True)

    return timed()


def run_demo(args: DemoArguments, recipe: DemoRecipe) -> dict:
    import torch

    check_flag_domains(args, recipe)  # parse_flags checked a command line's; this covers flags built in code

    from llava_ln.experiments.benchmarks import evaluate, headline_numbers
    from llava_ln.experiments.recipe import stage1_argv, stage2_argv
    from llava_ln.experiments.report import write_report
    from llava_ln.toy.generate import write_toy_world
    from llava_ln.train import main as train_main

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    world = os.path.join(args.out, "toy_world")
    stage1, stage2 = os.path.join(args.out, "stage1_connector"), os.path.join(args.out, f"stage2_{recipe.tune_mode}")
    timings: dict = {}
    started = time.time()
    with _step("toy world", timings):
        if not (args.reuse_world and os.path.exists(os.path.join(world, "toy_world.json"))):
            write_toy_world(world, seed=recipe.seed)
    with _step("stage 1: connector on captions", timings):
        train_main(stage1_argv(world, recipe, stage1))
    with _step(f"stage 2: --tune_mode {recipe.tune_mode}", timings):
        train_main(stage2_argv(world, recipe, stage2, stage1))
    rows = {}
    with _step("evaluate the untuned model (connector only)", timings):
        # Asked in the stage-2 template, so both models see exactly the same prompts.
        rows["connector only"] = headline_numbers(
            evaluate(stage1, world, os.path.join(args.out, "eval_stage1"), conv_template=STAGE2_TEMPLATE))
    with _step(f"evaluate the stage-2 model ({recipe.tune_mode})", timings):
        rows[f"stage 2 ({recipe.tune_mode})"] = headline_numbers(
            evaluate(stage2, world, os.path.join(args.out, "eval_stage2")))
    timings["total"] = time.time() - started
    report = write_report(args.out, rows, timings, recipe, world)
    print("\n" + report["text"])
    print(f"report: {report['markdown']}" + (f", chart: {report['chart']}" if report["chart"] else ""))
    return {"scores": rows, "timings": timings, **{k: v for k, v in report.items() if k != "text"}}


def demo_main(argv) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args, recipe = parse_flags(argv, (DemoArguments, DemoRecipe), prog="llava-ln demo",
                               description="Run the whole pipeline on the toy world and write a report.")
    result = run_demo(args, recipe)
    with open(os.path.join(args.out, "demo_result.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    return 0


def compare_main(argv) -> int:
    from llava_ln.experiments.args import CompareArguments
    from llava_ln.experiments.compare import run_compare

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    (args,) = parse_flags(argv, (CompareArguments,), prog="llava-ln compare",
                          description="Train tuning modes the same way, evaluate each, write a comparison.")
    payload = run_compare(args)
    print(open(os.path.join(args.output_dir, "comparison.md"), encoding="utf-8").read())
    print("comparison: " + os.path.join(args.output_dir, "comparison.json")
          + "".join(f", {path}" for path in payload.get("plots", [])))
    return 0


def analyze_main(argv) -> int:
    from llava_ln.experiments.analyze import print_result, run_analyze
    from llava_ln.experiments.args import AnalyzeArguments

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    (args,) = parse_flags(argv, (AnalyzeArguments,), prog="llava-ln analyze",
                          description="Layer-representation similarity and gradient statistics of runs.")
    print_result(run_analyze(args), args.json)
    return 0
