"""Evaluate one checkpoint on benchmarks in LLaVA's eval layout and pull out the headline numbers."""
import os

from llava_ln.core import bounded_json
from llava_ln.core.benchmarks import BENCHMARKS
from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.runner import run_eval
from llava_ln.experiments.recipe import TOY

# The report's rows: each benchmark's headline (core.benchmarks) under its label, and after POPE's F1 its
# accuracy, since F1 alone flatters a model that always says "yes" (F1 0.667 at 50% positives).
POPE_ACCURACY_LABEL = "POPE accuracy (%)"


def _pope_accuracy(scores: dict) -> float:
    return 100.0 * sum(v["accuracy"] for v in scores["splits"].values()) / len(scores["splits"])


def evaluate(model_path: str, world: str, output_dir: str, conv_template: str | None = None,
             batch_size: int = TOY.eval_batch_size, bits: int = 16, eval_root: str | None = None,
             benchmarks: list | None = None) -> dict:
    """Run llava-ln eval --score for every benchmark; returns {benchmark: scorer JSON}.

    conv_template: None uses the checkpoint's own (its manifest); the demo asks the stage-1
    model in the stage-2 template so that both models get the very same prompts. bits: eval --bits
    (4: a --bits 4 run evaluated on the quantized base it trained on). eval_root: other evaluation sets than
    the world's own (the demo's smaller ones for a shortened recipe). benchmarks: None for all five.
    """
    benchmarks = list(benchmarks or BENCHMARKS)
    return evaluate_benchmarks(model_path, eval_root or os.path.join(world, "eval"), output_dir, benchmarks,
                               TOY.answer_lengths.per_benchmark(benchmarks), batch_size,
                               conv_template=conv_template, dtype="float32",
                               device="cpu", overwrite=True, bits=bits)


def evaluate_benchmarks(model_path: str, eval_root: str, output_dir: str, benchmarks: list, max_new_tokens: dict,
                        batch_size: int, conv_template: str | None = None, dtype: str = "auto", device: str = "auto",
                        overwrite: bool = False, bits: int = 16) -> dict:
    """`llava-ln eval --score` on each benchmark under eval_root (LLaVA's playground/data/eval layout), in
    this process; returns {benchmark: scorer JSON}. Without overwrite, answers already written are reused."""
    scores = {}
    for benchmark in benchmarks:
        summary = run_eval(EvalArguments(
            benchmark=benchmark, model_path=model_path, data=os.path.join(eval_root, BENCHMARKS[benchmark].folder),
            output_dir=os.path.join(output_dir, benchmark), score=True, batch_size=batch_size,
            conv_template=conv_template,
            max_new_tokens=max_new_tokens[benchmark], dtype=dtype, device=device, overwrite=overwrite, bits=bits,
        ))
        if summary is not None:  # None on ranks other than 0 (under torchrun)
            scores[benchmark] = summary["scores"]
    return scores


def main(argv=None) -> int:
    """`python -m llava_ln.experiments.benchmarks ...`: evaluate_benchmarks in its own process (`llava-ln
    compare` runs it so under torchrun, or beside other runs); rank 0 writes the scores to --scores_file."""
    import argparse

    from llava_ln.core.atomic import write_json_atomic

    parser = argparse.ArgumentParser(description=main.__doc__)
    for flag in ("--model_path", "--eval_root", "--output_dir", "--benchmarks", "--max_new_tokens", "--scores_file"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args(argv)
    benchmarks = args.benchmarks.split(",")
    scores = evaluate_benchmarks(args.model_path, args.eval_root, args.output_dir, benchmarks,
                                 bounded_json.loads(args.max_new_tokens, "--max_new_tokens"), args.batch_size)
    if len(scores) == len(benchmarks):
        write_json_atomic(args.scores_file, scores)
    return 0


if __name__ == "__main__":
    from llava_ln.core.errors import run_command

    raise SystemExit(run_command(main, None))


def headline_numbers(scores: dict) -> dict:
    """{label: value} for the report, in core.benchmarks' order (POPE's accuracy after its F1)."""
    numbers = {}
    for name, spec in BENCHMARKS.items():
        if name in scores:
            numbers[spec.label] = round(float(spec.headline(scores[name])), 2)
            if name == "pope":
                numbers[POPE_ACCURACY_LABEL] = round(float(_pope_accuracy(scores[name])), 2)
    return numbers
