"""COCO / Flickr30k caption metrics through pycocoevalcap itself (docs/scoring.md §5).

As COCOEvalCap does: references and hypotheses are tokenized separately by the PTB tokenizer
(Java, stanford-corenlp-3.4.1.jar), then BLEU-1..4, METEOR (Java, meteor-1.5.jar), ROUGE-L and
CIDEr-D are computed over the evaluated images all at once (CIDEr's idf depends on the whole
evaluated set, so never score in batches). SPICE is opt-in (`spice=True`): its jar downloads
Stanford CoreNLP 3.6.0 on first use, which an offline machine cannot do, so we refuse with
instructions when those jars are absent instead of letting it try.

Two deliberate differences (docs/scoring.md §5.8). COCOEvalCap scores only the images that have
a prediction; we refuse annotated images without one unless allow_missing, which scores each as
an empty caption (so it counts against every metric instead of leaving the average). And the
characters the Java tokenizer treats as line breaks (\\r, \\v, \\f, U+2028, U+2029) become spaces
first: pycocoevalcap only replaces \\n, so any of them would silently shift every later caption
onto the wrong image.
"""
import contextlib
import os
import shutil
import sys

from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring.files import canonical_id, read_json, refuse_missing, require_list

METRIC_NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
_JAVA_LINE_BREAKS = str.maketrans({"\r": " ", "\x0b": " ", "\x0c": " ", "\u2028": " ", "\u2029": " "})
_SPICE_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def require_java(purpose: str = "caption scoring") -> str:
    """The java executable, or a LlavaLnError saying why it is needed."""
    java = shutil.which("java")
    if java is None:
        raise LlavaLnError(
            f"{purpose} needs Java (>= 8) on PATH: pycocoevalcap runs the PTB tokenizer "
            "(stanford-corenlp-3.4.1.jar) and METEOR (meteor-1.5.jar); install a JRE, e.g. openjdk-17-jre-headless"
        )
    return java


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send Python prints and child-process output to stderr, keeping stdout for the JSON result."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def tokenize_captions(captions: dict) -> dict:
    """{id: [caption, ...]} -> {id: [tokenized caption, ...]} with pycocoevalcap's PTBTokenizer."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    require_java("the PTB tokenizer")
    jar_dir = os.path.dirname(os.path.abspath(ptbtokenizer.__file__))
    if not os.access(jar_dir, os.W_OK):
        raise LlavaLnError(f"pycocoevalcap's PTBTokenizer writes its temp file next to its jar, but {jar_dir} is read-only")
    wrapped = {key: [{"caption": text.translate(_JAVA_LINE_BREAKS)} for text in texts] for key, texts in captions.items()}
    tokenized = ptbtokenizer.PTBTokenizer().tokenize(wrapped)
    for key, texts in captions.items():
        if len(tokenized.get(key, ())) != len(texts):
            raise LlavaLnError(f"the PTB tokenizer returned fewer lines than captions (image {key}); check the Java install")
    return tokenized


def _meteor_score(references: dict, hypotheses: dict) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        score, _ = meteor.compute_score(references, hypotheses)
    except (ValueError, OSError) as err:
        if meteor.lock.locked():  # compute_score died holding it; Meteor.__del__ would wait forever
            meteor.lock.release()
        meteor.meteor_p.kill()
        detail = meteor.meteor_p.stderr.read().decode(errors="replace").strip()[-400:]
        raise LlavaLnError(f"METEOR (java -Xmx2G -jar meteor-1.5.jar) failed: {err}; {detail}") from None
    finally:
        del meteor
    return float(score)


def require_spice_jars() -> None:
    """Refuse SPICE up front when its CoreNLP jars are absent (pycocoevalcap would try to download them)."""
    from pycocoevalcap.spice import spice as spice_module

    lib_dir = os.path.join(os.path.dirname(os.path.abspath(spice_module.__file__)), "lib")
    absent = [jar for jar in _SPICE_CORENLP_JARS if not os.path.exists(os.path.join(lib_dir, jar))]
    if absent:
        raise LlavaLnError(
            f"SPICE needs {' and '.join(absent)} in {lib_dir}; pycocoevalcap would download them from "
            "nlp.stanford.edu (stanford-corenlp-full-2015-12-09.zip), which needs internet. Copy them there "
            "from a connected machine, or score without --spice"
        )


def _spice_score(references: dict, hypotheses: dict) -> float:
    from pycocoevalcap.spice.spice import Spice

    require_spice_jars()
    score, _ = Spice().compute_score(references, hypotheses)
    return float(score)


def score_tokenized(references: dict, hypotheses: dict, meteor: bool = True, spice: bool = False) -> dict:
    """Metrics from already tokenized {id: [refs]} and {id: [one hypothesis]} with the same keys.

    BLEU, ROUGE-L and CIDEr are pure Python; meteor=True and spice=True start Java.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if list(references) != list(hypotheses):
        raise ValueError("references and hypotheses must have the same image ids in the same order")
    bleu, _ = Bleu(4).compute_score(references, hypotheses, verbose=0)
    scores = {f"Bleu_{n}": float(value) for n, value in enumerate(bleu, start=1)}
    if meteor:
        scores["METEOR"] = _meteor_score(references, hypotheses)
    scores["ROUGE_L"] = float(Rouge().compute_score(references, hypotheses)[0])
    scores["CIDEr"] = float(Cider().compute_score(references, hypotheses)[0])
    if spice:
        scores["SPICE"] = _spice_score(references, hypotheses)
    return scores


def score_captions(references: dict, predictions: dict, spice: bool = False) -> dict:
    """Full pipeline on raw text: {id: [reference, ...]} and {id: caption} for the same ids."""
    if spice:
        require_spice_jars()
    if not references:
        return {name: None for name in METRIC_NAMES + (("SPICE",) if spice else ())}
    require_java()
    with _stdout_to_stderr():
        tokenized_refs = tokenize_captions(references)
        tokenized_hyps = tokenize_captions({key: [predictions[key]] for key in references})
        return score_tokenized(tokenized_refs, tokenized_hyps, meteor=True, spice=spice)


def load_caption_annotations(path: str) -> dict:
    """{image_id: [reference captions]} from a COCO-format file, in its "images" order."""
    payload = read_json(path, "caption annotations")
    annotations = require_list(payload, path, "caption annotations", key="annotations")
    references = {}
    if isinstance(payload, dict) and isinstance(payload.get("images"), list):
        for image in payload["images"]:  # COCOEvalCap follows this order; it fixes float summation order
            image_id = canonical_id(image.get("id")) if isinstance(image, dict) else None
            if image_id is not None:
                references.setdefault(image_id, [])
    for index, record in enumerate(annotations):
        image_id = canonical_id(record.get("image_id")) if isinstance(record, dict) else None
        if image_id is None or not isinstance(record.get("caption"), str):
            raise LlavaLnError(f"caption annotations file {path}, annotation {index} needs an image_id and a string caption")
        references.setdefault(image_id, []).append(record["caption"])
    return {image_id: refs for image_id, refs in references.items() if refs}


def load_caption_predictions(path: str) -> tuple[dict, dict]:
    """({image_id: caption}, counts) from [{"image_id", "caption"}]; a repeated id keeps its last caption.

    A record without a usable image_id is skipped; one whose caption is not a string stands for
    an empty caption. Both are counted as invalid records.
    """
    records = require_list(read_json(path, "caption predictions"), path, "caption predictions")
    predictions, counts = {}, {"duplicate_ids": 0, "invalid_records": 0}
    for record in records:
        image_id = canonical_id(record.get("image_id")) if isinstance(record, dict) else None
        caption = record.get("caption") if image_id is not None else None
        if not isinstance(caption, str):
            counts["invalid_records"] += 1
            if image_id is None:
                continue
        counts["duplicate_ids"] += image_id in predictions
        predictions[image_id] = caption if isinstance(caption, str) else ""
    return predictions, counts


def score_caption_files(annotations_path: str, predictions_path: str, spice: bool = False,
                        allow_missing: bool = False) -> dict:
    """Score a results file against every annotated image; a missing caption is refused or scored as ""."""
    references = load_caption_annotations(annotations_path)
    predictions, counts = load_caption_predictions(predictions_path)
    missing = [image_id for image_id in references if image_id not in predictions]
    refuse_missing(f"caption predictions file {predictions_path}", missing, len(references), "annotated images",
                   allow_missing)
    result = score_captions(references, {image_id: predictions.get(image_id, "") for image_id in references},
                            spice=spice)
    counts.update({
        "images": len(references),
        "scored": len(references),
        "missing": len(missing),
        "extra": sum(1 for image_id in predictions if image_id not in references),
    })
    result["counts"] = counts
    if missing:
        result["notes"] = [f"{len(missing)} annotated image(s) have no prediction and are scored as an empty caption"]
    return result
