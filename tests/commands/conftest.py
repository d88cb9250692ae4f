"""Fixtures of the command tests: LLaVA-1.5-7B's shape as config files only (describe builds it on the meta device)."""
import pytest

from llava_ln.model.shapes import write_shape


@pytest.fixture(scope="session")
def config_only_7b(tmp_path_factory):
    """(llm folder, vision folder): Vicuna-7B's LLaMA config and CLIP ViT-L/14-336's, no weights."""
    return write_shape(str(tmp_path_factory.mktemp("cfg7b")), "7b")
