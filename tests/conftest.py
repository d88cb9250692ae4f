"""Shared fixtures: tiny backbones saved once per test session."""
import os
import sys

import pytest

# Helper modules (tiny models, data and training helpers) live in tests/support, outside collection.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))

from tiny import make_llm_dir, make_vision_dir  # noqa: E402

# Compiled torch extensions go to a folder of this session (children inherit it): a build that a
# test's process kills cannot leave a lock in the user's ~/.cache that stalls later launches, and
# a test can see whether anything was compiled at all.
os.environ["TORCH_EXTENSIONS_DIR"] = os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"llava-ln-tests-torch-extensions-{os.getpid()}")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def tiny_llm(tiny_root):
    """Factory: family name -> path of a saved tiny LLM with a tokenizer."""
    cache = {}

    def get(family: str = "llama") -> str:
        if family not in cache:
            cache[family] = make_llm_dir(tiny_root, family)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def tiny_vision(tiny_root):
    """Factory: vision family name -> path of a saved tiny vision tower."""
    cache = {}

    def get(family: str = "clip") -> str:
        if family not in cache:
            cache[family] = make_vision_dir(tiny_root, family)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def sp_tokenizer_dir(tiny_root):
    """A sentencepiece-only tokenizer folder (tokenizer.model), trained in-process (data tests)."""
    from data_helpers import make_sentencepiece_dir

    return make_sentencepiece_dir(tiny_root)


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tiny_root):
    """A byte-level BPE tokenizer.json folder (data tests)."""
    from tiny import make_bpe_tokenizer

    path = os.path.join(tiny_root, "bpe_tokenizer")
    make_bpe_tokenizer().save_pretrained(path)
    return path
