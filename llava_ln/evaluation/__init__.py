"""Benchmark answer generation (`llava-ln eval`): read an official layout, generate in batches, write official files.

Modules, in reading order:
  args           the flags of `llava-ln eval`
  benchmarks/    one reader/writer per benchmark (MME, POPE, VQAv2, COCO / Flickr30k captions, any LLaVA question file)
  model_loading  any evaluable model folder, with the template and image pipeline it was trained with
  generation     prompt -> input ids exactly as training encodes them; batched, left-padded generate() (the
                 per-question path) and the counts of what answering cost
  image_groups   questions grouped by image and prompt prefix; the split of images across ranks; the batches
  shared_prefix  each image's prefix filled once, its key/value cache answering all its questions
  answering      QuestionAnswerer: picks the path (shared prefix, or per question as the fallback), answers batches
  answer_store   restartable per-rank answer files
  llava_answers  LLaVA's answer file (model_vqa_loader's format), for LLaVA's own converters and scorers
  runner         one run: find questions, skip answered ones, answer the rest across ranks, write, score
  subset_scores  headline numbers; a fixed, evenly spread subset scored in memory with the official rules
  during_training  the training loop's evaluation hook (--eval_benchmarks): subsets, every rank, scores logged
"""
