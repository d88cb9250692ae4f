"""Fault injection, inputs: data records, images, answer files and DeepSpeed configs that are wrong.

Each case ends in one line naming the file and record (or field), in a clean skip where
--skip_bad_samples asks for one, or in a clean re-ask (answer files); nothing already saved is
lost. The cases and how to run the full set: docs/reliability.md ("Files and inputs").
"""
import json
import os

import pytest
from data_helpers import image_record, make_dataset, record, save_image, write_json
from eval_helpers import session_assets, single_thread
from fault_helpers import DAMAGES, error_lines, one_line, refused, run_cli

from llava_ln.core.errors import LlavaLnError
from llava_ln.evaluation import answer_store, runner
from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.benchmarks import pope
from llava_ln.evaluation.benchmarks.common import DataFlags
from llava_ln.model.backbones import load_tokenizer
from llava_ln.training.args import TrainingArguments
from llava_ln.training.zero.strategy import fill_zero_config, load_zero_config

GOOD = record("good-1", "Hello there?", "Hi.")


@pytest.fixture(scope="module")
def tokenizer(bpe_tokenizer_dir):
    return load_tokenizer(bpe_tokenizer_dir)


@pytest.fixture()
def folder(tmp_path):
    save_image(str(tmp_path / "images" / "a.png"))
    save_image(str(tmp_path / "outside.png"))
    return tmp_path



# ---- data records ----

SURROGATES = {  # a lone UTF-16 surrogate, as JSON can spell it, in every string of a record
    "human_turn": (record("bad-1", "what is \ud800 this?", "a cat"), "turn 0 (human)"),
    "gpt_turn": (record("bad-1", "what is this?", "a \udfff"), "turn 1 (gpt)"),
    "id": (record("bad-\ud800", "q?", "a."), "field 'id'"),
    "image_path": (image_record("bad-1", "a\ud800.png"), "field 'image'"),
}


@pytest.mark.parametrize("case", sorted(SURROGATES))
def test_unencodable_text_is_a_bad_record_at_indexing(tokenizer, tiny_vision, folder, case):
    bad, expected = SURROGATES[case]
    path = write_json(str(folder / "data.json"), [GOOD, bad])
    message = refused(lambda: make_dataset(path, tokenizer, tiny_vision("clip"), image_folder=str(folder / "images")),
                      path, "record", "UTF-8 cannot encode", expected)
    assert "#1" in message
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"), image_folder=str(folder / "images"),
                           skip_bad_samples=True)
    assert len(dataset) == 1 and dataset.skip_counts()["bad_record"] == 1
    assert dataset[0]["id"] == "good-1"


class PanicException(BaseException):
    """What a Rust tokenizer's panic looks like from Python (pyo3's class of this name derives BaseException)."""


@pytest.mark.parametrize("error", [TypeError("TextEncodeInput must be Union"), PanicException("tokenizer panicked")],
                         ids=["type_error", "rust_panic"])
def test_a_record_the_tokenizer_rejects_when_read_is_skipped_or_one_line(tokenizer, tiny_vision, folder, error):
    path = write_json(str(folder / "data.json"), [GOOD, record("poison-1", "tokenizers hate this", "x"),
                                                  record("good-2", "Hello?", "Hi.")])

    class Picky(type(tokenizer)):
        def __call__(self, text, *args, **kwargs):
            if "tokenizers hate this" in text:
                raise error
            return super().__call__(text, *args, **kwargs)

    picky = load_tokenizer(tokenizer.name_or_path)
    picky.__class__ = Picky
    strict = make_dataset(path, picky, tiny_vision("clip"))
    refused(lambda: strict[1], path, "record 'poison-1' (#1)", "the tokenizer rejects this record")
    skipping = make_dataset(path, picky, tiny_vision("clip"), skip_bad_samples=True)
    assert skipping[1]["id"] == "good-2" and skipping[1]["id"] == "good-2"  # replaced, and only flagged once
    assert skipping.skip_counts()["bad_record"] == 1


def test_an_interrupt_inside_the_tokenizer_is_not_mistaken_for_a_bad_record(tokenizer, tiny_vision, folder):
    path = write_json(str(folder / "data.json"), [GOOD])

    class Interrupted(type(tokenizer)):
        def __call__(self, text, *args, **kwargs):
            raise KeyboardInterrupt

    picky = load_tokenizer(tokenizer.name_or_path)
    picky.__class__ = Interrupted
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"), skip_bad_samples=True)
    dataset.tokenizer = picky
    with pytest.raises(KeyboardInterrupt):
        dataset[0]


# ---- images ----

@pytest.mark.parametrize("name,expected", [("../outside.png", "leads outside the image folder"),
                                           ("sub/../../outside.png", "leads outside the image folder"),
                                           ("ABSOLUTE", "is absolute")])
def test_image_path_leaving_the_image_folder_is_a_bad_record(tokenizer, tiny_vision, folder, name, expected):
    name = str(folder / "outside.png") if name == "ABSOLUTE" else name
    path = write_json(str(folder / "data.json"), [GOOD, image_record("escape-1", name)])
    refused(lambda: make_dataset(path, tokenizer, tiny_vision("clip"), image_folder=str(folder / "images")),
            path, "record 'escape-1' (#1)", expected)
    skipping = make_dataset(path, tokenizer, tiny_vision("clip"), image_folder=str(folder / "images"),
                            skip_bad_samples=True)
    assert len(skipping) == 1


def test_absolute_paths_without_an_image_folder_and_symlinks_inside_it_are_followed(tokenizer, tiny_vision, folder):
    """Documented policy: the record is untrusted, the folder is the user's."""
    os.symlink(str(folder / "outside.png"), str(folder / "images" / "linked.png"))
    path = write_json(str(folder / "images" / "data.json"),
                      [image_record("abs-1", str(folder / "outside.png")), image_record("link-1", "linked.png")])
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"))
    assert dataset[0]["pixel_values"] is not None and dataset[1]["pixel_values"] is not None
    with_folder = write_json(str(folder / "data.json"), [image_record("link-1", "linked.png")])
    assert make_dataset(with_folder, tokenizer, tiny_vision("clip"), image_folder=str(folder / "images"))[0]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_image_is_one_line_or_skipped(tokenizer, tiny_vision, folder, damage):
    image = str(folder / "images" / "b.png")
    save_image(image, size=(64, 64))
    DAMAGES[damage](image)
    path = write_json(str(folder / "data.json"), [GOOD, image_record("img-7", "b.png")])
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"), image_folder=str(folder / "images"))
    try:
        sample = dataset[1]
    except LlavaLnError as err:  # most damage is detected (PNG chunk CRCs, a short file)
        assert "record 'img-7' (#1)" in one_line(err) and "b.png" in str(err)
    else:  # a flipped bit inside compressed pixels can still decode: then it is an image, not a crash
        assert sample["id"] == "img-7" and sample["pixel_values"] is not None


def test_decompression_bomb_is_refused_with_one_line_naming_the_record(tokenizer, tiny_vision, folder):
    from PIL import Image

    Image.new("1", (11000, 10000)).save(str(folder / "images" / "bomb.png"))
    path = write_json(str(folder / "data.json"), [GOOD, image_record("bomb-1", "bomb.png"),
                                                  image_record("img-ok", "a.png")])
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"), image_folder=str(folder / "images"))
    refused(lambda: dataset[1], "record 'bomb-1' (#1)", "bomb.png is 11000 x 10000", "--max_image_pixels")
    skipping = make_dataset(path, tokenizer, tiny_vision("clip"), image_folder=str(folder / "images"),
                            skip_bad_samples=True)
    assert skipping[1]["id"] == "img-ok" and skipping.skip_counts()["bad_record"] == 1


def test_eval_question_naming_an_image_outside_the_folder(tmp_path):
    (tmp_path / "images").mkdir()
    save_image(str(tmp_path / "secret.png"))
    labels = tmp_path / "coco_pope_random.json"
    labels.write_text(json.dumps({"question_id": 1, "image": "../secret.png", "text": "Is there a cat?",
                                  "label": "no"}) + "\n")
    sources = pope.locate(DataFlags(annotation_file=str(labels), image_folder=str(tmp_path / "images")))
    refused(lambda: pope.read_items(sources, ""), "coco_pope_random.json", "question_id 1", "leads outside")


def test_eval_question_with_unusable_text(tmp_path, tokenizer):
    from llava_ln.data.templates import get_template
    from llava_ln.evaluation.generation import PromptEncoder

    encoder = PromptEncoder(tokenizer, get_template("vicuna_v1", tokenizer), tokenizer.convert_tokens_to_ids("<image>"), 4)
    refused(lambda: encoder.encode("Is there a \ud800?", where="question 7"), "question 7", "UTF-8 cannot encode")
    (tmp_path / "images").mkdir()
    labels = tmp_path / "coco_pope_random.json"
    labels.write_text(json.dumps({"question_id": 1, "image": "a.png", "text": 42, "label": "no"}) + "\n")
    sources = pope.locate(DataFlags(annotation_file=str(labels), image_folder=str(tmp_path / "images")))
    refused(lambda: pope.read_items(sources, ""), "question_id 1", "'text' is not a string")


# ---- answer files ----

@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_llm, tiny_vision):
    with single_thread():
        yield session_assets(tmp_path_factory, tiny_llm, tiny_vision)


BAD_ANSWERS = {"number": 42, "null": None, "list": ["yes"], "object": {"a": 1}}


def test_reused_answers_of_the_wrong_type_are_asked_again(assets, tmp_path):
    args = EvalArguments(benchmark="vqav2", model_path=assets["run"], data=assets["data"]["vqav2"],
                         output_dir=str(tmp_path), max_new_tokens=4, device="cpu")
    with single_thread():
        first = runner.run_eval(args)
    part = answer_store.part_path(str(tmp_path), 0)
    lines = [json.loads(line) for line in open(part, encoding="utf-8")]
    damaged = {}
    for line, (kind, value) in zip(lines, BAD_ANSWERS.items()):
        damaged[line["key"]] = line["answer"]
        line["answer"] = value
    lines[len(BAD_ANSWERS)] = {"key": 7, "answer": "seven"}  # a key of the wrong type
    lines[len(BAD_ANSWERS) + 1] = ["not", "a", "record"]
    with open(part, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    with single_thread():
        second = runner.run_eval(args)
    assert first["generated_answers"] == 18 and second["generated_answers"] == len(BAD_ANSWERS) + 2
    results = json.load(open(second["files"]["results"], encoding="utf-8"))
    assert len(results) == 18 and all(isinstance(r["answer"], str) for r in results)
    by_id = {str(r["question_id"]): r["answer"] for r in results}
    assert all(by_id[key] == answer for key, answer in damaged.items())  # greedy: asked again, same answer


# ---- DeepSpeed configs ----

ARGS = TrainingArguments(output_dir="out", per_device_train_batch_size=8)
ZERO_CONFIGS = {
    "micro_batch_string": ({"train_micro_batch_size_per_gpu": "8"}, "train_micro_batch_size_per_gpu is '8'"),
    "micro_batch_bool": ({"train_micro_batch_size_per_gpu": True}, "an integer"),
    "stage_string": ({"zero_optimization": {"stage": "3"}}, "stage is '3'"),
    "bool_string": ({"zero_optimization": {"stage": 2, "overlap_comm": "true"}}, "true or false (without quotes)"),
    "enabled_string": ({"bf16": {"enabled": "false"}}, "[bf16]: enabled"),
    "section_not_object": ({"bf16": True}, "bf16 is True; it must be an object"),
    "zero_not_object": ({"zero_optimization": 3}, "zero_optimization is 3"),
    "offload_not_object": ({"zero_optimization": {"stage": 3, "offload_optimizer": "cpu"}}, "offload_optimizer"),
    "bucket_string": ({"zero_optimization": {"stage": 3, "reduce_bucket_size": "5e8"}}, "reduce_bucket_size"),
    "betas_string": ({"optimizer": {"type": "AdamW", "params": {"betas": "0.9,0.999"}}}, "betas"),
    "params_list": ({"optimizer": {"type": "AdamW", "params": []}}, "params"),
    "top_level_list": ([{"zero_optimization": {"stage": 2}}], "not an object"),
}


@pytest.mark.parametrize("case", sorted(ZERO_CONFIGS))
def test_wrongly_typed_deepspeed_config_is_one_line(case):
    config, expected = ZERO_CONFIGS[case]
    if isinstance(config, dict):
        config = {"zero_optimization": {"stage": 2}} | config
    refused(lambda: fill_zero_config(config, ARGS, world_size=1, hidden_size=64, path="--deepspeed z.json"),
            "--deepspeed z.json", expected)


def test_integral_floats_pass_as_integers_as_llavas_configs_write_them():
    config = {"zero_optimization": {"stage": 3, "stage3_max_live_parameters": 1e9, "sub_group_size": 1e9}}
    filled = fill_zero_config(config, ARGS, world_size=1, hidden_size=64)
    assert filled["zero_optimization"]["stage3_max_live_parameters"] == 1e9


def test_deepspeed_config_that_is_not_text(tmp_path):
    path = tmp_path / "z.json"
    path.write_bytes(b"\xff\xfe{")
    refused(lambda: load_zero_config(str(path)), "not valid JSON")


# ---- end to end (slow: `make test-faults`) ----

@pytest.mark.faults
def test_training_on_a_record_with_a_lone_surrogate(tmp_path, tiny_llm, tiny_vision, tmp_path_factory):
    """Stops before the first step with one line; with --skip_bad_samples trains to the end, and so does a resume
    from its checkpoint (the record never comes back: it was left out of the index)."""
    from train_helpers import flags, train_world

    world = train_world(tmp_path_factory, tiny_llm, tiny_vision)
    records = json.load(open(world["instruct"], encoding="utf-8"))
    records.insert(3, record("surrogate-1", "what is \ud800?", "nothing"))
    data = str(tmp_path / "data.json")
    with open(data, "w", encoding="utf-8") as handle:
        json.dump(records, handle)  # json escapes the surrogate as \ud800, as such files spell it
    common = dict(data_path=data, image_folder=os.path.dirname(world["instruct"]), max_steps=3, save_steps=2)
    code, err = run_cli("train", *flags(world, str(tmp_path / "strict"), **common))
    errors = error_lines(err)
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err[-3000:]
    assert "record 'surrogate-1' (#3)" in errors[0] and "UTF-8 cannot encode" in errors[0], errors
    out = str(tmp_path / "skipping")
    code, err = run_cli("train", *flags(world, out, skip_bad_samples=True, **common))
    assert code == 0, err[-3000:]
    code, err = run_cli("train", *flags(world, out, skip_bad_samples=True, resume_from_checkpoint="latest", **common))
    assert code == 0, err[-3000:]
