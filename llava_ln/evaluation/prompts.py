"""The instructions LLaVA-1.5 adds to benchmark questions at evaluation time.

VQAv2, MME and POPE questions get the short-answer suffix on a new line (LLaVA's question
files already carry it; the official files do not, so it is added only when missing).
Captioning has no question: the prompt is a one-sentence caption request, as LLaVA-style
harnesses use for COCO and Flickr30k.
"""
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."


def with_suffix(question: str, suffix: str) -> str:
    """question + newline + suffix; unchanged when the suffix is empty or already ends the question."""
    question = question.strip()
    if not suffix or question.endswith(suffix):
        return question
    return f"{question}\n{suffix}"


def without_suffix(prompt: str, suffix: str) -> str:
    """The question as the benchmark wrote it (what MME's result files hold), suffix removed."""
    if suffix and prompt.endswith(suffix):
        return prompt[: -len(suffix)].rstrip()
    return prompt
