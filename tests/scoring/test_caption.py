"""Caption metrics: pycocoevalcap's scorers against hand calculations, and the Java pipeline.

BLEU / ROUGE-L / CIDEr expectations follow the formulas of docs/scoring.md §5, evaluated
by hand for tiny inputs. The Java part (PTB tokenizer, METEOR) runs for real but only a few
times, because each JVM start costs seconds.
"""
import json
import math
import shutil

import pytest

from llava_ln.cli import main as cli_main
from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring import caption
from llava_ln.scoring.caption import score_captions, score_tokenized, tokenize_captions
from llava_ln.scoring.files import write_caption_results

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java is needed for PTB/METEOR")


def _bleu_by_hand(correct, guess, hyp_len, ref_len, order):
    """docs/scoring.md §5.3: prod_n (C_n + 1e-15) / (G_n + 1e-9), to the 1/N, times the brevity penalty."""
    value = 1.0
    for n in range(order):
        value *= (correct[n] + 1e-15) / (guess[n] + 1e-9)
    value **= 1.0 / order
    ratio = (hyp_len + 1e-15) / (ref_len + 1e-9)
    return value * math.exp(1 - 1 / ratio) if ratio < 1 else value


def _scores(refs, hyps):
    return score_tokenized({k: v for k, v in refs.items()}, {k: [h] for k, h in hyps.items()}, meteor=False)


def test_bleu_perfect_match_is_just_below_one():
    s = _scores({1: ["a b c d"]}, {1: "a b c d"})
    expected = _bleu_by_hand([4, 3, 2, 1], [4, 3, 2, 1], 4, 4, 4)
    assert s["Bleu_4"] == pytest.approx(expected, rel=1e-12)
    assert 0.9999999990 < s["Bleu_4"] < 1.0


def test_bleu_clipping_short_hypothesis_and_zero_matches():
    s = _scores({1: ["the cat"]}, {1: "the the the the"})  # "the" clipped at 1 of 4 guesses
    assert s["Bleu_1"] == pytest.approx(_bleu_by_hand([1], [4], 4, 2, 1), rel=1e-12)
    s = _scores({1: ["a b"]}, {1: "a"})  # no bigram in the hypothesis: the 1e-15/1e-9 = 1e-6 factor
    assert s["Bleu_2"] == pytest.approx(_bleu_by_hand([1, 0], [1, 0], 1, 2, 2), rel=1e-9)
    s = _scores({1: ["a b x c d"]}, {1: "a b c d e"})  # no matching 4-gram: tiny, not zero
    expected = _bleu_by_hand([4, 2, 0, 0], [5, 4, 3, 2], 5, 5, 4)
    assert s["Bleu_4"] == pytest.approx(expected, rel=1e-9) and 0 < s["Bleu_4"] < 1e-3


def test_bleu_closest_reference_length_prefers_the_shorter_on_a_tie():
    # Hypothesis of 3 words; references of 2 and 4 words tie, the shorter (2) wins: no penalty.
    s = _scores({1: ["x y", "a b c d"]}, {1: "a b c"})
    assert s["Bleu_1"] == pytest.approx(_bleu_by_hand([3], [3], 3, 2, 1), rel=1e-12)
    # References of 4 and 5 words: closest is 4, so a brevity penalty applies.
    s = _scores({1: ["a b c d", "a b c d e"]}, {1: "a b c"})
    assert s["Bleu_1"] == pytest.approx(_bleu_by_hand([3], [3], 3, 4, 1), rel=1e-12)
    assert s["Bleu_1"] < 0.8


def test_bleu_corpus_score_pools_counts():
    s = _scores({1: ["a b"], 2: ["w x y z"]}, {1: "a b", 2: "c d e f"})
    assert s["Bleu_1"] == pytest.approx(_bleu_by_hand([2], [6], 6, 6, 1), rel=1e-12)  # ~1/3, not the mean ~1/2


def test_rouge_l_maxes_precision_and_recall_separately():
    # ref 1 gives P = 2/4, R = 1; ref 2 gives P = 1, R = 4/8: the maxes are both 1, so the score is 1.
    s = _scores({1: ["a b", "a b c d e f g h"]}, {1: "a b c d"})
    assert s["ROUGE_L"] == pytest.approx(1.0)
    s = _scores({1: ["a b c d"]}, {1: "a b"})  # P = 1, R = 0.5, beta = 1.2
    assert s["ROUGE_L"] == pytest.approx((1 + 1.44) * 1 * 0.5 / (0.5 + 1.44 * 1))


def test_cider_one_image_corpus_scores_zero():
    assert _scores({1: ["a man riding a horse"]}, {1: "a man riding a horse"})["CIDEr"] == 0.0


def test_cider_idf_depends_on_the_evaluated_set():
    refs = {1: ["a b"], 2: ["c d"]}
    hyps = {1: "a c", 2: "c d"}
    # N = 2, every n-gram has df <= 1, so every weight is ln 2. Image 1: unigram cosine 1/2, bigram 0,
    # 3- and 4-grams 0 -> 10 * (0.5 / 4) = 1.25. Image 2 matches exactly: 10 * (1 + 1) / 4 = 5.
    assert _scores(refs, hyps)["CIDEr"] == pytest.approx((1.25 + 5.0) / 2)
    # A third image whose references contain "c": N = 3, df(c) = 2, so w(c) = ln 3 - ln 2 and
    # image 1's unigram cosine becomes ln3 / (sqrt(2) * sqrt(ln3^2 + (ln3 - ln2)^2)).
    l2, l3 = math.log(2), math.log(3)
    image1 = 10 * (l3 / (math.sqrt(2) * math.sqrt(l3 ** 2 + (l3 - l2) ** 2))) / 4
    three = _scores({**refs, 3: ["c e"]}, {**hyps, 3: "c e"})
    # Image 2 ("c d") and 3 ("c e"): unigram weights (ln3 - ln2, ln3) against the same -> cosine 1.
    assert three["CIDEr"] == pytest.approx((image1 + 5.0 + 5.0) / 3)
    assert image1 == pytest.approx(1.658, abs=1e-3)


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(caption.shutil, "which", lambda name: None)
    with pytest.raises(LlavaLnError, match="needs Java"):
        score_captions({1: ["a dog"]}, {1: "a dog"})


def test_spice_without_its_jars_is_refused_before_any_work(monkeypatch):
    monkeypatch.setattr(caption.shutil, "which", lambda name: None)  # would fail later if reached
    monkeypatch.setattr(caption.os.path, "exists", lambda path: False)
    with pytest.raises(LlavaLnError, match="stanford-corenlp-3.6.0"):
        score_captions({1: ["a dog"]}, {1: "a dog"}, spice=True)


def test_missing_caption_refused_before_java_and_scored_empty_when_allowed(tmp_path, monkeypatch):
    (tmp_path / "ann.json").write_text(json.dumps({"annotations": [
        {"image_id": i, "id": i, "caption": f"a picture number {i}"} for i in (1, 2, 3)]}))
    write_caption_results(str(tmp_path / "res.json"), [{"image_id": 1, "caption": "a picture"},
                                                        {"image_id": 7, "caption": "not annotated"}])
    monkeypatch.setattr(caption.shutil, "which", lambda name: None)  # the refusal must come before Java
    with pytest.raises(LlavaLnError, match=r"2 of 3 annotated images have no prediction \(first: 2, 3\)"):
        caption.score_caption_files(str(tmp_path / "ann.json"), str(tmp_path / "res.json"))
    seen = {}
    monkeypatch.setattr(caption, "score_captions", lambda refs, hyps, spice=False: seen.update(hyps) or {})
    result = caption.score_caption_files(str(tmp_path / "ann.json"), str(tmp_path / "res.json"), allow_missing=True)
    assert seen == {1: "a picture", 2: "", 3: ""}  # every annotated image is scored, the missing ones as ""
    assert result["counts"] == {"duplicate_ids": 0, "invalid_records": 0, "images": 3, "scored": 3,
                                "missing": 2, "extra": 1}


@needs_java
def test_ptb_tokenizer_behaviour():
    out = tokenize_captions({
        1: ["A dog's toy, on the (red) mat.", "I don't know... it cost $3.5 at 10:30 a.m.!"],
        2: ["A cat\rsat\u2028here", "won't cannot gonna 2,000 1/2 well-known ?!"],
        3: ["last"],
    })
    assert out == {
        1: ["a dog 's toy on the -lrb- red -rrb- mat", "i do n't know it cost $ 3.5 at 10:30 a.m."],
        2: ["a cat sat here", "wo n't can not gon na 2,000 1/2 well-known ?!"],  # line breaks kept aligned
        3: ["last"],
    }


@pytest.fixture(scope="module")
def caption_cli_run(tmp_path_factory):
    """One real end-to-end run (PTB twice + METEOR) shared by the assertions below."""
    root = tmp_path_factory.mktemp("captions")
    refs = {
        10: ["A dog runs on the grass.", "A brown dog running, outside."],
        20: ["Two cats sleep on a sofa.", "Cats sleeping on the couch!"],
        30: ["A man rides a horse."],
        40: ["Nobody predicted this one."],
    }
    annotations = {"images": [{"id": i} for i in refs],
                   "annotations": [{"image_id": i, "id": n, "caption": c}
                                   for n, (i, c) in enumerate((i, c) for i, cs in refs.items() for c in cs)]}
    (root / "ann.json").write_text(json.dumps(annotations))
    rows = [{"image_id": 10, "caption": "A dog is running on grass."},
            {"image_id": 20, "caption": "Two cats on a sofa."},
            {"image_id": 30, "caption": "A man riding a horse!"},
            {"image_id": 99, "caption": "An image nobody annotated."}]
    write_caption_results(str(root / "res.json"), rows)
    with open(root / "res.json") as handle:
        results = json.load(handle)
    results.insert(0, {"image_id": 30, "caption": "replaced by the later duplicate"})
    (root / "res.json").write_text(json.dumps(results))
    return root


@needs_java
def test_caption_cli_end_to_end(caption_cli_run, capsys):
    root = caption_cli_run
    argv = ["score", "--benchmark", "coco_caption", "--annotations", str(root / "ann.json"),
            "--predictions", str(root / "res.json")]
    # Image 40 has no caption: refused (before any Java runs) unless --allow_missing.
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 of 4 annotated images have no prediction (first: 40)" in err
    code = cli_main([*argv, "--allow_missing", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["counts"] == {"duplicate_ids": 1, "invalid_records": 0, "images": 4, "scored": 4,
                                "missing": 1, "extra": 1}
    # The same numbers from hand-tokenized text (lower-cased, punctuation tokens dropped); the
    # missing image is scored as an empty caption, so it stays in every average and in CIDEr's idf.
    by_hand = score_tokenized(
        {10: ["a dog runs on the grass", "a brown dog running outside"],
         20: ["two cats sleep on a sofa", "cats sleeping on the couch"],
         30: ["a man rides a horse"],
         40: ["nobody predicted this one"]},
        {10: ["a dog is running on grass"], 20: ["two cats on a sofa"], 30: ["a man riding a horse"], 40: [""]},
        meteor=False,
    )
    for name, value in by_hand.items():
        assert result[name] == pytest.approx(value, rel=1e-12), name
    assert 0.2 < result["METEOR"] < 1.0
    assert result["CIDEr"] > 0
