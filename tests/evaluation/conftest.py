"""Fixtures the generation and layout tests share: one torch thread, a session's tiny models and images, its toy world."""
import pytest
from eval_helpers import session_assets, single_thread, toy_assets


@pytest.fixture(scope="module")
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_llm, tiny_vision):
    return session_assets(tmp_path_factory, tiny_llm, tiny_vision)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_assets(tmp_path_factory)
