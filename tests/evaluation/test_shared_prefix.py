"""The shared-prefix path answers exactly as the per-question path, fills each image once, resumes and falls back.

"Exactly": the answers' token ids (through the stop token), greedy, float32, on the toy world's five
benchmarks and its vision tower (16 image tokens), with a tiny LLaMA and a tiny Qwen2 LLM whose
random trained tensors make every answer several arbitrary tokens that depend on image and question.
"""
import logging
import os
from types import SimpleNamespace

import pytest
import torch
from eval_helpers import make_run_folder
from transformers import LlamaConfig, LlavaConfig, MistralConfig

from llava_ln.core.benchmarks import BENCHMARKS
from llava_ln.core.distributed import DistContext
from llava_ln.core.errors import LlavaLnError
from llava_ln.evaluation import answer_store, answering, runner
from llava_ln.evaluation.answering import PER_QUESTION, SHARED_PREFIX, QuestionAnswerer
from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.benchmarks.common import DataFlags
from llava_ln.evaluation.benchmarks.registry import get_benchmark
from llava_ln.evaluation.generation import GenerationSettings, PromptEncoder
from llava_ln.evaluation.model_loading import load_eval_model
from llava_ln.evaluation.shared_prefix import SharedPrefixGenerator, unsupported_reason

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread (conftest.py); `toy` is there too
SETTINGS = GenerationSettings(max_new_tokens=8)


@pytest.fixture(scope="module")
def runs(toy, tiny_llm, tmp_path_factory):
    """{family: run folder}: a tiny LLM of each family on the toy world's vision tower, all tensors random."""
    root = tmp_path_factory.mktemp("shared_prefix_runs")
    vision = os.path.join(toy["world"], "vision")
    return {family: make_run_folder(str(root / family), tiny_llm(family), vision) for family in ("llama", "qwen2")}


def questions(toy, name: str, encoder: PromptEncoder) -> tuple[list, list]:
    benchmark = get_benchmark(name)
    sources = benchmark.locate(DataFlags(data=os.path.join(toy["eval"], BENCHMARKS[name].folder)))
    items = benchmark.read_items(sources, benchmark.default_prompt)
    return items, [encoder.encode(item.prompt) for item in items]


def answer_ids(eval_model, items, prompts, share: bool, batch_size: int) -> tuple[dict, QuestionAnswerer]:
    answerer = QuestionAnswerer(eval_model, SETTINGS, torch.device("cpu"), share_image_prefix=share)
    answers = {}
    for batch, ids in answerer.answer_ids(items, prompts, batch_size):
        answers.update((item.key, tuple(row)) for item, row in zip(batch, ids))
    return answers, answerer


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_both_paths_give_the_same_answer_tokens_on_every_benchmark_at_batch_sizes_1_and_16(toy, runs, family):
    eval_model = load_eval_model(runs[family], torch.device("cpu"))
    encoder = PromptEncoder(eval_model.tokenizer, eval_model.template, eval_model.image_token_id,
                            eval_model.num_image_tokens)
    assert eval_model.num_image_tokens == 16
    distinct = set()
    for name in BENCHMARKS:
        items, prompts = questions(toy, name, encoder)
        images = len({item.image for item in items})
        reference, _ = answer_ids(eval_model, items, prompts, share=False, batch_size=16)
        assert len(reference) == len(items)
        for share, batch_size in ((False, 1), (True, 1), (True, 16)):
            answers, answerer = answer_ids(eval_model, items, prompts, share, batch_size)
            assert answers == reference, (name, share, batch_size)
            counts = answerer.counts.as_dict()
            filled = images if share else len(items)
            assert counts == {"questions": len(items), "prefix_fills": filled, "vision_tower_passes": filled}
        distinct |= set(reference.values())
        assert len(set(reference.values())) > 1, name  # answers depend on the question and image
    assert len(distinct) > 20 and max(map(len, distinct)) > 3  # several-token answers: decoding past the cache


def test_in_step_ranks_fill_once_per_batch_and_repeat_batches_to_match_the_busiest_rank(toy, runs, monkeypatch):
    """ZeRO-3 gathers parameters in every forward, so under sync every rank runs one fill and one generate per
    batch and as many batches as the busiest rank. One process stands in for a rank; the other rank's batch
    count comes from a patched all_gather (the real collectives run in test_during_training's ZeRO-3 case)."""
    eval_model = load_eval_model(runs["llama"], torch.device("cpu"))
    encoder = PromptEncoder(eval_model.tokenizer, eval_model.template, eval_model.image_token_id,
                            eval_model.num_image_tokens)
    items, prompts = questions(toy, "pope", encoder)  # 36 questions, 18 per image
    reference, _ = answer_ids(eval_model, items, prompts, share=True, batch_size=8)
    calls = []
    for name in ("fill", "generate_ids_after"):
        original = getattr(SharedPrefixGenerator, name)
        monkeypatch.setattr(SharedPrefixGenerator, name,
                            lambda self, *args, _name=name, _original=original: calls.append(_name) or _original(self, *args))
    monkeypatch.setattr(answering, "all_gather_objects", lambda context, count: [count, 8])  # the other rank: 8
    answerer = QuestionAnswerer(eval_model, SETTINGS, torch.device("cpu"), sync=DistContext(rank=0, world_size=2))
    assert answerer.generator.synced_gpus
    answerer.generator.synced_gpus = False  # no peer process to step with
    answers = {item.key: tuple(row) for batch, ids in answerer.answer_ids(items, prompts, 8)
               for item, row in zip(batch, ids)}
    assert answers == reference  # the 3 repeated batches' answers are dropped
    assert calls == ["fill", "generate_ids_after"] * 8  # 5 own batches (those with no new image refill one) + 3
    calls.clear()
    assert list(answerer.answer_ids([], [], 8, filler=(items[0], prompts[0]))) == []  # a rank with nothing to ask
    assert calls == ["fill", "generate_ids_after"] * 8


def eval_args(toy, run, name, output_dir, **overrides) -> EvalArguments:
    folder = BENCHMARKS[name].folder if name in BENCHMARKS else "pope"  # generic: LLaVA's POPE question file
    values = dict(benchmark=name, model_path=run, data=os.path.join(toy["eval"], folder),
                  output_dir=str(output_dir), max_new_tokens=6, batch_size=8, device="cpu")
    if name == "generic":  # LLaVA's POPE question file: all three splits in one file
        values.update(data=None, question_file=os.path.join(toy["eval"], "pope", "llava_pope_test.jsonl"),
                      image_folder=os.path.join(toy["eval"], "pope", "val2014"))
    values.update(overrides)
    return EvalArguments(**values)


def file_bytes(summary: dict) -> dict:
    paths = {}
    for path in summary["files"].values():
        if os.path.isdir(path):
            paths.update({os.path.join(path, name): None for name in sorted(os.listdir(path))})
        else:
            paths[path] = None
    return {os.path.basename(path): open(path, "rb").read() for path in paths}


@pytest.fixture(scope="module")
def per_question_outputs(toy, runs, tmp_path_factory):
    """{benchmark: summary} of `llava-ln eval --share_image_prefix false`, the reference for the files."""
    root = tmp_path_factory.mktemp("per_question")
    return {name: runner.run_eval(eval_args(toy, runs["qwen2"], name, root / name, share_image_prefix=False,
                                            answers_format="llava"))
            for name in ("pope", "mme", "generic")}


@pytest.mark.parametrize("name", ["pope", "mme", "generic"])
def test_eval_writes_the_same_files_and_reports_one_fill_per_image(toy, runs, per_question_outputs, tmp_path, name):
    shared = runner.run_eval(eval_args(toy, runs["qwen2"], name, tmp_path, answers_format="llava"))
    reference = per_question_outputs[name]
    assert file_bytes(shared) == file_bytes(reference)  # every official file: order, ids and answers
    images = {"pope": 2, "mme": 8, "generic": 2}[name]
    assert shared["generation"] == {"path": SHARED_PREFIX, "questions": shared["questions"],
                                    "prefix_fills": images, "vision_tower_passes": images}
    assert reference["generation"] == {"path": PER_QUESTION, "questions": shared["questions"],
                                       "prefix_fills": shared["questions"], "vision_tower_passes": shared["questions"]}


def test_a_run_killed_mid_way_resumes_with_the_unanswered_questions(toy, runs, per_question_outputs, tmp_path,
                                                                   monkeypatch):
    original = SharedPrefixGenerator.generate_ids_after
    calls = []

    def killed_after_two_batches(self, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill leaves: the answers of the batches already written
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(SharedPrefixGenerator, "generate_ids_after", killed_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        runner.run_eval(eval_args(toy, runs["qwen2"], "pope", tmp_path, answers_format="llava"))
    assert len(answer_store.read_answers(str(tmp_path))) == 16  # two batches of 8
    monkeypatch.setattr(SharedPrefixGenerator, "generate_ids_after", original)

    resumed = runner.run_eval(eval_args(toy, runs["qwen2"], "pope", tmp_path, answers_format="llava"))
    assert resumed["reused_answers"] == 16 and resumed["generated_answers"] == 20
    # The first image's last 2 questions and the second image's 18: each image filled once more.
    assert resumed["generation"] == {"path": SHARED_PREFIX, "questions": 20, "prefix_fills": 2,
                                     "vision_tower_passes": 2}
    assert file_bytes(resumed) == file_bytes(per_question_outputs["pope"])


def test_beam_search_falls_back_to_the_per_question_path_and_says_why(toy, runs, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="llava_ln.evaluation.answering"):
        summary = runner.run_eval(eval_args(toy, runs["llama"], "mme", tmp_path, num_beams=2, max_new_tokens=3))
    assert summary["generation"]["path"] == PER_QUESTION and summary["generation"]["prefix_fills"] == 16
    assert "image prefixes cannot be shared with --num_beams 2" in caplog.text


def test_prompts_ending_with_the_image_plain_template_are_answered_question_by_question(toy, runs, caplog):
    """LLaVA's "plain" (stage 1) template renders the image tags alone: no token follows the image to answer
    from a shared prefix, so the answerer falls back (as stage-1 training's --eval_benchmarks needs)."""
    eval_model = load_eval_model(runs["llama"], torch.device("cpu"), conv_template="plain")
    encoder = PromptEncoder(eval_model.tokenizer, eval_model.template, eval_model.image_token_id,
                            eval_model.num_image_tokens)
    items, prompts = questions(toy, "vqav2", encoder)
    items, prompts = items[:6], prompts[:6]
    assert prompts[0][-1] == eval_model.image_token_id
    reference, _ = answer_ids(eval_model, items, prompts, share=False, batch_size=4)
    with caplog.at_level(logging.WARNING, logger="llava_ln.evaluation.answering"):
        answers, answerer = answer_ids(eval_model, items, prompts, share=True, batch_size=4)
    assert answers == reference and answerer.path == PER_QUESTION
    assert answerer.counts.prefix_fills == 6
    assert "prompts that end with the image (conversation template 'plain')" in caplog.text


def llava_config(text_config) -> SimpleNamespace:
    return SimpleNamespace(config=LlavaConfig(text_config=text_config))


def test_caches_it_cannot_share_are_named():
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    assert unsupported_reason(llava_config(LlamaConfig(**small)), SETTINGS) is None
    assert unsupported_reason(llava_config(MistralConfig(**small, sliding_window=None)), SETTINGS) is None
    reason = unsupported_reason(llava_config(MistralConfig(**small, sliding_window=8)), SETTINGS)
    assert "DynamicSlidingWindowLayer" in reason
    with pytest.raises(LlavaLnError, match="--share_image_prefix false"):
        SharedPrefixGenerator._checked_layers(object(), (1, 20))  # a forward that returned no DynamicCache
