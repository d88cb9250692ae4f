"""Commands for evaluation: `llava-ln eval` (generate answers) and `llava-ln score` (score files).

eval:
  llava-ln eval --benchmark mme|vqav2|pope|coco_caption|flickr30k --model_path CKPT --data DIR --output_dir OUT
        [--question_file Q] [--annotation_file A] [--image_folder IMG] [--split S] [--upload_question_file T]
        [--batch_size 16] [--max_new_tokens 128] [--temperature 0] [--num_beams 1] [--prompt TEXT]
        [--conv_template NAME] [--image_aspect_ratio pad|resize|crop] [--share_image_prefix true|false]
        [--score] [--overwrite] [--json]
Multi-GPU: launch with `torchrun --nproc_per_node N -m llava_ln.cli eval ...` (or `deepspeed`);
images are split across ranks and the answers gathered in-process. A rerun with the same --output_dir
skips questions already answered. Rank 0 writes the whole result to OUTPUT_DIR/eval_summary.json
(counts, what answering cost ("generation": path, questions, prefix fills, vision-tower passes), the
files written, the equivalent `llava-ln score` command and, with --score, the scorer's JSON under
"scores", also saved as OUTPUT_DIR/scores.json) and prints one line: with --score the benchmark's
headline (`vqav2: VQA accuracy (%) 59.48 (n=400 questions)`, core.benchmarks), else where the answers
are and how to score them. --json prints the whole result instead. Layouts: eval/README.md.

score: the flags are llava_ln.scoring.dispatch.ScoreRequest (its docstring shows each benchmark's
result) plus --output_file and --json; writes the scorer's JSON to --output_file (default scores.json
beside the predictions) and prints the headline line (--json: the JSON). Ground-truth items without a prediction are a
one-line error unless --allow_missing, which scores them as wrong and counts them; extra, repeated
and unparseable predictions are counted in the output; unreadable files are one-line errors naming
the file. Rules: docs/scoring.md (§1 for what every benchmark shares).
"""
import json
import os

from llava_ln.commands.args import EVAL_FLAGS, SCORE_FLAGS, SCORES_FILE
from llava_ln.core.benchmarks import get_benchmark_spec
from llava_ln.core.flags import parse_command_flags

EVAL_SUMMARY = "eval_summary.json"  # eval's whole JSON result, in OUTPUT_DIR


def _write_json(path: str, payload) -> None:
    from llava_ln.core.atomic import atomic_path

    with atomic_path(path, ".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")


def eval_main(argv) -> int:
    args, output = parse_command_flags(argv, EVAL_FLAGS)
    from llava_ln.evaluation.runner import run_eval

    summary = run_eval(args)
    if summary is None:  # not rank 0
        return 0
    summary_path = os.path.join(args.output_dir, EVAL_SUMMARY)
    if "scores" in summary:
        _write_json(os.path.join(args.output_dir, SCORES_FILE), summary["scores"])
    _write_json(summary_path, summary)
    if output.json:
        print(json.dumps(summary, indent=2, allow_nan=False), flush=True)
    elif "scores" in summary:
        print(f"{get_benchmark_spec(args.benchmark).headline_line(summary['scores'])}; full results: "
              f"{os.path.join(args.output_dir, SCORES_FILE)} and {summary_path}", flush=True)
    else:
        done = f"{summary['questions']} answers ({summary['reused_answers']} reused) in {args.output_dir}"
        then = f"; score them with: {summary['score_command']}" if "score_command" in summary else ""
        print(f"{args.benchmark}: {done}{then}; full result: {summary_path}", flush=True)
    return 0


def default_scores_file(predictions: str) -> str:
    """scores.json in the folder holding the predictions file (for MME's folder of answers: its parent; for
    POPE's `split=path,...` list: the first file's folder)."""
    first = predictions.split(",")[0]
    if "=" in first and not os.path.exists(first):
        first = first.partition("=")[2]
    holder = os.path.dirname(os.path.normpath(first))
    return os.path.join(holder or ".", SCORES_FILE)


def score_main(argv) -> int:
    request, output = parse_command_flags(argv, SCORE_FLAGS)
    from llava_ln.scoring.dispatch import score

    result = score(request)
    path = output.output_file or default_scores_file(request.predictions)
    _write_json(path, result)
    if output.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print(f"{get_benchmark_spec(request.benchmark).headline_line(result)}; full results: {path}")
    return 0
