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

from llava_ln.core.distributed import broadcast_object, gather_objects
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.images import ImageLoader
from llava_ln.evaluation.answering import QuestionAnswerer, rank_share
from llava_ln.evaluation.benchmarks.common import DataFlags
from llava_ln.evaluation.benchmarks.registry import get_benchmark
from llava_ln.evaluation.generation import GenerationSettings, PromptEncoder
from llava_ln.evaluation.model_loading import EvalModel
from llava_ln.evaluation.subset_scores import evenly_spaced, headline, score_subset
from llava_ln.model.parts import unwrap

# Where each benchmark lives under an evaluation root: LLaVA's playground/data/eval layout (the toy
# world's eval/ folder has the same).
BENCHMARK_FOLDERS = {"vqav2": "vqav2", "pope": "pope", "mme": "MME", "coco_caption": "coco_caption",
                     "flickr30k": "flickr30k"}
SHORT_ANSWER_TOKENS, CAPTION_TOKENS = 16, 64


class TrainingEvaluator:
    name = "eval"

    def __init__(self, benchmarks: list, data_root: str, limit: int, every: int, context, eval_model: EvalModel,
                 autocast_dtype=None, batch_size: int = 16, max_new_tokens: int = 0, synced_gpus: bool = False):
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
            benchmark = get_benchmark(name)
            if name not in BENCHMARK_FOLDERS:
                raise LlavaLnError(f"--eval_benchmarks: {name!r} has no folder under --eval_data")
            sources = benchmark.locate(DataFlags(data=os.path.join(data_root, BENCHMARK_FOLDERS[name])))
            subset = evenly_spaced(benchmark.read_items(sources, benchmark.default_prompt), limit, name)
            tokens = max_new_tokens or (SHORT_ANSWER_TOKENS if benchmark.prompt_is_suffix else CAPTION_TOKENS)
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


def in_training_hooks(args, context, model, data, image_aspect_ratio: str, precision, total_steps: int,
                      zero_stage: int = 0) -> tuple:
    """The loop's hooks for these training flags: the evaluator, or nothing without --eval_benchmarks.

    data: the training data components (tokenizer, template, image processor, image token), so the
    questions are asked exactly as training formats its prompts.
    """
    names = [name.strip() for name in (args.eval_benchmarks or "").split(",") if name.strip()]
    if not names:
        return ()
    from llava_ln.training.args import steps_from

    eval_model = EvalModel(model=unwrap(model), tokenizer=data.tokenizer, template=data.template,
                           image_loader=ImageLoader(data.image_processor, image_aspect_ratio),
                           conv_template=getattr(data.template, "name", ""), image_aspect_ratio=image_aspect_ratio)
    return (TrainingEvaluator(names, args.eval_data, args.eval_limit, steps_from(args.eval_steps, total_steps),
                              context, eval_model,
                              autocast_dtype=precision.compute_dtype if precision.autocast else None,
                              batch_size=args.eval_batch_size, max_new_tokens=args.eval_max_new_tokens,
                              synced_gpus=zero_stage == 3 and context.world_size > 1),)
