"""Instruction phrasings used by the toy datasets (our own wording, in LLaVA's styles).

Brief prompts go with stage-1 captions, detail prompts with detailed descriptions; the
answer-format suffixes are the ones LLaVA-1.5 uses at evaluation time, so the toy LLM
learns them during its text pretraining.
"""
from llava_ln.toy.language import SHORT_ANSWER_SUFFIX, YES_NO_SUFFIX

BRIEF_PROMPTS = (
    "Give a brief description of the image.",
    "Write a short caption for this picture.",
    "Summarize the image in a few words.",
    "What is shown in this image? Answer briefly.",
    "Provide a one-sentence caption for the provided image.",
    "Caption this image.",
)

DETAIL_PROMPTS = (
    "Describe the image in detail.",
    "Give a detailed description of this picture.",
    "Explain what you see in the image, including where each shape is.",
    "What does this image show? Describe every shape and its position.",
    "Walk me through the contents of this image.",
)

# The caption prompt LLaVA-style evaluation harnesses use for COCO and Flickr30k.
CAPTION_EVAL_PROMPT = "Provide a one-sentence caption for the provided image."

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def short_answer_prompt(question: str) -> str:
    """LLaVA-1.5's VQA prompt: the question, a newline, then the single-word instruction."""
    return f"{question}\n{SHORT_ANSWER_SUFFIX}"


def yes_no_question(question: str) -> str:
    """MME's question form: the question followed by 'Please answer yes or no.'."""
    return f"{question} {YES_NO_SUFFIX}"
