"""Benchmark (not a test): does norm tuning on a 4-bit base keep the VQA gain of norm tuning on the full base?

The demo's recipe on the toy world (llava_ln/experiments): stage 1 (connector), then stage 2 `--tune_mode ln`
twice from it, once as usual and once with `--bits 4` (NF4, double quantization), then the five toy
benchmarks through `llava-ln eval --score` for
  connector only            the stage-1 model, asked in the stage-2 template (the demo's baseline)
  ln                        stage 2 on the unquantized base
  ln 4-bit, as shipped      the 4-bit run on the UNQUANTIZED base (what merge and export write)
  ln 4-bit, as trained      the 4-bit run on the base quantized again (eval --bits 4)
and prints one JSON object: every headline number, and per 4-bit evaluation the share of the
unquantized run's VQA gain over the connector-only model that it keeps (the target: 90%).

    python -m bench.toy_quantized [--out DIR] [--stage2_steps 600] [--threads 0] [--bits 4]

On a 2-core CPU with the demo's default recipe this takes roughly 10 minutes.
"""
import argparse
import json
import os
import sys
import time

from llava_ln.experiments.benchmarks import evaluate, headline_numbers
from llava_ln.experiments.recipe import STAGE2_TEMPLATE, DemoRecipe, stage1_argv, stage2_argv
from llava_ln.toy.generate import write_toy_world
from llava_ln.train import main as train_main

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VQA = "VQA accuracy (%)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="toy_quantized_out")
    parser.add_argument("--stage1_steps", type=int, default=DemoRecipe.stage1_steps)
    parser.add_argument("--stage2_steps", type=int, default=DemoRecipe.stage2_steps)
    parser.add_argument("--bits", type=int, default=4, choices=(4, 8))
    parser.add_argument("--threads", type=int, default=0)
    return parser.parse_args(argv)


def kept_share(quantized: dict, full: dict, baseline: dict) -> float | None:
    gain = full[VQA] - baseline[VQA]
    return round((quantized[VQA] - baseline[VQA]) / gain, 4) if gain > 0 else None


def main(argv=None) -> int:
    opts = parse_args(argv)
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    recipe = DemoRecipe(stage1_steps=opts.stage1_steps, stage2_steps=opts.stage2_steps)
    out = os.path.abspath(opts.out)
    world, stage1 = os.path.join(out, "toy_world"), os.path.join(out, "stage1_connector")
    ln, ln_quant = os.path.join(out, "stage2_ln"), os.path.join(out, f"stage2_ln_{opts.bits}bit")
    seconds = {}

    def timed(name, action):
        started = time.time()
        result = action()
        seconds[name] = round(time.time() - started, 1)
        print(f"{name}: {seconds[name]} s", file=sys.stderr, flush=True)
        return result

    if not os.path.exists(os.path.join(world, "toy_world.json")):
        timed("toy_world", lambda: write_toy_world(world, seed=recipe.seed))
    timed("stage1", lambda: train_main(stage1_argv(world, recipe, stage1)))
    timed("stage2_ln", lambda: train_main(stage2_argv(world, recipe, ln, stage1)))
    timed(f"stage2_ln_{opts.bits}bit",
          lambda: train_main(stage2_argv(world, recipe, ln_quant, stage1) + ["--bits", str(opts.bits)]))
    rows = {
        "connector only": timed("eval_connector", lambda: headline_numbers(
            evaluate(stage1, world, os.path.join(out, "eval_stage1"), conv_template=STAGE2_TEMPLATE))),
        "ln": timed("eval_ln", lambda: headline_numbers(evaluate(ln, world, os.path.join(out, "eval_ln")))),
        f"ln {opts.bits}-bit, as shipped": timed("eval_quant_shipped", lambda: headline_numbers(
            evaluate(ln_quant, world, os.path.join(out, "eval_quant_shipped")))),
        f"ln {opts.bits}-bit, as trained": timed("eval_quant_trained", lambda: headline_numbers(
            evaluate(ln_quant, world, os.path.join(out, "eval_quant_trained"), bits=opts.bits))),
    }
    baseline, full = rows["connector only"], rows["ln"]
    summary = {
        "bits": opts.bits, "recipe": {"stage1_steps": recipe.stage1_steps, "stage2_steps": recipe.stage2_steps,
                                      "batch_size": recipe.batch_size, "tune_mode": "ln"},
        "scores": rows,
        "vqa_gain_kept": {name: kept_share(row, full, baseline) for name, row in rows.items() if "bit" in name},
        "seconds": seconds,
    }
    print(json.dumps(summary, indent=2))
    with open(os.path.join(out, "toy_quantized.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
