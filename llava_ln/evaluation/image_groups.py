"""Questions grouped by image: the shared-prefix path's unit of work, its split across ranks, its batches.

An encoded prompt (generation.PromptEncoder) is the template's text before the image, the image's
placeholder tokens, then the newline, the question, the answer-format suffix and the assistant
header. The question comes after the image, so everything up to the last placeholder is the same
for every question about one image: that is the image prefix. Questions are grouped by image and
by those exact prefix tokens (one template gives one prefix per image, but grouping on the tokens
keeps any other prompt correct); a group's prefix is filled once and its key/value cache answers
all of the group's questions.

Batches take a group's questions together and several groups per batch, so a benchmark with one
or two questions per image still fills whole batches; a batch never mixes prefix lengths (every
row of a batch's cache then has the same length, and positions need no shifting).

An image is the file, not its name: two paths to one file (a link, a path through a linked folder)
are one image, filled once and kept on one rank.

Ranks split the work by image (greedy: each image, in order of first appearance, goes to the rank
with the fewest questions so far), so an image's questions and its one prefix fill stay on one rank.
"""
import os
from dataclasses import dataclass, field


def prefix_length(prompt: list, image_token_id: int) -> int | None:
    """How many leading tokens of prompt are its image prefix (through the last image placeholder), or None
    when the prompt cannot be answered from a shared prefix: it has no image, or nothing follows the image
    (LLaVA's "plain" template drops the question). generate() needs at least one token after the cache,
    and a placeholder there would need the image's pixels again."""
    last = max((i for i, token in enumerate(prompt) if token == image_token_id), default=-1)
    if last < 0 or last + 1 >= len(prompt):
        return None
    return last + 1


def shareable(prompts: list, image_token_id: int) -> bool:
    """Whether every prompt has an image prefix with question tokens after it."""
    return all(prefix_length(prompt, image_token_id) is not None for prompt in prompts)


@dataclass
class ImageGroup:
    """The questions (indices into the caller's list, in its order) that share one image and one prefix."""

    image: str
    prefix: tuple
    members: list = field(default_factory=list)


def image_files(items: list) -> list:
    """Each item's image file, links resolved (one lookup per distinct path)."""
    resolved = {}
    for item in items:
        if item.image not in resolved:
            resolved[item.image] = os.path.realpath(item.image)
    return [resolved[item.image] for item in items]


def group_by_image(items: list, prompts: list, image_token_id: int) -> list[ImageGroup]:
    """items[i] (an EvalItem) asks prompts[i], every prompt shareable(); groups in order of their first question."""
    groups = {}
    for index, (item, file, prompt) in enumerate(zip(items, image_files(items), prompts)):
        prefix = tuple(prompt[:prefix_length(prompt, image_token_id)])
        groups.setdefault((file, prefix), ImageGroup(item.image, prefix)).members.append(index)
    return list(groups.values())


def share_by_image(items: list, rank: int, world_size: int) -> list:
    """This rank's items, in their order: all questions about an image go to one rank."""
    if world_size == 1:
        return list(items)
    files = image_files(items)
    counts = {}
    for file in files:
        counts[file] = counts.get(file, 0) + 1
    load = [0] * world_size
    owner = {}
    for file, count in counts.items():  # dicts keep first-appearance order
        chosen = min(range(world_size), key=lambda r: (load[r], r))
        owner[file] = chosen
        load[chosen] += count
    return [item for item, file in zip(items, files) if owner[file] == rank]


@dataclass
class PlannedBatch:
    """One generate call: rows[i] is a question index, row_groups[i] its group's position in the group list;
    release: the groups no later batch needs (their prefixes can go once the batch is answered)."""

    rows: list
    row_groups: list
    release: list


def plan_batches(groups: list[ImageGroup], batch_size: int) -> list[PlannedBatch]:
    """Every question of every group once, a group's questions consecutive, at most batch_size per batch."""
    order = sorted(range(len(groups)), key=lambda g: len(groups[g].prefix))  # stable: first-appearance order
    batches = []
    for g in order:
        for member in groups[g].members:
            current = batches[-1] if batches else None
            if (current is None or len(current.rows) == batch_size
                    or len(groups[current.row_groups[0]].prefix) != len(groups[g].prefix)):
                current = PlannedBatch([], [], [])
                batches.append(current)
            current.rows.append(member)
            current.row_groups.append(g)
    # A group's questions are consecutive, so only the next batch can still need its prefix.
    for number, batch in enumerate(batches):
        after = set(batches[number + 1].row_groups) if number + 1 < len(batches) else set()
        batch.release = [g for g in dict.fromkeys(batch.row_groups) if g not in after]
    return batches
