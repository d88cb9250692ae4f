"""`llava-ln inspect-data`: the text and JSON views of processed samples."""
import json

import pytest
from data_helpers import image_record, record, save_image, write_json

from llava_ln.cli import main as cli_main
from llava_ln.core.constants import IGNORE_INDEX


@pytest.fixture()
def data(tmp_path):
    save_image(str(tmp_path / "a.png"))
    return write_json(str(tmp_path / "data.json"), [
        image_record("img-1", "a.png", question="how many shapes ?", answer="the answer is yes"),
        record("txt-1", "describe the scene", "no there is not"),
        record("txt-2", "q", "a"),
    ])


def _run(capsys, tiny_llm, tiny_vision, data, *flags):
    argv = ["inspect-data", "--model_name_or_path", tiny_llm("llama"), "--vision_tower", tiny_vision("clip"),
            "--data_path", data, *flags]
    capsys.readouterr()
    code = cli_main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def test_json_format(capsys, tiny_llm, tiny_vision, data):
    out, err = _run(capsys, tiny_llm, tiny_vision, data, "--num_samples", "2", "--format", "json")
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [r["id"] for r in rows] == ["img-1", "txt-1"]
    for row in rows:
        assert set(row) == {"id", "input_ids", "labels", "text"}
        assert len(row["input_ids"]) == len(row["labels"])
        supervised = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
        assert supervised and all(label in (IGNORE_INDEX, t) for t, label in zip(row["input_ids"], row["labels"]))
    assert rows[0]["text"].endswith("ASSISTANT: the answer is yes</s>") and "<image>" in rows[0]["text"]
    assert "2 sample(s) shown" in err


def test_text_format_marks_supervised_tokens(capsys, tiny_llm, tiny_vision, data):
    out, _ = _run(capsys, tiny_llm, tiny_vision, data, "--num_samples", "1", "--conv_template", "plain")
    lines = out.splitlines()
    assert lines[0] == f"=== {data}: record 'img-1' (#0)"
    assert "--- rendered text" in lines and "<image>the answer is yes" in out
    assert "'<image>' x4 (image 1)" in out
    supervised = [line for line in lines if line[7:8] == "*"]
    count = int(lines[1].split("supervised: ")[1])
    assert len(supervised) == count > 0
    assert supervised[-1].endswith("'\\n'")  # plain ends each caption with a supervised newline
