"""Model composition: LLM + vision tower + connector -> a native LlavaForConditionalGeneration."""
