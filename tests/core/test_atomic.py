"""Atomic writes land with the permissions the umask asks for, not mkstemp's 0600 / mkdtemp's 0700."""
import os
import stat

import pytest

from llava_ln.core.atomic import atomic_directory, atomic_path, current_umask, write_json_atomic


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_files_and_folders_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    write_json_atomic(str(tmp_path / "a.json"), {"x": 1})
    with atomic_path(str(tmp_path / "b.bin")) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(b"data")
    with atomic_directory(str(tmp_path / "folder")) as tmp:
        with open(os.path.join(tmp, "inner.txt"), "w") as handle:
            handle.write("x")
    assert _mode(tmp_path / "a.json") == 0o666 & ~mask
    assert _mode(tmp_path / "b.bin") == 0o666 & ~mask
    assert _mode(tmp_path / "folder") == 0o777 & ~mask
    assert _mode(tmp_path / "folder" / "inner.txt") == 0o666 & ~mask


def test_current_umask_does_not_change_it(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027
