"""The backbone pretraining script runs end to end (tiny settings) and writes loadable checkpoints."""
import json
import os

from llava_ln.toy.backbones.spec import LLM_FILES, VISION_FILES


def test_pretrain_script_writes_plain_hf_checkpoints(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel

    from llava_ln.toy.backbones.pretrain import main

    out = str(tmp_path / "assets")
    assert main(["--out", out, "--llm_documents", "48", "--llm_batch_size", "16", "--vision_steps", "2",
                 "--vision_batch_size", "8", "--eval_questions", "2", "--workers", "0"]) == 0
    assert sorted(os.listdir(os.path.join(out, "llm"))) == sorted(LLM_FILES)
    assert sorted(os.listdir(os.path.join(out, "vision"))) == sorted(VISION_FILES)
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(out, "llm"))
    model = AutoModelForCausalLM.from_pretrained(os.path.join(out, "llm"))
    assert model.config.vocab_size == len(tokenizer)
    CLIPVisionModel.from_pretrained(os.path.join(out, "vision"))
    AutoImageProcessor.from_pretrained(os.path.join(out, "vision"))
    with open(os.path.join(out, "PRETRAIN.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    assert record["llm"]["steps"] == 3 and record["vision"]["steps"] == 2


def test_tokenizer_training_is_deterministic(tmp_path):
    from llava_ln.toy.backbones.pretrain_llm import train_tokenizer
    from llava_ln.toy.train_data import text_corpus

    documents = text_corpus(seed=5, count=40)
    train_tokenizer(documents, str(tmp_path / "a"))
    train_tokenizer(documents, str(tmp_path / "b"))
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
