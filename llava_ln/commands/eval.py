"""`llava-ln eval`: generate benchmark answers in batches and write them in the official formats.

  llava-ln eval --benchmark mme|vqav2|pope|coco_caption|flickr30k --model_path CKPT --data DIR --output_dir OUT
        [--question_file Q] [--annotation_file A] [--image_folder IMG] [--split S] [--upload_question_file T]
        [--batch_size 16] [--max_new_tokens 128] [--temperature 0] [--num_beams 1] [--prompt TEXT]
        [--conv_template NAME] [--image_aspect_ratio pad|resize|crop] [--score] [--overwrite]

Multi-GPU: launch with `torchrun --nproc_per_node N -m llava_ln.cli eval ...` (or `deepspeed`);
questions are split across ranks and gathered in-process. A rerun with the same --output_dir
skips questions already answered. Rank 0 prints one JSON object: counts, the files written,
the equivalent `llava-ln score` command and, with --score, the scorer's JSON under "scores"
(also saved as OUTPUT_DIR/scores.json). Layouts: eval/README.md.
"""
import json
import os

from llava_ln.core.flags import parse_flags
from llava_ln.evaluation.args import EvalArguments


def main(argv) -> int:
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
