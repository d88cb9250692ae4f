"""Benchmark scoring that reproduces the official tools (rules: shared/docs/metrics.md).

One module per benchmark; each keeps pure functions (scores from in-memory lists) apart from the
file readers, so tests and other code can call the rules directly:
  vqa_normalize  VQA answer normalization (punctuation, digits, articles, contractions)
  vqa            VQAv2 local val accuracy (unanimity gate, leave-one-out, per-type means)
  evalai         the EvalAI answer processor and the VQAv2 test-dev upload
  mme            MME 4-character parse, consecutive-line pairs, acc + acc+ per subtask
  pope           POPE first-sentence parse, positional pairing, P/R/F1 per split
  caption        COCO/Flickr30k captioning through pycocoevalcap (needs Java)
  formats        writers of every prediction file format, shared with generation
  jsonio         JSON/JSONL readers whose errors name the file
"""
