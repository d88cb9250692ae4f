"""Facts every layer shares: special tokens, label masking, parameter-name prefixes, dtype names.

Each lives here once so that data, training, checkpoints and export cannot disagree.
"""
import torch

# The placeholder a conversation holds where an image goes; one vocabulary token (not LLaVA's -200),
# because transformers' LlavaForConditionalGeneration and vLLM expect an in-vocabulary id.
IMAGE_TOKEN = "<image>"

# Label value for positions that carry no loss (PyTorch cross-entropy's default ignore_index).
IGNORE_INDEX = -100

# Where the connector sits in a LlavaForConditionalGeneration's parameter names.
CONNECTOR_PREFIX = "model.multi_modal_projector."

# What PEFT puts in front of the wrapped model's parameter names (PeftModel.base_model.model).
PEFT_PREFIX = "base_model.model."

# --dtype names accepted by merge, export and eval.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def strip_peft_prefix(name: str) -> str:
    """A parameter name relative to the Llava model, whether or not PEFT's wrapper prefix is on it."""
    return name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
