"""MME-format evaluation set: four perception subtasks of yes/no question pairs.

Like MME's existence / count / position / color subtasks, every image carries exactly two
questions ending in "Please answer yes or no.", one whose answer is Yes and one whose
answer is No, on consecutive lines. Scenes are drawn until they support the subtask (for
example two uniquely named objects in different halves for "position").
"""
import numpy as np

from llava_ln.toy.language import number_word, plural
from llava_ln.toy.prompts import short_answer_prompt, yes_no_question
from llava_ln.toy.questions import absent_category, unique_categories
from llava_ln.toy.scenes import sample_scene
from llava_ln.toy.world import COLOR_NAMES, Scene

SUBTASKS = ("existence", "count", "position", "color")


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _existence(scene, rng):
    present = _pick(rng, scene.categories())
    absent = absent_category(scene, rng, hard=True)
    return f"Is there a {present} in this image?", f"Is there a {absent} in this image?"


def _count_question(n: int, noun: str) -> str:
    if n == 1:
        return f"Is there only one {noun} in this image?"
    return f"Are there {number_word(n)} {plural(noun)} in this image?"


def _count(scene, rng):
    options = [(len(scene.objects), "shape")] + [(scene.count(shape=s), s) for s in scene.shapes()]
    n, noun = _pick(rng, options)
    wrong = n + 1 if n == 1 or rng.random() < 0.5 else n - 1
    return _count_question(n, noun), _count_question(wrong, noun)


def _position(scene, rng):
    unique = unique_categories(scene)
    pairs = []
    for a in unique:
        for b in unique:
            obj_a, obj_b = scene.with_category(a)[0], scene.with_category(b)[0]
            if a != b and obj_a.side != obj_b.side:
                pairs.append((a, b, "on the left side of" if obj_a.side == "left" else "on the right side of"))
            if a != b and obj_a.quadrant.split()[0] != obj_b.quadrant.split()[0]:
                pairs.append((a, b, "above" if obj_a.quadrant.startswith("top") else "below"))
    if not pairs:
        return None
    a, b, truth = _pick(rng, pairs)
    opposite = {"on the left side of": "on the right side of", "on the right side of": "on the left side of",
                "above": "below", "below": "above"}[truth]
    return f"Is the {a} {truth} the {b}?", f"Is the {a} {opposite} the {b}?"


def _color(scene, rng):
    shapes = [s for s in scene.shapes() if scene.count(shape=s) == 1]
    if not shapes:
        return None
    shape = _pick(rng, shapes)
    color = next(o.color for o in scene.objects if o.shape == shape)
    wrong = _pick(rng, [c for c in COLOR_NAMES if c != color])
    return f"Is the {shape} in this image {color}?", f"Is the {shape} in this image {wrong}?"


BUILDERS = {"existence": _existence, "count": _count, "position": _position, "color": _color}


def mme_items(subtask: str, count: int, rng: np.random.Generator) -> list[tuple[str, Scene, list[tuple[str, str]]]]:
    """`count` (image name, scene, [(question, "Yes"), (question, "No")]) for one subtask."""
    items = []
    min_objects = 2 if subtask == "position" else 1
    while len(items) < count:
        scene = sample_scene(rng, min_objects=min_objects)
        pair = BUILDERS[subtask](scene, rng)
        if pair is None:
            continue
        yes, no = (yes_no_question(q) for q in pair)
        items.append((f"{len(items) + 1:012d}.jpg", scene, [(yes, "Yes"), (no, "No")]))
    return items


def llava_mme_row(subtask: str, image_name: str, question: str) -> dict:
    path = f"{subtask}/{image_name}"
    return {"question_id": path, "image": path, "text": short_answer_prompt(question), "category": subtask}
