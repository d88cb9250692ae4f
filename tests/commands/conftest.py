"""Fixtures of the command tests: LLaVA-1.5-7B's shape as config files only (describe builds it on the meta device)."""
import pytest
from transformers import CLIPVisionConfig, LlamaConfig


@pytest.fixture(scope="session")
def config_only_7b(tmp_path_factory):
    """(llm folder, vision folder): Vicuna-7B's LLaMA config and CLIP ViT-L/14-336's, no weights."""
    root = tmp_path_factory.mktemp("cfg7b")
    LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, max_position_embeddings=4096).save_pretrained(root / "llm")
    CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     image_size=336, patch_size=14, projection_dim=768).save_pretrained(root / "vision")
    return str(root / "llm"), str(root / "vision")
