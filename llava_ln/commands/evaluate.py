"""Commands for evaluation: `llava-ln eval` (generate answers) and `llava-ln score` (score files).

eval:
  llava-ln eval --benchmark mme|vqav2|pope|coco_caption|flickr30k --model_path CKPT --data DIR --output_dir OUT
        [--question_file Q] [--annotation_file A] [--image_folder IMG] [--split S] [--upload_question_file T]
        [--batch_size 16] [--max_new_tokens 128] [--temperature 0] [--num_beams 1] [--prompt TEXT]
        [--conv_template NAME] [--image_aspect_ratio pad|resize|crop] [--share_image_prefix true|false]
        [--score] [--overwrite]
Multi-GPU: launch with `torchrun --nproc_per_node N -m llava_ln.cli eval ...` (or `deepspeed`);
images are split across ranks and the answers gathered in-process. A rerun with the same --output_dir
skips questions already answered. Rank 0 prints one JSON object: counts, what answering cost
("generation": path, questions, prefix fills, vision-tower passes), the files written, the
equivalent `llava-ln score` command and, with --score, the scorer's JSON under "scores" (also saved
as OUTPUT_DIR/scores.json). Layouts: eval/README.md.

score: the flags are llava_ln.scoring.dispatch.ScoreRequest (its docstring shows each benchmark's
result) plus --output_file; prints one JSON object. Ground-truth items without a prediction are a
one-line error unless --allow_missing, which scores them as wrong and counts them; extra, repeated
and unparseable predictions are counted in the output; unreadable files are one-line errors naming
the file. Rules: docs/scoring.md (§1 for what every benchmark shares).
"""
import json
import os
from dataclasses import dataclass, field
from typing import Optional

from llava_ln.core.flags import parse_flags
from llava_ln.evaluation.args import EvalArguments
from llava_ln.scoring.dispatch import ScoreRequest, score


def eval_main(argv) -> int:
    (args,) = parse_flags(argv, (EvalArguments,), prog="llava-ln eval",
                          description="Generate benchmark answers in batches and write the official result files.")
    from llava_ln.evaluation.runner import run_eval

    summary = run_eval(args)
    if summary is None:  # not rank 0
        return 0
    if "scores" in summary:
        from llava_ln.core.atomic import write_json_atomic

        write_json_atomic(os.path.join(args.output_dir, "scores.json"), summary["scores"])
    print(json.dumps(summary, indent=2, allow_nan=False), flush=True)
    return 0


@dataclass
class ScoreOutput:
    output_file: Optional[str] = field(default=None, metadata={"help": "Also write the JSON result to this file."})


def score_main(argv) -> int:
    request, output = parse_flags(
        argv, (ScoreRequest, ScoreOutput), prog="llava-ln score",
        description="Score prediction files as the official tools do; prints one JSON object.",
    )
    text = json.dumps(score(request), indent=2, allow_nan=False)
    if output.output_file:
        from llava_ln.core.atomic import atomic_path

        with atomic_path(output.output_file, ".json") as tmp:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
    print(text)
    return 0
