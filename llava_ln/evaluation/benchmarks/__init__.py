"""The benchmarks `llava-ln eval` runs, one module each, plus what they share.

  registry   name -> EvalBenchmark (how to find, read and write it, and its default prompt; core.benchmarks' + generic)
  common     EvalItem, LLaVA-1.5's prompt suffixes, finding files in an official layout
  mme        MME: read the official layout as questions; write the official output files
  pope       POPE: the same
  vqav2      VQAv2: the same
  captions   COCO / Flickr30k captions: the same
  generic    any LLaVA question file ({question_id, image, text} JSON lines); answers as LLaVA writes them
"""
