"""Benchmark scoring that reproduces the official tools; the rules are docs/scoring.md.

Modules, in reading order. Each benchmark keeps pure functions (scores from in-memory lists)
apart from its file readers, so tests and other code can call the rules directly:
  files          JSON/JSONL readers, the official-format writers, the missing-prediction rule (§1)
  vqa_normalize  VQA answer normalization: punctuation, digits, articles, contractions (§2.2)
  vqa            VQAv2 val accuracy (unanimity gate, leave-one-out) and the EvalAI test-dev upload (§2)
  mme            MME 4-character parse, consecutive-line pairs, acc + acc+ per subtask (§3)
  pope           POPE first-sentence parse, pairing per split, combined answer files, P/R/F1 (§4)
  caption        COCO/Flickr30k captioning through pycocoevalcap (needs Java) (§5)
  dispatch       ScoreRequest + score(): the entry point of `llava-ln score` and `llava-ln eval --score`
"""
