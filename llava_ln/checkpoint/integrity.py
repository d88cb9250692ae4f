"""Checksums of a checkpoint folder's files: recorded when the folder is written, verified before use.

manifest.json's `files` maps every file the manifest covers (trained tensors and their shard
index, the stage-1 connector, the LoRA adapter, a checkpoint's resume/ state, a merged folder's
weights) to the sha256 of its bytes, as `relative/path -> hex digest`. Tensor files get their
digest while they are written (checkpoint.tensors streams the bytes through the hash), other
files right after. Before a folder is used (load_checkpoint, hence eval, merge and export; and
resume), exactly the files about to be opened are checked: each must be listed and its bytes must
hash to the recorded digest, so a flipped bit, a truncated copy or a file swapped in after the
save stops the command with one line naming the file. Verification streams the file (16 MiB at a
time), so a 13 GB file costs one sequential read and no memory.

Paths in `files` come from a file, so each must be a plain relative path that stays inside the
folder (checked when the manifest is read). A symlink inside the folder is followed (tools such as
DVC or git-annex store files that way); the checksum, not the location, vouches for the bytes.
"""
import logging
import os
import re

from llava_ln.core.content_hash import sha256_file
from llava_ln.core.errors import LlavaLnError

logger = logging.getLogger(__name__)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_relative_path(relative: str, where: str) -> None:
    """A path read from a file must name something inside its folder: relative, no `..`, `/`-separated."""
    parts = relative.split("/") if isinstance(relative, str) else None
    if not parts or relative.startswith("/") or "\\" in relative or "\0" in relative or any(
            part in ("", ".", "..") for part in parts):
        raise LlavaLnError(f"{where} names {relative!r}, which is not a relative path inside its folder")


def check_digest_map(files, where: str) -> None:
    """The shape of a manifest's `files`: {relative path: 64 lower-case hex digits}."""
    if not isinstance(files, dict):
        raise LlavaLnError(f"{where}: `files` must be an object of path -> sha256, not {type(files).__name__}")
    for relative, digest in files.items():
        check_relative_path(relative, f"{where} `files`")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise LlavaLnError(f"{where}: `files` gives {relative!r} the checksum {digest!r}, not a sha256 hex digest")


def digests_of(directory: str, relatives) -> dict:
    """{relative path: sha256} of files already written in directory (for files others wrote)."""
    return {relative: sha256_file(os.path.join(directory, *relative.split("/"))) for relative in sorted(relatives)}


def verify_files(directory: str, manifest, opened: list) -> None:
    """Check the files about to be opened (relative paths) against the manifest's recorded checksums.

    A manifest from before checksums were recorded (format_version 1) has none to check: logged once.
    """
    where = os.path.join(directory, "manifest.json")
    if manifest.format_version < 2:
        logger.warning("%s was written before llava-ln recorded checksums; its files are not verified", where)
        return
    recorded = manifest.files
    for relative in sorted(set(opened)):
        path = os.path.join(directory, *relative.split("/"))
        if relative not in recorded:
            raise LlavaLnError(f"{path} is not covered by the checksums in {where} (added or renamed after the save?)")
        if not os.path.isfile(path):
            raise LlavaLnError(f"{path} is listed in {where} but missing (incomplete copy?)")
        if sha256_file(path) != recorded[relative]:
            raise LlavaLnError(f"{path} does not match its sha256 in {where}: the file is corrupted or was changed "
                               "after the save")
