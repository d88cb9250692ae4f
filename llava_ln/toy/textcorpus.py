"""The text-only corpus the toy LLM is pretrained on.

Each document is about one scene that the model never sees: a written description (usually
the object list, sometimes the prose description) stands where the image will later be. Documents are Vicuna-v1 conversations (short-answer,
yes/no and free-form questions, detailed descriptions, reasoning, captions) and "plain"
description-then-caption pairs. The LLM thus learns the world's vocabulary and every
answer format, while image features stay new to it until stage 2.
"""
import numpy as np

from llava_ln.toy.instruct import conversation_turns, detail_turns, phrase_turn, reasoning_turns
from llava_ln.toy.language import brief_caption, detailed_description, object_list
from llava_ln.toy.prompts import BRIEF_PROMPTS, VICUNA_V1_SYSTEM
from llava_ln.toy.questions import DRILL_KINDS, sample_distinct_qas
from llava_ln.toy.scenes import sample_scene

EOS = "</s>"

DOCUMENT_KINDS = ("drill", "conversation", "detail", "reasoning", "caption", "plain")
DOCUMENT_WEIGHTS = (0.5, 0.15, 0.05, 0.15, 0.05, 0.1)


def vicuna_v1(turns: list[tuple[str, str]]) -> str:
    """Render turns with LLaVA's vicuna_v1 separators (' ' after user turns, '</s>' after replies)."""
    text = VICUNA_V1_SYSTEM + " "
    for question, answer in turns:
        text += f"USER: {question} ASSISTANT: {answer}{EOS}"
    return text


def _with_description(turns, description: str, rng: np.random.Generator):
    first_q, first_a = turns[0]
    first = f"{description}\n{first_q}" if rng.random() < 0.8 else f"{first_q}\n{description}"
    return [(first, first_a)] + list(turns[1:])


def text_document(rng: np.random.Generator) -> str:
    """One document about a freshly sampled scene (without the leading BOS)."""
    scene = sample_scene(rng)
    kind = DOCUMENT_KINDS[int(rng.choice(len(DOCUMENT_KINDS), p=np.asarray(DOCUMENT_WEIGHTS)))]
    description = object_list(scene) if rng.random() < 0.7 else detailed_description(scene, rng)
    if kind == "plain":
        # Stage 1's "plain" layout: the image (here its description), the caption, a newline.
        return f"{description}{brief_caption(scene, rng)}\n"
    if kind == "drill":
        # Many short answers about one description: dense practice of every answer format.
        qas = sample_distinct_qas(scene, rng, DRILL_KINDS, int(rng.integers(4, 9)))
        turns = [phrase_turn(qa, rng, short_share=0.8) for qa in qas]
    elif kind == "conversation":
        turns = conversation_turns(scene, rng)
    elif kind == "detail":
        turns = detail_turns(scene, rng)
    elif kind == "reasoning":
        turns = reasoning_turns(scene, rng)
    else:
        turns = [(BRIEF_PROMPTS[int(rng.integers(len(BRIEF_PROMPTS)))], brief_caption(scene, rng))]
    return vicuna_v1(_with_description(turns, description, rng))


def text_corpus(seed: int, count: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [text_document(rng) for _ in range(count)]
