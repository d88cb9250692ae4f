"""POPE-format evaluation set: random / popular / adversarial object-existence questions.

Built the way POPE builds its COCO splits: each image contributes 3 ground-truth objects
("yes") and 3 absent objects ("no"); the splits share images and positive questions and
differ only in how negatives are chosen: uniformly at random, the most frequent
categories over the set, or the categories that co-occur most with the image's objects.
Label files are JSON lines `{"question_id", "image", "text", "label"}`, one per split.
"""
from collections import Counter

import numpy as np

from llava_ln.toy.prompts import short_answer_prompt
from llava_ln.toy.world import CATEGORIES, Scene

SPLITS = ("random", "popular", "adversarial")
OBJECTS_PER_IMAGE = 3


def pope_question(category: str) -> str:
    return f"Is there a {category} in the image?"


def _ranked(counts: Counter) -> list[str]:
    # Highest count first; ties broken by the fixed category order so the result is stable.
    return sorted(CATEGORIES, key=lambda c: (-counts.get(c, 0), CATEGORIES.index(c)))


def negatives(split: str, present: set, positives: list[str], popularity: list[str], cooccurrence: dict,
              rng: np.random.Generator) -> list[str]:
    absent = [c for c in CATEGORIES if c not in present]
    if split == "random":
        return [absent[i] for i in rng.choice(len(absent), size=OBJECTS_PER_IMAGE, replace=False)]
    if split == "popular":
        ranking = popularity
    else:
        scores = Counter()
        for category in positives:
            scores.update(cooccurrence[category])
        ranking = _ranked(scores)
    return [c for c in ranking if c not in present][:OBJECTS_PER_IMAGE]


def pope_files(scenes: list[Scene], file_names: list[str], rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """({split: label rows}, LLaVA question jsonl rows with a `category` field naming the split)."""
    image_categories = [set(s.categories()) for s in scenes]
    popularity = _ranked(Counter(c for cats in image_categories for c in cats))
    cooccurrence = {c: Counter() for c in CATEGORIES}
    for cats in image_categories:
        for a in cats:
            cooccurrence[a].update(b for b in cats if b != a)

    chosen_positives = []
    for scene in scenes:
        present = scene.categories()
        if len(present) < OBJECTS_PER_IMAGE:
            raise ValueError("POPE images need at least 3 distinct object categories")
        chosen_positives.append([present[i] for i in rng.choice(len(present), OBJECTS_PER_IMAGE, replace=False)])

    labels, llava_rows = {}, []
    for split in SPLITS:
        rows = []
        for name, present, positives in zip(file_names, image_categories, chosen_positives):
            negs = negatives(split, present, positives, popularity, cooccurrence, rng)
            for positive, negative in zip(positives, negs):  # alternate yes / no within an image
                for category, label in ((positive, "yes"), (negative, "no")):
                    rows.append({"question_id": len(rows) + 1, "image": name, "text": pope_question(category),
                                 "label": label})
        labels[split] = rows
        for row in rows:
            llava_rows.append({"question_id": len(llava_rows) + 1, "image": row["image"],
                               "text": short_answer_prompt(row["text"]), "category": split})
    return labels, llava_rows
