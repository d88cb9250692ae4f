"""Batched generation: the same greedy answers at any batch size, prompts exactly as in training, restarts."""
import json
import logging
import os
import shutil

import pytest
import torch
from eval_helpers import make_run_folder

from llava_ln.checkpoint.loading import load_checkpoint
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.encode import encode, special_prefix_ids
from llava_ln.data.templates import get_template
from llava_ln.evaluation import answer_store, runner
from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.benchmarks import vqav2
from llava_ln.evaluation.benchmarks.common import SHORT_ANSWER_SUFFIX, DataFlags, EvalItem
from llava_ln.evaluation.generation import AnswerGenerator, GenerationSettings, PromptEncoder
from llava_ln.evaluation.model_loading import load_eval_model
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.parts import unwrap

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread (conftest.py)


def vqa_args(assets, output_dir, **overrides):
    values = dict(benchmark="vqav2", model_path=assets["run"], data=assets["data"]["vqav2"], output_dir=str(output_dir),
                  max_new_tokens=6, device="cpu")
    values.update(overrides)
    return EvalArguments(**values)


def answers_of(output_dir) -> dict:
    return answer_store.read_answers(str(output_dir))


def test_greedy_answers_identical_at_batch_size_1_and_16(assets, tmp_path):
    single = runner.run_eval(vqa_args(assets, tmp_path / "bs1", batch_size=1))
    batched = runner.run_eval(vqa_args(assets, tmp_path / "bs16", batch_size=16))
    assert single["generated_answers"] == batched["generated_answers"] == 18
    one, sixteen = answers_of(tmp_path / "bs1"), answers_of(tmp_path / "bs16")
    assert len(one) == 18 and one == sixteen
    assert len(set(one.values())) > 3, "the model must give different answers for the comparison to mean anything"


def test_prompt_tokens_are_the_training_prefix_of_the_reply(assets):
    tokenizer = load_tokenizer(json.load(open(os.path.join(assets["run"], "manifest.json")))["tokenizer"])
    template = get_template("vicuna_v1", tokenizer)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    question = "Is there a red circle?\nAnswer the question using a single word or phrase."
    training = encode(template.render([("user", f"<image>\n{question}"), ("assistant", "Yes")]), tokenizer,
                      image_token_id, 4, special_prefix_ids(tokenizer))
    first_supervised = next(i for i, label in enumerate(training.labels) if label != -100)
    prompt = PromptEncoder(tokenizer, template, image_token_id, 4).encode(question)
    assert prompt == training.input_ids[:first_supervised]
    assert prompt.count(image_token_id) == 4


def test_restart_skips_answered_questions_and_survives_a_torn_line(assets, tmp_path, monkeypatch):
    first = runner.run_eval(vqa_args(assets, tmp_path))
    assert first["generated_answers"] == 18
    complete = answers_of(tmp_path)
    part = answer_store.part_path(str(tmp_path), 0)
    lines = open(part, encoding="utf-8").read().splitlines(keepends=True)
    # Keep 13 answers, then a line cut mid-write (as a killed run leaves it).
    with open(part, "w", encoding="utf-8") as handle:
        handle.writelines(lines[:13])
        handle.write(lines[13][:20])
    second = runner.run_eval(vqa_args(assets, tmp_path))
    assert second["reused_answers"] == 13 and second["generated_answers"] == 5
    assert second["generation"]["questions"] == 5  # questions actually put to the model
    assert answers_of(tmp_path) == complete
    assert all(json.loads(line) for line in open(part, encoding="utf-8"))  # the torn line was cut, not kept

    def no_model(*args, **kwargs):
        raise AssertionError("a finished run must not load the model again")

    monkeypatch.setattr(runner, "load_eval_model", no_model)
    third = runner.run_eval(vqa_args(assets, tmp_path))
    assert third["generated_answers"] == 0 and third["reused_answers"] == 18
    results = json.load(open(third["files"]["results"]))
    assert {r["question_id"]: r["answer"] for r in results} == {int(k): v for k, v in complete.items()}


def test_restart_asks_again_the_questions_whose_text_or_image_file_changed(assets, tmp_path, caplog):
    data = shutil.copytree(assets["data"]["vqav2"], tmp_path / "vqav2")
    output = tmp_path / "out"
    runner.run_eval(vqa_args(assets, output, data=str(data), max_new_tokens=2))
    questions_path = data / "v2_OpenEnded_mscoco_val2014_questions.json"
    payload = json.loads(questions_path.read_text())
    payload["questions"][0]["question"] = "What is written on the sign?"  # question 1000, image 1
    questions_path.write_text(json.dumps(payload))
    image = data / "val2014" / "COCO_val2014_000000000002.jpg"  # questions 2000 and 2001
    shutil.copyfile(data / "val2014" / "COCO_val2014_000000000003.jpg", image)
    os.utime(image, ns=(1, 1))  # another picture, whatever the file system's time resolution
    with caplog.at_level(logging.WARNING, logger="llava_ln.evaluation.answer_store"):
        again = runner.run_eval(vqa_args(assets, output, data=str(data), max_new_tokens=2))
    assert again["reused_answers"] == 15 and again["generated_answers"] == 3
    assert "3 stored answer(s)" in caplog.text and "asked again" in caplog.text
    prompts = {key: found[-1]["prompt"] for key, found in answer_store.read_records(str(output)).items()}
    assert prompts["1000"].startswith("What is written on the sign?")


def test_a_question_past_the_llms_context_window_is_answered_with_a_warning_naming_it(assets, tmp_path, caplog):
    images = os.path.join(assets["data"]["vqav2"], "val2014")
    questions = tmp_path / "questions.jsonl"
    rows = [{"question_id": "short", "image": "COCO_val2014_000000000001.jpg", "text": "What is it?"},
            {"question_id": "long", "image": "COCO_val2014_000000000001.jpg", "text": "Why? " * 400}]
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with caplog.at_level(logging.WARNING, logger="llava_ln.evaluation.generation"):
        summary = runner.run_eval(EvalArguments(benchmark="generic", model_path=assets["run"], device="cpu",
                                                question_file=str(questions), image_folder=images,
                                                output_dir=str(tmp_path / "out"), max_new_tokens=2))
    assert summary["generated_answers"] == 2
    assert "1 question(s) need more positions than the LLM's context window of 512 tokens (first: question long" \
        in caplog.text


def test_rerun_with_other_settings_is_refused(assets, tmp_path):
    runner.run_eval(vqa_args(assets, tmp_path, max_new_tokens=2))
    with pytest.raises(LlavaLnError, match="max_new_tokens: 2, now 3"):
        runner.run_eval(vqa_args(assets, tmp_path, max_new_tokens=3))
    again = runner.run_eval(vqa_args(assets, tmp_path, max_new_tokens=3, overwrite=True))
    assert again["generated_answers"] == 18


def test_sampling_and_beam_flags_reach_generate(assets, tmp_path):
    beams = runner.run_eval(vqa_args(assets, tmp_path / "beams", num_beams=2, batch_size=4))
    sampled = runner.run_eval(vqa_args(assets, tmp_path / "sampled", temperature=1.5, seed=3))
    sampled_again = runner.run_eval(vqa_args(assets, tmp_path / "sampled2", temperature=1.5, seed=3))
    assert beams["generated_answers"] == sampled["generated_answers"] == 18
    assert answers_of(tmp_path / "sampled") == answers_of(tmp_path / "sampled2")  # seeded
    greedy = runner.run_eval(vqa_args(assets, tmp_path / "greedy"))
    assert greedy["generated_answers"] == 18
    assert answers_of(tmp_path / "sampled") != answers_of(tmp_path / "greedy")
    assert sampled_again["generated_answers"] == 18
    torch.manual_seed(0)  # leave the global generator as other tests expect it
    with pytest.raises(LlavaLnError, match=r"--top_p 0.9 applies only to sampling: add --temperature > 0"):
        runner.run_eval(vqa_args(assets, tmp_path / "greedy_top_p", top_p=0.9))  # would silently decode greedily
    assert not os.path.exists(tmp_path / "greedy_top_p")


def test_lora_run_is_folded_once_and_answers_like_the_unmerged_adapter(assets, tiny_llm, tiny_vision, tmp_path):
    run = make_run_folder(str(tmp_path / "lora"), tiny_llm("llama"), tiny_vision("clip"), tune_mode="lora", scale=0.3)
    summary = runner.run_eval(vqa_args(assets, tmp_path / "out", model_path=run))
    folded = answers_of(tmp_path / "out")
    assert summary["generated_answers"] == 18 and len(set(folded.values())) > 3

    eval_model = load_eval_model(run, torch.device("cpu"))
    assert unwrap(eval_model.model) is eval_model.model  # no PeftModel left: LoRA was merged in
    eval_model.model = load_checkpoint(run).model  # the PeftModel, adapter applied on the fly
    assert unwrap(eval_model.model) is not eval_model.model
    items = vqav2.read_items(vqav2.locate(DataFlags(data=assets["data"]["vqav2"])), SHORT_ANSWER_SUFFIX)
    encoder = PromptEncoder(eval_model.tokenizer, eval_model.template, eval_model.image_token_id,
                            eval_model.num_image_tokens)
    unmerged = AnswerGenerator(eval_model, GenerationSettings(max_new_tokens=6), torch.device("cpu")).generate(
        [encoder.encode(item.prompt) for item in items], [item.image for item in items])
    assert dict(zip((item.key for item in items), unmerged)) == folded


def test_answer_file_keeps_a_complete_last_record_that_only_lacks_its_newline(tmp_path):
    path = answer_store.part_path(str(tmp_path), 0)
    os.makedirs(os.path.dirname(path))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"key": "a", "answer": "1"}\n{"key": "b", "answer": "2"}')  # killed before the newline
    with answer_store.AnswerWriter(str(tmp_path), 0) as writer:
        writer.append([{"key": "c", "answer": "3"}])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"key": "d", "ans')  # torn mid-record
    assert answer_store.read_answers(str(tmp_path)) == {"a": "1", "b": "2", "c": "3"}
    answer_store.AnswerWriter(str(tmp_path), 0).close()
    assert open(path, encoding="utf-8").read().splitlines() == [
        '{"key": "a", "answer": "1"}', '{"key": "b", "answer": "2"}', '{"key": "c", "answer": "3"}']


def test_the_answer_given_to_the_question_as_it_is_now_is_reused_whichever_rank_file_holds_it(tmp_path):
    """A 2-rank run answered q on rank 1; its image changed; a 1-rank rerun asked it again into part 0.
    Rank 1's stale line comes later in file order, yet the answer to the current image is the one reused."""
    image = tmp_path / "a.png"
    image.write_bytes(b"first picture")
    item = EvalItem(key="q", image=str(image), prompt="What is it?")
    with answer_store.AnswerWriter(str(tmp_path), 1) as writer:
        writer.append([answer_store.answer_record(item, "old")])
    image.write_bytes(b"the second picture")
    assert answer_store.reusable_answers(str(tmp_path), [item]) == {}
    with answer_store.AnswerWriter(str(tmp_path), 0) as writer:
        writer.append([answer_store.answer_record(item, "new")])
    assert answer_store.reusable_answers(str(tmp_path), [item]) == {"q": "new"}

