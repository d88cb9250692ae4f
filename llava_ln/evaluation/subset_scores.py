"""Headline scores, and scoring a fixed subset of a benchmark in memory (evaluation during training).

Headline numbers, one per benchmark, on the scale the paper's tables use: VQAv2 accuracy (%),
POPE mean F1 over its splits (x100), MME perception, COCO / Flickr30k CIDEr (x100). `headline`
reads them from the scorer's JSON (`llava-ln score`, `llava-ln eval --score`).

A subset (--eval_limit K) is K items spread evenly over the benchmark's own list (MME keeps each
image's two questions together, since its acc+ pairs them), the same K every time, so the points of
a learning curve are comparable. The official scorers would count every other ground-truth item
as missing, so the subset is scored in memory with the scoring package's own rules on the subset's
ground truth only: VQA soft accuracy, POPE's first-sentence rule and positional pairing, MME's
4-character parse and pairs, pycocoevalcap's CIDEr (needs Java, like every caption score).
"""
from llava_ln.core.benchmarks import BENCHMARKS, get_benchmark_spec
from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring.files import canonical_id, read_json_or_jsonl


def headline(benchmark: str, scores: dict) -> float | None:
    """The benchmark's headline number from its scorer JSON (None when the scorer left it undefined)."""
    return get_benchmark_spec(benchmark).headline(scores)


def evenly_spaced(items: list, limit: int, benchmark: str) -> list:
    """`limit` items spread over the list in order (all of them when limit is 0 or covers the list)."""
    if not limit or limit >= len(items):
        return list(items)
    if benchmark == "mme":  # whole images: consecutive question pairs
        pairs = [items[i:i + 2] for i in range(0, len(items), 2)]
        return [item for pair in evenly_spaced(pairs, max(1, limit // 2), "") for item in pair]
    return [items[(index * len(items)) // limit] for index in range(limit)]


def score_subset(benchmark: str, sources: dict, items: list, answers: dict) -> dict:
    """Scorer-shaped JSON for `items` alone (answers: {item key: text}), for `headline`."""
    if benchmark not in BENCHMARKS:
        raise LlavaLnError(f"--eval_benchmarks: no subset scoring for {benchmark!r}")
    return _SCORERS[BENCHMARKS[benchmark].rules](sources, items, answers)


def _vqav2(sources: dict, items: list, answers: dict) -> dict:
    from llava_ln.scoring.vqa import load_vqa_annotations, score_vqa

    if not sources.get("annotations"):
        raise LlavaLnError("--eval_benchmarks vqav2: the split has no annotations to score against")
    wanted = {canonical_id(item.record["question_id"]): item.key for item in items}
    annotations = [record for record in load_vqa_annotations(sources["annotations"])
                   if canonical_id(record["question_id"]) in wanted]
    predictions = {record["question_id"]: answers[wanted[canonical_id(record["question_id"])]]
                   for record in annotations}
    return score_vqa(annotations, predictions, where="VQAv2 subset")


def _pope(sources: dict, items: list, answers: dict) -> dict:
    from llava_ln.scoring.pope import score_pope

    splits = {}
    for split, path in sources["labels"].items():
        chosen = [item for item in items if item.group == split]
        if not chosen:
            continue
        payload = read_json_or_jsonl(path, "POPE labels")
        labels = {canonical_id(r["question_id"]): r for r in ([payload] if isinstance(payload, dict) else payload)}
        splits[split] = ([labels[canonical_id(item.record["question_id"])] for item in chosen],
                         [{"question_id": item.record["question_id"], "text": answers[item.key]} for item in chosen])
    return score_pope(splits)


def _mme(sources: dict, items: list, answers: dict) -> dict:
    from llava_ln.scoring.mme import score_mme

    subtasks: dict = {}
    for item in items:
        subtasks.setdefault(item.group, []).append((item.record["ground_truth"], answers[item.key]))
    return score_mme(subtasks)


def _captions(sources: dict, items: list, answers: dict) -> dict:
    from llava_ln.scoring.caption import load_caption_annotations, score_captions

    references = load_caption_annotations(sources["annotations"])
    keys = {canonical_id(item.record["image_id"]): item.key for item in items}
    chosen = {image_id: refs for image_id, refs in references.items() if image_id in keys}
    return score_captions(chosen, {image_id: answers[keys[image_id]] for image_id in chosen})


_SCORERS = {"vqa": _vqav2, "pope": _pope, "mme": _mme, "caption": _captions}  # by core.benchmarks' rules
