"""Questions about a scene with their answers: the single source of truth for every QA set.

Each generator returns a QA (or None when the scene does not support that question, e.g.
"what color is the circle?" with two circles). The same generators feed the LLM's text
pretraining, the stage-2 instruction data and the VQA/MME/POPE evaluation sets, so answers
are consistent everywhere: short answers follow VQA conventions (lower case, digits for
numbers), long answers are full sentences.
"""
from dataclasses import dataclass

import numpy as np

from llava_ln.toy.language import capitalize, join_list, number_word, plural
from llava_ln.toy.world import CATEGORIES, COLOR_NAMES, COLOR_WEIGHTS, SHAPE_WEIGHTS, SHAPES, Scene, choose


@dataclass(frozen=True)
class QA:
    question: str  # without any answer-format instruction
    answer: str  # short answer, VQA style
    long_answer: str  # a full sentence
    answer_type: str  # "yes/no" | "number" | "other" (VQAv2's answer types)
    question_type: str  # VQAv2-style question prefix type
    kind: str  # which generator made it


# How often each category appears (palettes only reshuffle which ones appear together).
CATEGORY_PRIOR = {f"{color} {shape}": cw * sw for color, cw in zip(COLOR_NAMES, COLOR_WEIGHTS)
                  for shape, sw in zip(SHAPES, SHAPE_WEIGHTS)}


def count_phrase(n: int, noun: str) -> str:
    if n == 0:
        return f"no {plural(noun)}"
    return f"one {noun}" if n == 1 else f"{number_word(n)} {plural(noun)}"


def _there(n: int, noun: str) -> str:
    return f"There {'is' if n == 1 else 'are'} {count_phrase(n, noun)}"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def absent_category(scene: Scene, rng: np.random.Generator, hard: bool) -> str:
    """A category not in the scene, drawn as often as categories appear in scenes.

    Drawing absent objects uniformly would make rare categories the usual "no" answers and
    frequent ones the usual "yes" answers, a shortcut that ignores the image (and exactly what
    POPE's popular split punishes). `hard` prefers one sharing a colour or shape with the scene.
    """
    present = set(scene.categories())
    absent = [c for c in CATEGORIES if c not in present]
    if hard:
        near = [c for c in absent if c.split()[0] in scene.colors() or c.split()[1] in scene.shapes()]
        absent = near or absent
    weights = np.asarray([CATEGORY_PRIOR[c] for c in absent])
    return absent[int(rng.choice(len(absent), p=weights / weights.sum()))]


def unique_categories(scene: Scene) -> list[str]:
    return [c for c in scene.categories() if len(scene.with_category(c)) == 1]


# ---------------------------------------------------------------- perception questions
def q_count_all(scene, rng):
    n = len(scene.objects)
    question = choose(rng, ("How many shapes are there?", "How many shapes are in the image?",
                            "How many objects are in the picture?"))
    return QA(question, str(n), f"{_there(n, 'shape')} in the image.", "number", "how many", "count_all")


def q_count_color(scene, rng):
    color = choose(rng, scene.colors()) if rng.random() < 0.85 else choose(rng, COLOR_NAMES)
    n = scene.count(color=color)
    return QA(f"How many {color} shapes are there?", str(n), f"{_there(n, color + ' shape')}.", "number",
              "how many", "count_color")


def q_count_shape(scene, rng):
    shape = choose(rng, scene.shapes()) if rng.random() < 0.85 else choose(rng, SHAPES)
    n = scene.count(shape=shape)
    return QA(f"How many {plural(shape)} are there?", str(n), f"{_there(n, shape)} in the image.", "number",
              "how many", "count_shape")


def q_count_category(scene, rng):
    category = choose(rng, scene.categories())
    n = len(scene.with_category(category))
    return QA(f"How many {plural(category)} are there?", str(n), f"{_there(n, category)}.", "number",
              "how many", "count_category")


def q_exists(scene, rng, present: bool | None = None):
    """present: ask about an object that is (True) or is not (False) in the scene; None: either."""
    if present is None:
        present = rng.random() < 0.5
    if present:
        category = choose(rng, scene.categories())
        objs = scene.with_category(category)
        where = f" in the {objs[0].quadrant}" if len(objs) == 1 else ""
        long = f"Yes, {('there is a ' + category + where) if len(objs) == 1 else _there(len(objs), category).lower()}."
    else:
        category = absent_category(scene, rng, hard=rng.random() < 0.5)
        long = f"No, there is no {category} in the image."
    question = choose(rng, (f"Is there a {category} in the image?", f"Is there a {category}?"))
    return QA(question, _yes_no(present), long, "yes/no", "is there a", "exists")


def lone_shape_and_color(scene, rng) -> tuple | None:
    """A shape that appears exactly once in the scene, and its colour (None when every shape repeats)."""
    shapes = [s for s in scene.shapes() if scene.count(shape=s) == 1]
    if not shapes:
        return None
    shape = choose(rng, shapes)
    return shape, next(o.color for o in scene.objects if o.shape == shape)


def q_color_of(scene, rng):
    found = lone_shape_and_color(scene, rng)
    if found is None:
        return None
    shape, color = found
    return QA(f"What color is the {shape}?", color, f"The {shape} is {color}.", "other", "what color is the",
              "color_of")


def q_shape_of(scene, rng):
    colors = [c for c in scene.colors() if scene.count(color=c) == 1]
    if not colors:
        return None
    color = choose(rng, colors)
    shape = next(o.shape for o in scene.objects if o.color == color)
    return QA(f"What shape is the {color} object?", shape, f"The {color} object is a {shape}.", "other",
              "what shape is the", "shape_of")


def q_where(scene, rng):
    unique = unique_categories(scene)
    if not unique:
        return None
    category = choose(rng, unique)
    quadrant = scene.with_category(category)[0].quadrant
    return QA(f"Where is the {category}?", quadrant, f"The {category} is in the {quadrant} of the image.", "other",
              "where is the", "where")


def q_side(scene, rng):
    unique = unique_categories(scene)
    if not unique:
        return None
    category = choose(rng, unique)
    asked = choose(rng, ("left", "right"))
    actual = scene.with_category(category)[0].side
    long = (f"Yes, the {category} is on the {actual} side." if asked == actual
            else f"No, the {category} is on the {actual} side.")
    return QA(f"Is the {category} on the {asked} side of the image?", _yes_no(asked == actual), long, "yes/no",
              "is the", "side")


def q_relation(scene, rng):
    unique = unique_categories(scene)
    pairs = [(a, b) for a in unique for b in unique if a != b]
    if not pairs:
        return None
    a, b = choose(rng, pairs)
    obj_a, obj_b = scene.with_category(a)[0], scene.with_category(b)[0]
    # Only pairs in different halves: the answer then follows from the objects' quadrants,
    # which every description states (finer positions are never written down).
    differ_sides = obj_a.side != obj_b.side
    differ_halves = obj_a.quadrant.split()[0] != obj_b.quadrant.split()[0]
    if differ_sides and (not differ_halves or rng.random() < 0.5):
        relation, truth = "to the left of", obj_a.side == "left"
        other = "to the right of"
    elif differ_halves:
        relation, truth = "above", obj_a.quadrant.startswith("top")
        other = "below"
    else:
        return None
    long = (f"Yes, the {a} is {relation} the {b}." if truth else f"No, the {a} is {other} the {b}.")
    return QA(f"Is the {a} {relation} the {b}?", _yes_no(truth), long, "yes/no", "is the", "relation")


# ----------------------------------------------------------------- reasoning questions
def q_more_than(scene, rng):
    by_color = rng.random() < 0.5
    universe = COLOR_NAMES if by_color else SHAPES
    counts = {x: scene.count(color=x) if by_color else scene.count(shape=x) for x in universe}
    # Two kinds with different counts, at least one present, in random order: yes and no equally likely.
    pairs = [(a, b) for a in universe for b in universe if counts[a] != counts[b] and counts[a] + counts[b] > 0]
    if not pairs:
        return None
    a, b = choose(rng, pairs)
    noun = (lambda x: x + " shape") if by_color else (lambda x: x)
    na, nb = counts[a], counts[b]
    word_a, word_b = (plural(noun(x)) for x in (a, b))
    long = (f"{'Yes' if na > nb else 'No'}. There {'is' if na == 1 else 'are'} {count_phrase(na, noun(a))} and "
            f"{count_phrase(nb, noun(b))}, so there are {'more' if na > nb else 'fewer'} {word_a} than {word_b}.")
    return QA(f"Are there more {word_a} than {word_b}?", _yes_no(na > nb), long, "yes/no", "are there", "more_than")


def q_most_common_color(scene, rng):
    counts = sorted(((scene.count(color=c), c) for c in scene.colors()), reverse=True)
    if len(counts) < 2 or counts[0][0] == counts[1][0]:
        return None
    best = counts[0][1]
    listing = join_list([count_phrase(n, c + " shape") for n, c in counts])
    return QA("Which color is the most common in the image?", best,
              f"{capitalize(best)} is the most common color: there are {listing}.", "other", "which", "most_common")


def q_removal(scene, rng):
    color = choose(rng, scene.colors())
    total, removed = len(scene.objects), scene.count(color=color)
    left = total - removed
    if total == 1:
        which = f"it is {color}"
    elif removed == total:
        which = f"all of them are {color}"
    else:
        which = f"{number_word(removed)} of them {'is' if removed == 1 else 'are'} {color}"
    long = f"{_there(total, 'shape')} and {which}, so {count_phrase(left, 'shape')} would be left."
    return QA(f"If all the {color} shapes were removed, how many shapes would be left?", str(left), long, "number",
              "if", "removal")


def q_same_color(scene, rng):
    if len(scene.objects) < 2:
        return None
    colors = scene.colors()
    same = len(colors) == 1
    long = f"Yes, all of the shapes are {colors[0]}." if same else f"No. The shapes are {join_list(colors)}."
    return QA("Do all the shapes have the same color?", _yes_no(same), long, "yes/no", "do", "same_color")


def q_busier_side(scene, rng):
    left = sum(1 for o in scene.objects if o.side == "left")
    right = len(scene.objects) - left
    if left == right:
        return None
    winner = "left" if left > right else "right"
    long = (f"The {winner} side has more shapes: there {'is' if left == 1 else 'are'} {count_phrase(left, 'shape')} "
            f"on the left and {count_phrase(right, 'shape')} on the right.")
    return QA("Which side of the image has more shapes, the left or the right?", winner, long, "other", "which",
              "busier_side")


def q_together(scene, rng):
    a, b = (SHAPES[int(i)] for i in rng.choice(len(SHAPES), size=2, replace=False))
    na, nb = scene.count(shape=a), scene.count(shape=b)
    if na + nb == 0:
        return None
    long = (f"There {'is' if na == 1 else 'are'} {count_phrase(na, a)} and {count_phrase(nb, b)}, "
            f"so there {'is' if na + nb == 1 else 'are'} {number_word(na + nb)} altogether.")
    return QA(f"How many {plural(a)} and {plural(b)} are there altogether?", str(na + nb), long, "number",
              "how many", "together")


PERCEPTION = {
    "count_all": q_count_all, "count_color": q_count_color, "count_shape": q_count_shape,
    "count_category": q_count_category, "exists": q_exists, "color_of": q_color_of, "shape_of": q_shape_of,
    "where": q_where, "side": q_side, "relation": q_relation,
}
REASONING = {
    "more_than": q_more_than, "most_common": q_most_common_color, "removal": q_removal,
    "same_color": q_same_color, "busier_side": q_busier_side, "together": q_together,
}
GENERATORS = {**PERCEPTION, **REASONING}

# Kinds drawn for short-answer drills (the LLM's text pretraining): existence, which needs
# colour and shape bound together, is the hardest skill for a tiny model, so it comes often.
DRILL_KINDS = tuple(PERCEPTION) + ("exists", "exists", "exists", "where", "more_than", "removal", "together")


def sample_qa(scene: Scene, rng: np.random.Generator, kinds) -> QA:
    """One question of a kind drawn uniformly from `kinds` that the scene supports."""
    kinds = list(kinds)
    for _ in range(50):
        qa = GENERATORS[choose(rng, kinds)](scene, rng)
        if qa is not None:
            return qa
    return q_count_all(scene, rng)  # every scene supports it


def sample_distinct_qas(scene: Scene, rng: np.random.Generator, kinds, count: int) -> list[QA]:
    """Up to `count` QAs with distinct questions (a question never repeats within one image)."""
    seen, result = set(), []
    for _ in range(count * 6):
        qa = sample_qa(scene, rng, kinds)
        if qa.question not in seen:
            seen.add(qa.question)
            result.append(qa)
            if len(result) == count:
                break
    return result
