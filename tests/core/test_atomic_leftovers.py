"""Atomic folder writes and what killed ones leave behind: the next run puts back or removes it, nothing else."""
import os

import pytest

from llava_ln.core import atomic
from llava_ln.core.atomic import (
    atomic_directory,
    remove_stale_temporaries,
    restore_interrupted_replacements,
    write_json_atomic,
)


def _folder(path: str, content: str) -> None:
    os.makedirs(path)
    with open(os.path.join(path, "file.txt"), "w", encoding="utf-8") as handle:
        handle.write(content)


def _read(path: str) -> str:
    with open(os.path.join(path, "file.txt"), encoding="utf-8") as handle:
        return handle.read()


def test_a_folder_caught_between_the_two_renames_is_put_back(tmp_path):
    run = str(tmp_path)
    _folder(os.path.join(run, ".old-checkpoint-4-abc123"), "previous")  # checkpoint-4 moved aside, kill
    _folder(os.path.join(run, ".tmp-checkpoint-4-xyz789"), "new")
    _folder(os.path.join(run, ".old-checkpoint-2-def456"), "stale")  # checkpoint-2 was already replaced
    _folder(os.path.join(run, "checkpoint-2"), "current")
    assert restore_interrupted_replacements(run) == ["checkpoint-4"]
    assert _read(os.path.join(run, "checkpoint-4")) == "previous"
    assert sorted(remove_stale_temporaries(run)) == [".old-checkpoint-2-def456", ".tmp-checkpoint-4-xyz789"]
    assert sorted(os.listdir(run)) == ["checkpoint-2", "checkpoint-4"]
    assert _read(os.path.join(run, "checkpoint-2")) == "current"


def test_only_our_prefixes_at_the_top_level_are_removed(tmp_path):
    run = str(tmp_path)
    for name in (".tmp-abc.json", ".tmp-trained-part00001.safetensors", ".hidden", "tmp-x", "notes.txt"):
        with open(os.path.join(run, name), "w", encoding="utf-8") as handle:
            handle.write("x")
    _folder(os.path.join(run, "checkpoint-2", ".tmp-inner"), "kept")  # below the run folder: not ours to judge
    assert sorted(remove_stale_temporaries(run)) == [".tmp-abc.json", ".tmp-trained-part00001.safetensors"]
    assert sorted(os.listdir(run)) == [".hidden", "checkpoint-2", "notes.txt", "tmp-x"]
    assert os.path.isdir(os.path.join(run, "checkpoint-2", ".tmp-inner"))
    assert remove_stale_temporaries(os.path.join(run, "missing")) == []


def test_a_failed_second_rename_puts_the_previous_version_back(tmp_path, monkeypatch):
    final = os.path.join(str(tmp_path), "checkpoint-4")
    _folder(final, "previous")
    real_replace = os.replace

    def replace_that_fails_into_final(source, target):
        if target == final and ".tmp-" in source:
            raise OSError(28, "No space left on device", target)
        return real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace_that_fails_into_final)
    monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)  # a system without renameat2
    with pytest.raises(OSError):
        with atomic_directory(final) as tmp:
            _folder(os.path.join(tmp, "inner"), "new")
    assert sorted(os.listdir(str(tmp_path))) == ["checkpoint-4"]
    assert _read(final) == "previous"


def test_write_json_atomic_leaves_no_temporary_on_error(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic(os.path.join(str(tmp_path), "state.json"), {"value": object()})
    assert os.listdir(str(tmp_path)) == []
