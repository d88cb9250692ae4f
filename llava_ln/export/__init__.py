"""Leaving the framework: merged standalone checkpoints, the transformers-native format, PEFT adapters.

  merge           `llava-ln merge`: fold LoRA (checked) and write a merged folder
  output_folder   the output folder of merge and export: owned while written, leftovers of a killed run cleaned
  chat_templates  our conversation templates as Jinja chat templates
  hf              `llava-ln export --format hf`: LlavaForConditionalGeneration + LlavaProcessor, verified
  quantized       `export --format hf --bits 4`: the verified export stored with 4-bit block linears, verified again
  llava_layout    `llava-ln export --format llava`: original LLaVA's layout (LlavaLlamaForCausalLM), verified
  peft_ln         `llava-ln export --format peft-ln`: the norm deltas as a PEFT LN-tuning adapter, verified
  peft_lora       `llava-ln export --format peft-lora`: a lora run's factors as an adapter for the base LLM
  probes          the probes every verification runs, and our side of it (llava-ln's own pipeline)
  verify          comparison with tolerances, and the fresh process that runs the other side
  fresh_child     the script that fresh process runs: plain transformers / PEFT, no llava-ln code

Every path starts from checkpoint.loading (run folder, checkpoint-<step>, ZeRO shards, or a merged
folder; stored tensors are checked against the base first) and every export is verified.
"""
