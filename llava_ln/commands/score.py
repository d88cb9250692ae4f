"""`llava-ln score`: score prediction files exactly as the official tools do; prints one JSON object.

  --benchmark vqav2 --annotations A.json --predictions R.json [--questions Q.json]
        -> {"overall", "yes/no", "number", "other", ...} in percent
     add --upload_file OUT.json --questions TEST_Q.json to write the EvalAI test-dev upload
  --benchmark mme --predictions DIR [--mme_subtasks 8]
        -> {"perception", "cognition", "subtasks": {...}, ...}
  --benchmark pope --annotations A --predictions P   (a path each, or split=path,split=path)
        -> {"splits": {split: {"accuracy", "precision", "recall", "f1", "yes_ratio"}}, "mean_f1"}
  --benchmark coco_caption|flickr30k --annotations COCO.json --predictions R.json [--spice]
        -> {"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} as pycocoevalcap reports them

Missing, extra and unparseable predictions are counted in the output, never fatal; unreadable
files are one-line errors naming the file. Rules: shared/docs/metrics.md and llava_ln/scoring/.
"""
import json
import math
from dataclasses import dataclass, field
from typing import Optional

from llava_ln.commands.flags import parse_flags
from llava_ln.errors import LlavaLnError

BENCHMARKS = ("vqav2", "mme", "pope", "coco_caption", "flickr30k")


@dataclass
class ScoreArguments:
    benchmark: str = field(metadata={"help": "Which benchmark's rules to apply.", "choices": list(BENCHMARKS)})
    predictions: str = field(metadata={"help": "Results file (vqav2, captions), answers (pope) or folder (mme)."})
    annotations: Optional[str] = field(default=None, metadata={"help": "Ground truth: VQA annotations, POPE labels, COCO-format captions."})
    questions: Optional[str] = field(default=None, metadata={"help": "vqav2: questions file (checked against annotations; the id list for --upload_file)."})
    mme_subtasks: int = field(default=10, metadata={"help": "mme: sum Perception over 10 subtasks (official) or 8 (no artwork, OCR).", "choices": [8, 10]})
    spice: bool = field(default=False, metadata={"help": "captions: also run SPICE (needs the Stanford CoreNLP 3.6.0 jars; no download)."})
    upload_file: Optional[str] = field(default=None, metadata={"help": "vqav2: write the EvalAI test-dev upload here (needs --questions)."})
    output_file: Optional[str] = field(default=None, metadata={"help": "Also write the JSON result to this file."})


def _need(value, flag: str, benchmark: str) -> str:
    if not value:
        raise LlavaLnError(f"--benchmark {benchmark} needs {flag}")
    return value


def _score_vqav2(args: ScoreArguments) -> dict:
    from llava_ln.scoring.formats import write_vqav2_testdev_upload
    from llava_ln.scoring.vqa import load_vqa_predictions, score_vqa_files

    if not args.annotations and not args.upload_file:
        raise LlavaLnError("--benchmark vqav2 needs --annotations (val scoring) or --upload_file (test-dev upload)")
    result = score_vqa_files(args.annotations, args.predictions, args.questions) if args.annotations else {}
    if args.upload_file:
        predictions, _ = load_vqa_predictions(args.predictions)
        counts = write_vqav2_testdev_upload(args.upload_file, _need(args.questions, "--questions", "vqav2 --upload_file"), predictions)
        result["upload"] = {"file": args.upload_file, **counts}
    return result


def _score_captions(args: ScoreArguments) -> dict:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise LlavaLnError("caption scoring needs pycocoevalcap: pip install 'llava-ln[eval]'") from None
    from llava_ln.scoring.caption import score_caption_files

    return score_caption_files(_need(args.annotations, "--annotations", args.benchmark), args.predictions, spice=args.spice)


def score(args: ScoreArguments) -> dict:
    """The result object for one benchmark (see the module docstring for its shape)."""
    if args.benchmark == "vqav2":
        result = _score_vqav2(args)
    elif args.benchmark == "mme":
        from llava_ln.scoring.mme import score_mme_dir

        result = score_mme_dir(args.predictions, perception_subtasks=args.mme_subtasks)
    elif args.benchmark == "pope":
        from llava_ln.scoring.pope import score_pope_files

        result = score_pope_files(_need(args.annotations, "--annotations", "pope"), args.predictions)
    else:
        result = _score_captions(args)
    return {"benchmark": args.benchmark, **result}


def _json_safe(value):
    """NaN/inf (SPICE can return NaN for an image) become null, so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def main(argv) -> int:
    (args,) = parse_flags(
        argv, (ScoreArguments,), prog="llava-ln score",
        description="Score prediction files as the official tools do; prints one JSON object.",
    )
    result = _json_safe(score(args))
    text = json.dumps(result, indent=2, allow_nan=False)
    if args.output_file:
        from llava_ln.checkpoint.atomic import atomic_path

        with atomic_path(args.output_file, ".json") as tmp:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
    print(text)
    return 0
