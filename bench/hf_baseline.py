"""What the plain transformers + PEFT baseline does, for the benchmarks that put llava-ln next to it.

The baseline itself is bench/baseline/hf_peft_baseline.py, the team's script kept byte for byte so that
its numbers stay comparable (bench/baseline/README.md). It is run as it is, never imported (it runs on
import); these are the few facts about it that the other benchmarks need.
"""
import os

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baseline", "hf_peft_baseline.py")

# The tune modes the baseline implements (its `select`), in the order it runs them by default.
MODES = ("ln_simple", "connector", "ln", "lora", "full")


def trains(name: str, mode: str) -> bool:
    """Whether the baseline trains the parameter called `name` (a LlavaForConditionalGeneration name) in `mode`."""
    llm, connector, head = ".language_model." in name, "multi_modal_projector" in name, name.startswith("lm_head")
    norm = llm and (".input_layernorm." in name or ".post_attention_layernorm." in name
                    or name.endswith("language_model.norm.weight"))
    return {"full": llm or connector or head, "ln": norm or connector or "embed_tokens" in name or head,
            "ln_simple": norm, "connector": connector, "lora": connector}[mode]
