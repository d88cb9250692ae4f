"""Evaluation during training (--eval_benchmarks, --eval_steps, --eval_limit): a hook the training loop calls.

train.py builds a TrainingEvaluator and hands it to the loop as a hook (training/ sits below this
package and never imports it). Every --eval_steps optimizer steps, and after the last one, each
benchmark's fixed subset (subset_scores.evenly_spaced) is answered by the model being trained,
in place: eval mode, the training precision's autocast, the same prompt encoding and batched
greedy generation as `llava-ln eval` (each image's prefix filled once, answering.QuestionAnswerer),
then back to train mode. All ranks take part: each answers its share of the images, rank 0 gathers
the answers, scores them (subset_scores.score_subset) and hands the result, or the error, back to
every rank, so a scoring failure stops all ranks together rather than leaving the others waiting in
the next collective. Under ZeRO-3 the parameters are gathered layer by layer during every forward,
so every rank runs the same forwards: the same number of batches (a rank with fewer repeats one,
whose answers are dropped), one prefix fill per batch, and generate() keeps the ranks in step
(synced_gpus) until the longest answer is done.

The scores go to log.jsonl as {"step", "eval": {"pope": 81.2, "mme": 512.0, ...}} and to
TensorBoard / W&B as eval/<benchmark>, with one progress line per evaluation.
"""
import contextlib
import os

import torch
from torch import nn

from llava_ln.core.benchmarks import LEARNING_CURVE_ANSWER_LENGTHS, get_benchmark_spec
from llava_ln.core.distributed import DistContext, broadcast_object, gather_objects
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.dataset import DataComponents
from llava_ln.data.images import ImageLoader
from llava_ln.evaluation.answering import QuestionAnswerer, rank_share
from llava_ln.evaluation.benchmarks.common import DataFlags
from llava_ln.evaluation.benchmarks.registry import get_benchmark
from llava_ln.evaluation.generation import GenerationSettings, PromptEncoder, check_question_texts
from llava_ln.evaluation.model_loading import EvalModel
from llava_ln.evaluation.subset_scores import evenly_spaced, headline, score_subset
from llava_ln.model.parts import unwrap
from llava_ln.training.args import TrainingArguments, steps_from
from llava_ln.training.memory.policy import Precision


class TrainingEvaluator:
    """The loop's evaluation hook (it implements training.loop.StepHook: name, due, run)."""

    name: str = "eval"  # its scores go to log.jsonl under "eval"

    def __init__(self, benchmarks: list[str], *, data_root: str, limit: int, every: int, context: DistContext,
                 eval_model: EvalModel, autocast_dtype: torch.dtype | None = None, batch_size: int = 16,
                 max_new_tokens: int = 0, synced_gpus: bool = False):
        """
        Args:
            benchmarks: the benchmark names (--eval_benchmarks), each under its folder of data_root.
            data_root: the evaluation root (--eval_data).
            limit: questions per benchmark, an evenly spaced fixed subset (--eval_limit).
            every: evaluate every this many optimizer steps (0: only after the last).
            context: this process's rank and world size; every rank answers a share.
            eval_model: the model being trained, with its tokenizer, template and image loader.
            autocast_dtype: the training precision's autocast dtype, or None (fp32).
            batch_size: questions per generate() call.
            max_new_tokens: 0: the benchmark's own (short answers or captions).
            synced_gpus: ZeRO-3 on several ranks: every rank runs the same batches, in step.
        """
        self.every = every
        self.context = context
        self.eval_model = eval_model
        self.autocast_dtype = autocast_dtype
        self.batch_size = batch_size
        self.synced_gpus = synced_gpus
        self.encoder = PromptEncoder(eval_model.tokenizer, eval_model.template, eval_model.image_token_id,
                                     eval_model.num_image_tokens)
        self.tasks = []  # (name, benchmark, sources, subset, generation settings), read once
        for name in benchmarks:
            # The folder under --eval_data is the benchmark's in LLaVA's playground/data/eval layout.
            folder = get_benchmark_spec(name, "--eval_benchmarks").folder
            benchmark = get_benchmark(name)
            sources = benchmark.locate(DataFlags(data=os.path.join(data_root, folder)))
            subset = evenly_spaced(benchmark.read_items(sources, benchmark.default_prompt), limit, name)
            check_question_texts(subset)  # before the first step, not at the first evaluation
            tokens = max_new_tokens or LEARNING_CURVE_ANSWER_LENGTHS.of(name)
            self.tasks.append((name, sources, subset, GenerationSettings(max_new_tokens=tokens)))

    def due(self, step: int, total_steps: int) -> bool:
        return step == total_steps or (self.every > 0 and step % self.every == 0)

    def run(self, step: int) -> dict:
        """{benchmark: headline score, "<benchmark>_items": n} on rank 0 (the same on every rank)."""
        model = self.eval_model.model
        was_training = model.training
        model.eval()
        try:
            mine = {name: self._answer(subset, settings) for name, _, subset, settings in self.tasks}
        finally:
            model.train(was_training)
        gathered = gather_objects(self.context, mine)
        outcome = None
        if self.context.is_main:
            try:
                outcome = {"scores": self._score(gathered)}
            except LlavaLnError as err:
                outcome = {"error": f"evaluation at step {step}: {err}"}
        outcome = broadcast_object(self.context, outcome)
        if "error" in outcome:
            raise LlavaLnError(outcome["error"])
        return outcome["scores"]

    def _answer(self, items: list, settings: GenerationSettings) -> dict:
        answerer = QuestionAnswerer(self.eval_model, settings, self.context.device,
                                    sync=self.context if self.synced_gpus else None)
        share = rank_share(items, self.context, share_image_prefix=True)
        prompts = [self.encoder.encode(item.prompt, f"question {item.key}") for item in share]
        filler = (items[0], self.encoder.encode(items[0].prompt, f"question {items[0].key}")) if items else None
        answers = {}
        autocast = (torch.autocast(self.context.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else contextlib.nullcontext())
        with autocast:
            for batch, texts in answerer.answer(share, prompts, self.batch_size, filler=filler):
                answers.update((item.key, text) for item, text in zip(batch, texts))
        return answers

    def _score(self, gathered: list) -> dict:
        scores = {}
        for name, sources, subset, _ in self.tasks:
            answers = {}
            for part in gathered:
                answers.update(part[name])
            scores[name] = headline(name, score_subset(name, sources, subset, answers))
            scores[f"{name}_items"] = len(subset)
        return scores


def in_training_hooks(args: TrainingArguments, context: DistContext, model: nn.Module, *, data: DataComponents,
                      image_aspect_ratio: str, precision: Precision, total_steps: int,
                      zero_stage: int = 0) -> tuple[TrainingEvaluator, ...]:
    """The loop's hooks for these training flags: the evaluator, or nothing without --eval_benchmarks.

    data: the training data components (tokenizer, template, image processor, image token), so the
    questions are asked exactly as training formats its prompts.
    """
    names = [name.strip() for name in (args.eval_benchmarks or "").split(",") if name.strip()]
    if not names:
        return ()

    eval_model = EvalModel(model=unwrap(model), tokenizer=data.tokenizer, template=data.template,
                           image_loader=ImageLoader(data.image_processor, image_aspect_ratio),
                           conv_template=getattr(data.template, "name", ""), image_aspect_ratio=image_aspect_ratio)
    return (TrainingEvaluator(names, data_root=args.eval_data, limit=args.eval_limit,
                              every=steps_from(args.eval_steps, total_steps), context=context, eval_model=eval_model,
                              autocast_dtype=precision.compute_dtype if precision.autocast else None,
                              batch_size=args.eval_batch_size, max_new_tokens=args.eval_max_new_tokens,
                              synced_gpus=zero_stage == 3 and context.world_size > 1),)
