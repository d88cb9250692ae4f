"""What a file holds, as sha256: read in full, or remembered while the kernel says the file is unchanged.

sha256_file reads every byte (16 MiB at a time): what checksum verification needs, since a flipped
bit changes nothing else about a file. Fingerprints of a run's inputs (the base model, the tower,
the data) use cached_sha256 instead: a 14 GB base would otherwise cost a minute at every start.
The cache (a JSON file, LLAVA_LN_HASH_CACHE or ~/.cache/llava-ln/file-sha256.json) keeps each digest
with the file's device, inode, size, modification and change times. The change time (ctime) is set
by the kernel on every write and cannot be set back by a program, so a file rewritten in place,
even with its old size and mtime restored, is read again; a copy elsewhere (another inode) is read
again too and gives the same digest. A cache that cannot be read or written is simply not used.
"""
import hashlib
import logging
import os

logger = logging.getLogger(__name__)

_CHUNK = 16 * 2**20
CACHE_ENV = "LLAVA_LN_HASH_CACHE"
_MAX_ENTRIES = 20000


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


def cache_path() -> str:
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "llava-ln", "file-sha256.json")


def _identity(path: str) -> list:
    info = os.stat(path)
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


class HashCache:
    """sha256 of files by path, reused while their identity (device, inode, size, mtime, ctime) holds."""

    def __init__(self, path: str | None = None):
        self.path = path or cache_path()
        self.entries = self._load()
        self.dirty = False

    def _load(self) -> dict:
        from llava_ln.core.bounded_json import read_json

        try:
            entries = read_json(self.path, "hash cache") if os.path.exists(self.path) else {}
        except ValueError:
            return {}
        return entries if isinstance(entries, dict) else {}

    def sha256(self, path: str) -> str:
        real = os.path.realpath(path)
        identity = _identity(real)
        known = self.entries.get(real)
        if isinstance(known, list) and len(known) == 2 and known[0] == identity and isinstance(known[1], str):
            return known[1]
        digest = sha256_file(real)
        if _identity(real) == identity:  # not written to while it was read
            self.entries[real] = [identity, digest]
            self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        from llava_ln.core.atomic import write_json_atomic

        if len(self.entries) > _MAX_ENTRIES:
            self.entries = {path: entry for path, entry in self.entries.items() if os.path.exists(path)}
        try:
            write_json_atomic(self.path, self.entries)
            self.dirty = False
        except OSError as err:
            logger.debug("file hash cache %s not written (%s)", self.path, err)
