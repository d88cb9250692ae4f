"""llava-ln: build LLaVA-style multimodal LLMs from any Hugging Face LLM and tune only what matters.

The package is organised by pipeline stage:
  model/     compose LLM + vision tower + connector into a native LlavaForConditionalGeneration
  tuning/    the --tune_mode switch: which parameters train, and their optimizer groups
  data/      LLaVA-format datasets, conversation templates, label masking, collation
  train/     the two training stages on the transformers Trainer / DeepSpeed
  evaluation/ batched generation for the benchmarks; scoring/ the official scoring rules
  export/    merge and export to the transformers-native LLaVA format
  toy/       the embedded toy world used by the demo and the tests
  commands/  one module per `llava-ln` subcommand
"""

__version__ = "0.1.0"
