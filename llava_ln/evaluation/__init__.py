"""Benchmark answer generation (`llava-ln eval`): read an official layout, generate in batches, write official files.

Modules, in reading order:
  args           the flags of `llava-ln eval`
  benchmarks/    one reader/writer per benchmark (MME, POPE, VQAv2, COCO / Flickr30k captions, any LLaVA question file)
  model_loading  any evaluable model folder, with the template and image pipeline it was trained with
  generation     prompt -> input ids exactly as training encodes them; batched, left-padded generate()
  answer_store   restartable per-rank answer files
  llava_answers  LLaVA's answer file (model_vqa_loader's format), for LLaVA's own converters and scorers
  runner         one run: find questions, skip answered ones, generate the rest across ranks, write, score
"""
