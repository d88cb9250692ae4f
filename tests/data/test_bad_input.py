"""Bad input: every malformed record or image is a one-line error naming the file and the record id."""
import json
import os
import subprocess
import sys

import pytest
from data_helpers import image_record, make_dataset, record, save_image, turn, write_json

from llava_ln.cli import main as cli_main
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.backbones import load_tokenizer

GOOD = record("good-1", "Hello there?", "Hi.")

# case name -> (bad record, words the error must contain)
STRUCTURE_CASES = {
    "missing_conversations": ({"id": "bad-1"}, "missing field 'conversations'"),
    "missing_value": ({"id": "bad-1", "conversations": [{"from": "human"}, turn("gpt", "x")]},
                      "turn 0 is missing field 'value'"),
    "missing_id": ({"conversations": [turn("human", "q"), turn("gpt", "a")]}, "missing field 'id'"),
    "bad_from": ({"id": "bad-1", "conversations": [turn("human", "q"), turn("assistant", "a")]},
                 "'from' 'assistant'; expected 'human' or 'gpt'"),
    "out_of_order": ({"id": "bad-1", "conversations": [turn("gpt", "a"), turn("human", "q")]},
                     "turns out of order: turn 0 is from 'gpt'"),
    "no_reply": ({"id": "bad-1", "conversations": [turn("human", "q"), turn("gpt", "a"), turn("human", "q2")]},
                 "has no 'gpt' reply"),
    "image_tag_without_image": (record("bad-1", "<image>\nWhat is it?", "A cat."), "no 'image' field"),
    "image_without_tag": (record("bad-1", "What is it?", "A cat.", image="a.png"), "1 image(s) but 0 <image> tag"),
    "empty_value": (record("bad-1", "What is it?", "   "), "turn 1 (gpt) has an empty"),
    "missing_image_file": (image_record("bad-1", "nowhere.png"), "image file not found"),
}


@pytest.fixture(scope="module")
def tokenizer(bpe_tokenizer_dir):
    return load_tokenizer(bpe_tokenizer_dir)


@pytest.fixture()
def data_dir(tmp_path):
    save_image(str(tmp_path / "a.png"))
    return tmp_path


def _one_line(message: str) -> str:
    assert "\n" not in message
    return message


@pytest.mark.parametrize("case", sorted(STRUCTURE_CASES))
def test_bad_record_is_a_one_line_error_naming_file_and_record(tokenizer, tiny_vision, data_dir, case):
    bad, expected = STRUCTURE_CASES[case]
    path = write_json(str(data_dir / "data.json"), [GOOD, bad])
    with pytest.raises(LlavaLnError) as caught:
        make_dataset(path, tokenizer, tiny_vision("clip"))
    message = _one_line(str(caught.value))
    assert path in message and expected in message
    assert ("record #1" if case == "missing_id" else "record 'bad-1' (#1)") in message


@pytest.mark.parametrize("content", [b"this is not a png", None], ids=["garbage", "truncated"])
def test_corrupt_image_is_reported_when_read(tokenizer, tiny_vision, data_dir, content):
    image = str(data_dir / "broken.png")
    if content is None:  # a real PNG cut in half
        save_image(image, size=(64, 64))
        content = open(image, "rb").read()[:120]
    with open(image, "wb") as handle:
        handle.write(content)
    path = write_json(str(data_dir / "data.json"), [GOOD, image_record("img-7", "broken.png")])
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"))
    assert dataset[0]["id"] == "good-1"
    with pytest.raises(LlavaLnError) as caught:
        dataset[1]
    message = _one_line(str(caught.value))
    assert path in message and "record 'img-7' (#1)" in message and "cannot read image" in message


def test_invalid_json_names_file_and_line(tokenizer, tiny_vision, data_dir):
    path = str(data_dir / "data.jsonl")
    with open(path, "w") as handle:
        handle.write(json.dumps(GOOD) + '\n{"id": "b", oops}\n')
    with pytest.raises(LlavaLnError, match=r"data\.jsonl: invalid JSON on line 2"):
        make_dataset(path, tokenizer, tiny_vision("clip"))


@pytest.mark.parametrize("text, line", [("[GOOD\n GOOD]", 2), ("[GOOD,\n\n{\"id\": }]", 3), ("[GOOD] extra", 1)],
                         ids=["missing_comma", "bad_value", "extra_data"])
def test_invalid_json_array_names_file_and_line(tokenizer, tiny_vision, data_dir, text, line):
    path = str(data_dir / "data.json")
    with open(path, "w") as handle:
        handle.write(text.replace("GOOD", json.dumps(GOOD)))
    with pytest.raises(LlavaLnError, match=rf"data\.json: invalid JSON at line {line} column"):
        make_dataset(path, tokenizer, tiny_vision("clip"))


def test_bad_flags(tokenizer, tiny_vision, data_dir):
    path = write_json(str(data_dir / "data.json"), [GOOD])
    with pytest.raises(LlavaLnError, match="--image_aspect_ratio 'anyres' is not one of pad, resize, crop, square"):
        make_dataset(path, tokenizer, tiny_vision("clip"), image_aspect_ratio="anyres")
    with pytest.raises(LlavaLnError, match="data file not found"):
        make_dataset(str(data_dir / "missing.json"), tokenizer, tiny_vision("clip"))
    with pytest.raises(LlavaLnError, match="--image_folder .* is not a folder"):
        make_dataset(path, tokenizer, tiny_vision("clip"), image_folder=str(data_dir / "nope"))
    with pytest.raises(LlavaLnError, match="the sample count must be positive"):
        make_dataset(path + ":0", tokenizer, tiny_vision("clip"))


def _inspect_argv(llm_dir, vision_dir, data_path, *extra):
    return ["inspect-data", "--model_name_or_path", llm_dir, "--vision_tower", vision_dir, "--data_path", data_path,
            *extra]


@pytest.mark.parametrize("case", ["bad_from", "missing_image_file", "empty_value"])
def test_cli_exits_2_with_one_line(tiny_llm, tiny_vision, data_dir, capsys, case):
    path = write_json(str(data_dir / "data.json"), [GOOD, STRUCTURE_CASES[case][0]])
    argv = _inspect_argv(tiny_llm("llama"), tiny_vision("clip"), path)
    capsys.readouterr()  # drop what building the shared tiny models printed
    code = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("llava-ln: error: ") and "record 'bad-1' (#1)" in err[0]


def test_cli_process_has_no_traceback(tiny_llm, tiny_vision, data_dir):
    save_image(str(data_dir / "broken.png"))
    with open(data_dir / "broken.png", "wb") as handle:
        handle.write(b"\x89PNG broken")
    path = write_json(str(data_dir / "data.json"), [image_record("img-3", "broken.png")])
    result = subprocess.run(
        [sys.executable, "-m", "llava_ln.cli", *_inspect_argv(tiny_llm("llama"), tiny_vision("clip"), path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("llava-ln: error:")]
    assert len(errors) == 1 and "record 'img-3' (#0)" in errors[0] and path in errors[0]


def test_cli_rejects_unknown_flags(tiny_llm, tiny_vision, data_dir, capsys):
    path = write_json(str(data_dir / "data.json"), [GOOD])
    argv = _inspect_argv(tiny_llm("llama"), tiny_vision("clip"), path, "--lazy_preprocess", "True")
    capsys.readouterr()
    code = cli_main(argv)
    assert code == 2 and "unknown flag(s): --lazy_preprocess True" in capsys.readouterr().err
