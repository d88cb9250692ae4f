"""What the models train on: stage-1 caption records, stage-2 instruction records, and the
text-only corpus the toy LLM was pretrained on.

Stage-1 records look like LLaVA-558K's: one human turn holding a brief-caption instruction
and `<image>`, one gpt turn holding the caption (the "plain" template keeps only image +
caption). Stage-2 records come in the three LLaVA-Instruct types (conversation, detail,
reasoning); conversations mix LLaVA-1.5's short-answer prompts with free-form answers, as
the LLaVA-1.5 mix does.

Turn builders return plain (question, answer) pairs without the image placeholder, so the
same builders also write the LLM's text corpus. Each corpus document is about one scene the
model never sees: a written description (usually the object list, sometimes the prose
description) stands where the image will later be. Documents are Vicuna-v1 conversations
(short-answer, yes/no and free-form questions, detailed descriptions, reasoning, captions)
and "plain" description-then-caption pairs. The LLM thus learns the world's vocabulary and
every answer format, while image features stay new to it until stage 2.
"""
import numpy as np

from llava_ln.toy.language import (
    BRIEF_PROMPTS,
    DETAIL_PROMPTS,
    brief_caption,
    detailed_description,
    object_list,
    short_answer_prompt,
    yes_no_question,
)
from llava_ln.toy.questions import DRILL_KINDS, PERCEPTION, QA, REASONING, q_exists, sample_distinct_qas
from llava_ln.toy.world import Scene, choose, sample_scene

# ------------------------------------------------------ LLaVA-format records, stage-1 captions
IMAGE_PLACEHOLDER = "<image>"


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


def pretrain_records(scenes: list[Scene], image_names: list[str], rng: np.random.Generator) -> list[dict]:
    """Stage 1: one brief-caption record per image."""
    records = []
    for index, (scene, name) in enumerate(zip(scenes, image_names)):
        prompt = choose(rng, BRIEF_PROMPTS)
        records.append(llava_record(f"toy_pretrain_{index:06d}", name, [(prompt, brief_caption(scene, rng))], rng))
    return records


# ------------------------------------------------------------------ stage-2 instruction data
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
    return [(choose(rng, DETAIL_PROMPTS), detailed_description(scene, rng))]


def reasoning_turns(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    qas = sample_distinct_qas(scene, rng, REASONING, int(rng.integers(1, 3)))
    return [phrase_turn(qa, rng, short_share=0.25) for qa in qas]


TURN_BUILDERS = {"conversation": conversation_turns, "detail": detail_turns, "reasoning": reasoning_turns}


def instruct_records(kind: str, scenes: list[Scene], image_names: list[str], rng: np.random.Generator) -> list[dict]:
    """One record per image of the given instruction type."""
    builder = TURN_BUILDERS[kind]
    return [
        llava_record(f"toy_{kind}_{index:06d}", name, builder(scene, rng), rng)
        for index, (scene, name) in enumerate(zip(scenes, image_names))
    ]


# --------------------------------------------------------------------- the LLM's text corpus
EOS = "</s>"
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

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
    elif kind == "caption":
        turns = [(choose(rng, BRIEF_PROMPTS), brief_caption(scene, rng))]
    else:
        turns = TURN_BUILDERS[kind](scene, rng)
    return vicuna_v1(_with_description(turns, description, rng))


def text_corpus(seed: int, count: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [text_document(rng) for _ in range(count)]
