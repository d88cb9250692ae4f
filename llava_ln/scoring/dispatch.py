"""Score one benchmark's files: the typed entry point `llava-ln score` and `llava-ln eval --score` share.

  ScoreRequest(benchmark="vqav2", annotations=A, predictions=R [, questions=Q])
        -> {"overall", "yes/no", "number", "other", ...} in percent
     upload_file=OUT, questions=TEST_Q also writes the EvalAI test-dev upload
  ScoreRequest(benchmark="mme", predictions=DIR [, annotations=TEMPLATES] [, mme_subtasks=8])
        -> {"perception", "cognition", "subtasks": {...}, ...}
  ScoreRequest(benchmark="pope", annotations=A, predictions=P [, questions=LLAVA_Q])
        (a path each, split=path lists, a label folder, or one answer file for every split)
        -> {"splits": {split: {"accuracy", "precision", "recall", "f1", "yes_ratio"}}, "mean_f1"}
  ScoreRequest(benchmark="coco_caption"|"flickr30k", annotations=COCO, predictions=R [, spice=True])
        -> {"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} as pycocoevalcap reports them

Every benchmark applies one rule to ground-truth items without a prediction (docs/scoring.md §1.2):
an error naming how many and the first ids, unless allow_missing=True (`--allow_missing`), which
scores them as wrong and reports how many under "missing".

The dataclass doubles as the CLI's flags (its field metadata is the --help text).
"""
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Optional

from llava_ln.core.benchmarks import BENCHMARKS, get_benchmark_spec
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import Domain


@dataclass(kw_only=True)
class ScoreRequest:
    benchmark: str = field(metadata={"help": "Which benchmark's rules to apply.", "choices": list(BENCHMARKS)})
    predictions: str = field(metadata={"help": "Results file (vqav2, captions), answers (pope) or folder (mme)."})
    annotations: Optional[str] = field(default=None, metadata={
        "help": "Ground truth: VQA annotations, POPE labels (file, split=path list or folder), COCO-format "
                "captions, MME template folder (optional: image, question, ground truth per line)."})
    questions: Optional[str] = field(default=None, metadata={
        "help": "vqav2: questions file (checked against annotations; the id list for --upload_file). "
                "pope: LLaVA's llava_pope_test.jsonl, whose 'category' gives each answer's split in one combined file."})
    mme_subtasks: int = field(default=10, metadata={
        "help": "mme: sum Perception over 10 subtasks (official) or 8 (no artwork, OCR).", "domain": Domain(choices=(8, 10))})
    spice: bool = field(default=False, metadata={
        "help": "captions: also run SPICE (needs the Stanford CoreNLP 3.6.0 jars; no download)."})
    upload_file: Optional[str] = field(default=None, metadata={
        "help": "vqav2: write the EvalAI test-dev upload here (needs --questions)."})
    allow_missing: bool = field(default=False, metadata={
        "help": "Score ground-truth items that have no prediction as wrong instead of refusing the file."})

    def command_line(self) -> list[str]:
        """The `llava-ln score` flags that make the same request."""
        argv = []
        by_name = {spec.name: spec for spec in fields(self)}
        # Ground truth before predictions, as the command reads best; then the options.
        for name in ("benchmark", "annotations", "predictions", *[n for n in by_name if n not in
                                                                  ("benchmark", "annotations", "predictions")]):
            value, default = getattr(self, name), by_name[name].default
            if value is None or value is False or (default is not MISSING and value == default):
                continue
            argv += [f"--{name}"] + ([] if value is True else [str(value)])
        return argv


def _need(value, flag: str, benchmark: str) -> str:
    if not value:
        raise LlavaLnError(f"--benchmark {benchmark} needs {flag}")
    return value


def _score_vqav2(request: ScoreRequest) -> dict:
    from llava_ln.scoring.vqa import load_vqa_predictions, score_vqa_files, write_vqav2_testdev_upload

    if not request.annotations and not request.upload_file:
        raise LlavaLnError("--benchmark vqav2 needs --annotations (val scoring) or --upload_file (test-dev upload)")
    result = score_vqa_files(request.annotations, request.predictions, request.questions,
                             allow_missing=request.allow_missing) if request.annotations else {}
    if request.upload_file:
        predictions, _ = load_vqa_predictions(request.predictions)
        questions = _need(request.questions, "--questions", "vqav2 --upload_file")
        counts = write_vqav2_testdev_upload(request.upload_file, questions, predictions)
        result["upload"] = {"file": request.upload_file, **counts}
    return result


def _score_captions(request: ScoreRequest) -> dict:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise LlavaLnError("caption scoring needs pycocoevalcap: pip install 'llava-ln[eval]'") from None
    from llava_ln.scoring.caption import score_caption_files

    annotations = _need(request.annotations, "--annotations", request.benchmark)
    return score_caption_files(annotations, request.predictions, spice=request.spice,
                               allow_missing=request.allow_missing)


def score(request: ScoreRequest) -> dict:
    """The result object for one benchmark (see the module docstring for its shape); strict JSON values."""
    rules = get_benchmark_spec(request.benchmark).rules
    if rules == "vqa":
        result = _score_vqav2(request)
    elif rules == "mme":
        from llava_ln.scoring.mme import score_mme_dir

        result = score_mme_dir(request.predictions, perception_subtasks=request.mme_subtasks,
                               annotations=request.annotations, allow_missing=request.allow_missing)
    elif rules == "pope":
        from llava_ln.scoring.pope import score_pope_files

        result = score_pope_files(_need(request.annotations, "--annotations", "pope"), request.predictions,
                                  questions=request.questions, allow_missing=request.allow_missing)
    else:
        result = _score_captions(request)
    return _json_safe({"benchmark": request.benchmark, **result})


def _json_safe(value):
    """NaN/inf (SPICE can return NaN for an image) become null, so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value
