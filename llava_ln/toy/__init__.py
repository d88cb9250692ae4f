"""The embedded toy world: coloured-shape scenes, LLaVA-format data, benchmark-format eval sets, tiny backbones.

Entry points: `llava-ln toy --out DIR --seed N` (generate.write_toy_world) and
`python -m llava_ln.toy.backbones.pretrain` (rebuild the committed backbones in assets/).

Read in order, each module building on the ones above it:
  world       the world's constants, the scene model, seeded scene sampling and rendering
  language    noun phrases, captions, detailed descriptions, instruction prompts
  questions   every question about a scene with its short and long answers
  train_data  stage-1 caption records, stage-2 instruction records, the LLM's text corpus
  eval_sets   VQAv2, POPE, MME and COCO/Flickr30k caption sets in their official formats
  layout      where each file of a world goes, and the byte-stable writers
  generate    write a whole world (and its eval README) from one seed
  backbones/  the tiny LLM and vision tower: architectures, install, pretraining
"""
