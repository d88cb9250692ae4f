"""English for the toy world: noun phrases, captions, descriptions, and the instruction prompts.

Captions are brief and positionless (like web alt-text captions used for LLaVA's stage 1);
detailed descriptions name every object with its place (like LLaVA-Instruct's "detail"
answers). Phrasings vary with the Generator passed in, so five captions of one image read
like five annotators.

The prompts are our own wording in LLaVA's styles: brief prompts go with stage-1 captions,
detail prompts with detailed descriptions; the answer-format suffixes are the ones LLaVA-1.5
uses at evaluation time, so the toy LLM learns them during its text pretraining.
"""
import numpy as np

from llava_ln.toy.world import NUMBER_WORDS, QUADRANTS, Scene, choose

# ------------------------------------------------------------------------------ prompts
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
YES_NO_SUFFIX = "Please answer yes or no."

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

def short_answer_prompt(question: str) -> str:
    """LLaVA-1.5's VQA prompt: the question, a newline, then the single-word instruction."""
    return f"{question}\n{SHORT_ANSWER_SUFFIX}"


def yes_no_question(question: str) -> str:
    """MME's question form: the question followed by 'Please answer yes or no.'."""
    return f"{question} {YES_NO_SUFFIX}"


# --------------------------------------------------------- noun phrases, captions, descriptions
def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def plural(noun: str) -> str:
    return noun + "es" if noun.endswith("s") or noun.endswith("x") else noun + "s"


def noun_phrase(category: str, n: int) -> str:
    """'a red circle', 'two red circles'."""
    if n == 1:
        return f"a {category}"
    words = category.split()
    return " ".join([number_word(n)] + words[:-1] + [plural(words[-1])])


def join_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def object_groups(scene: Scene, objects=None) -> list[str]:
    """One noun phrase per category, in order of first appearance."""
    objects = scene.objects if objects is None else objects
    order, counts = [], {}
    for obj in objects:
        if obj.category not in counts:
            order.append(obj.category)
            counts[obj.category] = 0
        counts[obj.category] += 1
    return [noun_phrase(cat, counts[cat]) for cat in order]


def there_is(phrases: list[str]) -> str:
    """'there is a red circle' / 'there are two red circles and a blue square'."""
    first = phrases[0]
    singular = len(phrases) == 1 and first.startswith("a ")
    return ("there is " if singular else "there are ") + join_list(phrases)


def shapes_count_phrase(n: int) -> str:
    return "one shape" if n == 1 else f"{number_word(n)} shapes"


def _caption_core(scene: Scene, rng: np.random.Generator) -> str:
    groups = object_groups(scene)
    order = list(rng.permutation(len(groups))) if rng.random() < 0.3 else list(range(len(groups)))
    listed = join_list([groups[i] for i in order])
    if rng.random() < 0.12 and len(scene.colors()) > 1:
        # A vague caption, as real annotators sometimes write.
        return f"{join_list(scene.colors())} shapes on a dark background"
    templates = (
        "{list}",
        "{list} on a dark background",
        "an image of {list}",
        "a picture with {list}",
        "{count}: {list}",
        "{list} on a black background",
    )
    template = choose(rng, templates)
    return template.format(list=listed, count=shapes_count_phrase(len(scene.objects)))


def brief_caption(scene: Scene, rng: np.random.Generator) -> str:
    return capitalize(_caption_core(scene, rng)) + "."


def reference_captions(scene: Scene, rng: np.random.Generator, count: int = 5) -> list[str]:
    """`count` differently phrased captions of one image (for COCO-style references)."""
    return [brief_caption(scene, rng) for _ in range(count)]


def quadrant_sentences(scene: Scene, rng: np.random.Generator) -> list[str]:
    sentences = []
    for quadrant in QUADRANTS:
        objects = [o for o in scene.objects if o.quadrant == quadrant]
        if not objects:
            continue
        phrases = object_groups(scene, objects)
        if rng.random() < 0.5:
            sentences.append(f"In the {quadrant} {there_is(phrases)}.")
        else:
            verb = "is" if len(objects) == 1 else "are"
            sentences.append(f"{capitalize(join_list(phrases))} {verb} in the {quadrant}.")
    return sentences


def detailed_description(scene: Scene, rng: np.random.Generator) -> str:
    """Every object with its quadrant, plus a count of all shapes."""
    n = len(scene.objects)
    openings = (
        f"The image shows {shapes_count_phrase(n)} on a dark background.",
        f"There {'is' if n == 1 else 'are'} {shapes_count_phrase(n)} in this image.",
        f"This is a picture of {shapes_count_phrase(n)} on a plain dark background.",
    )
    parts = [choose(rng, openings)]
    parts.extend(quadrant_sentences(scene, rng))
    colors = scene.colors()
    if len(colors) == 1 and n > 1:
        parts.append(f"All of the shapes are {colors[0]}.")
    elif len(colors) > 1 and rng.random() < 0.5:
        parts.append(f"The colors in the image are {join_list(colors)}.")
    return " ".join(parts)


def object_list(scene: Scene) -> str:
    """Every object on its own, in reading order (as the image's patches run), with its quadrant.

    The LLM's pretraining uses this as the written stand-in for an image more often than the
    prose description: one "colour shape" pair per object makes matching a question's object
    against the scene a copy-like lookup, which a tiny model learns quickly, and it mirrors
    the one-token-per-cell layout the image features will have.
    """
    items = [f"a {obj.category} in the {obj.quadrant}" for obj in scene.objects]
    return f"The image shows {join_list(items)}."
