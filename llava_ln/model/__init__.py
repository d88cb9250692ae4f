"""The composed model: any causal LM + a CLIP/SigLIP tower + a connector, as transformers' own Llava.

  args        the flags that choose the backbones (LLaVA's names)
  backbones   tokenizer with `<image>`, the vision tower, the attention kernel per part
  connector   linear, mlp2x_gelu (LLaVA-1.5, transformers' own projector) and mlpNx_gelu
  llava_checkpoints  --model_name_or_path in a LLaVA layout (transformers', original): configs, backbones
  builder     build_mllm: compose the three into LlavaForConditionalGeneration (no subclassing)
  parts       named access to the parts (vision tower, connector, LLM, blocks), PEFT-wrapped or not
  quantize    --bits 4|8: the LLM's block linears as bitsandbytes layers, and their bytes from shapes alone
  forward     the training forward: image features spliced into the embeddings, text-only batches too
  packed_attention  whether an LLM keeps the samples of a packed row apart (attention, layer kinds, masks)
  shapes      reference shapes as configs only: LLaVA-1.5 7B / 13B, a 1B LLaMA, a tiny one
"""
