"""Stage-2 instruction data in the three LLaVA-Instruct types: conversation, detail, reasoning.

Turn builders return plain (question, answer) pairs without the image placeholder; the
same builders produce the text-only conversations of the LLM's pretraining corpus
(`textcorpus.py`), where a written description stands in for the image. Conversations
mix LLaVA-1.5's short-answer prompts with free-form answers, as the LLaVA-1.5 mix does.
"""
import numpy as np

from llava_ln.toy.language import detailed_description
from llava_ln.toy.prompts import DETAIL_PROMPTS, short_answer_prompt, yes_no_question
from llava_ln.toy.questions import PERCEPTION, QA, REASONING, q_exists, sample_distinct_qas
from llava_ln.toy.world import Scene

IMAGE_PLACEHOLDER = "<image>"
INSTRUCT_TYPES = ("conversation", "detail", "reasoning")


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def phrase_turn(qa: QA, rng: np.random.Generator, short_share: float = 0.5) -> tuple[str, str]:
    """One QA as a (question, answer) turn: short-answer prompt, MME-style yes/no, or free form."""
    roll = rng.random()
    if roll < short_share:
        return short_answer_prompt(qa.question), qa.answer
    if qa.answer_type == "yes/no" and roll < short_share + 0.15:
        return yes_no_question(qa.question), qa.answer.capitalize()
    return qa.question, qa.long_answer


OTHER_PERCEPTION = tuple(kind for kind in PERCEPTION if kind != "exists")


def conversation_turns(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Mostly short-answer turns, as in LLaVA-1.5's VQA-heavy mix. Every image gets two objects
    that are there and two that are not: binding colour to shape, which POPE and MME measure, is
    what the tiny models learn last, and the contrast within one image teaches it fastest."""
    qas, asked = [], set()
    for present in (True, False, True, False):
        for _ in range(10):  # a different object each time, when the scene has enough
            qa = q_exists(scene, rng, present=present)
            if qa.question.removesuffix(" in the image?").removesuffix("?") not in asked:
                break
        asked.add(qa.question.removesuffix(" in the image?").removesuffix("?"))
        qas.append(qa)
    qas += sample_distinct_qas(scene, rng, OTHER_PERCEPTION, int(rng.integers(2, 4)))
    return [phrase_turn(qas[i], rng, short_share=0.9) for i in rng.permutation(len(qas))]


def detail_turns(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    return [(_pick(rng, DETAIL_PROMPTS), detailed_description(scene, rng))]


def reasoning_turns(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    qas = sample_distinct_qas(scene, rng, REASONING, int(rng.integers(1, 3)))
    return [phrase_turn(qa, rng, short_share=0.25) for qa in qas]


TURN_BUILDERS = {"conversation": conversation_turns, "detail": detail_turns, "reasoning": reasoning_turns}


def with_image(question: str, rng: np.random.Generator) -> str:
    """Attach the placeholder before (usually) or after the first question, as LLaVA data does."""
    if rng.random() < 0.8:
        return f"{IMAGE_PLACEHOLDER}\n{question}"
    return f"{question}\n{IMAGE_PLACEHOLDER}"


def llava_record(record_id: str, image: str, turns: list[tuple[str, str]], rng: np.random.Generator) -> dict:
    conversations = []
    for index, (question, answer) in enumerate(turns):
        human = with_image(question, rng) if index == 0 else question
        conversations.append({"from": "human", "value": human})
        conversations.append({"from": "gpt", "value": answer})
    return {"id": record_id, "image": image, "conversations": conversations}


def instruct_records(kind: str, scenes: list[Scene], image_names: list[str], rng: np.random.Generator) -> list[dict]:
    """One record per image of the given instruction type."""
    builder = TURN_BUILDERS[kind]
    return [
        llava_record(f"toy_{kind}_{index:06d}", name, builder(scene, rng), rng)
        for index, (scene, name) in enumerate(zip(scenes, image_names))
    ]
