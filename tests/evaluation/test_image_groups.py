"""Grouping questions by image, splitting images across ranks, and planning the shared-prefix batches."""
from llava_ln.evaluation.benchmarks.common import EvalItem
from llava_ln.evaluation.image_groups import group_by_image, plan_batches, prefix_length, share_by_image, shareable

IMAGE = 9


def items_about(images: list) -> list:
    return [EvalItem(key=str(number), image=image, prompt="q") for number, image in enumerate(images)]


def test_the_prefix_ends_after_the_last_image_token_and_a_prompt_without_text_after_its_image_has_none():
    assert prefix_length([1, 5, IMAGE, IMAGE, 3, 4], IMAGE) == 4
    assert prefix_length([1, 5, IMAGE, IMAGE, 3], IMAGE) == 4
    # Nothing after the image ("plain" template), or no image: the tokens after a prefix would need pixels.
    assert prefix_length([1, IMAGE, IMAGE], IMAGE) is None
    assert prefix_length([1, 5, 3], IMAGE) is None
    assert shareable([[1, IMAGE, 3], [2, IMAGE, 4, 4]], IMAGE)
    assert not shareable([[1, IMAGE, 3], [1, IMAGE]], IMAGE)


def test_groups_are_one_image_and_one_prefix_in_order_of_first_question():
    items = items_about(["a", "b", "a", "a", "b"])
    prompts = [[1, IMAGE, 7], [1, IMAGE, 8], [1, IMAGE, 8, 8], [2, IMAGE, 7], [1, IMAGE, 5]]
    groups = group_by_image(items, prompts, IMAGE)
    assert [(g.image, g.prefix, g.members) for g in groups] == [
        ("a", (1, IMAGE), [0, 2]), ("b", (1, IMAGE), [1, 4]), ("a", (2, IMAGE), [3])]


def test_two_paths_to_one_file_are_one_image_for_groups_and_ranks(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"y")
    (tmp_path / "link.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "linked").symlink_to(tmp_path, target_is_directory=True)
    items = items_about([str(tmp_path / "a.png"), str(tmp_path / "b.png"), str(tmp_path / "link.png"),
                         str(tmp_path / "linked" / "a.png")])
    groups = group_by_image(items, [[1, IMAGE, 7]] * 4, IMAGE)
    assert [(g.image, g.members) for g in groups] == [(items[0].image, [0, 2, 3]), (items[1].image, [1])]
    assert [item.key for item in share_by_image(items, 0, 2)] == ["0", "2", "3"]


def test_ranks_get_whole_images_all_questions_once_and_balanced():
    images = ["p"] * 6 + ["q"] * 2 + ["r"] * 3 + ["s"] * 1 + ["p"] * 2 + ["t"] * 4
    items = items_about(images)
    shares = [share_by_image(items, rank, 3) for rank in range(3)]
    assert sorted(item.key for share in shares for item in share) == sorted(item.key for item in items)
    owners = [{item.image for item in share} for share in shares]
    assert all(not owners[a] & owners[b] for a in range(3) for b in range(a + 1, 3))
    for share in shares:  # in the items' order
        assert [int(item.key) for item in share] == sorted(int(item.key) for item in share)
    sizes = sorted(map(len, shares))
    assert sizes[-1] - sizes[0] <= 8  # within the largest image's question count
    assert share_by_image(items, 0, 1) == items


def test_batches_hold_each_question_once_a_group_together_and_release_each_prefix_after_its_last_use():
    items = items_about(["a"] * 5 + ["b"] * 1 + ["c"] * 3 + ["d"] * 2)
    prompts = [[1, IMAGE, 7]] * 9 + [[1, 1, IMAGE, 7]] * 2  # d's prefix is longer
    groups = group_by_image(items, prompts, IMAGE)
    batches = plan_batches(groups, 4)
    rows = [row for batch in batches for row in batch.rows]
    assert sorted(rows) == list(range(len(items)))
    assert [len(b.rows) for b in batches] == [4, 4, 1, 2]  # d starts a batch of its own: another prefix length
    for batch in batches:
        assert [groups[g].members.count(row) for row, g in zip(batch.rows, batch.row_groups)] == [1] * len(batch.rows)
        assert len({len(groups[g].prefix) for g in batch.row_groups}) == 1
    released = [g for batch in batches for g in batch.release]
    assert sorted(released) == list(range(len(groups)))  # each once
    for number, batch in enumerate(batches):
        for g in batch.release:
            assert all(g not in later.row_groups for later in batches[number + 1:])
            assert max(groups[g].members) in batch.rows
