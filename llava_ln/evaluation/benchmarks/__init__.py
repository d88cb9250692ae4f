"""The benchmarks `llava-ln eval` runs, one module each, plus what they share.

  registry   name -> EvalBenchmark (how to find, read and write it, and its default prompt; core.benchmarks' + generic)
  common     EvalItem, LLaVA-1.5's prompt suffixes, finding files in an official layout
  mme, pope, vqav2, captions   read the official layout as questions; write the official output files
  generic    any LLaVA question file ({question_id, image, text} JSON lines); answers as LLaVA writes them
"""
