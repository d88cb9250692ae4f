"""The toy backbones: a tiny LLaMA-architecture LLM and a tiny CLIP vision tower, pretrained on the toy world.

Read in order:
  spec             architectures, committed files (llava_ln/toy/assets), install into a world
  pretrain         `python -m llava_ln.toy.backbones.pretrain`: rebuild the committed weights
  pretrain_llm     the sentencepiece tokenizer and the LLM, trained on train_data.text_corpus
  pretrain_vision  the CLIP tower, trained contrastively on rendered scenes and their texts
"""
