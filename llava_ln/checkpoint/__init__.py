"""Checkpoint formats: a run folder holds a manifest plus only the tensors that were trained.

  OUTPUT_DIR/
    manifest.json               what this is (base LLM, vision tower, connector, mode, template, ...)
    trained.safetensors         every trainable tensor except LoRA factors (sharded with an index if large)
    adapter/                    PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors), lora only
    stage1_connector.safetensors  the stage-1 connector, copied when stage 2 did not train it (ln_simple)

Loading never guesses from folder names: manifest.json says what to rebuild and what to apply.
"""
