"""One `llava-ln eval` run: find the questions, skip the answered ones, generate the rest, write official files.

Every rank reads the benchmark files (deterministic, so all agree on the item list); rank 0
alone checks the answer folder and tells the others which items are still open; each rank
answers its share (whole images with --share_image_prefix, the default; every world_size-th
question without), appending answers batch by batch; rank 0 gathers the new answers in-process,
writes the official files and, with --score, scores them. The summary's "generation" says which
path answered and what it cost: questions, prefix fills and images through the vision tower.
"""
import os
import shutil
import sys

import torch

from llava_ln.core.distributed import DistContext, broadcast_object, distributed_session, gather_objects
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import check_flag_domains
from llava_ln.core.folder_lock import owned_folder
from llava_ln.core.paths import refuse_overlap
from llava_ln.evaluation import answer_store
from llava_ln.evaluation.answering import QuestionAnswerer, rank_share
from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.benchmarks.common import DataFlags
from llava_ln.evaluation.benchmarks.registry import get_benchmark
from llava_ln.evaluation.generation import (
    GenerationCounts,
    GenerationSettings,
    PromptEncoder,
    check_question_texts,
    warn_past_context,
)
from llava_ln.evaluation.llava_answers import ANSWERS_FILE, write_llava_answers
from llava_ln.evaluation.model_loading import load_eval_model, resolve_dtype, resolve_format
from llava_ln.scoring.dispatch import score


def generation_settings(args: EvalArguments) -> GenerationSettings:
    if args.top_p is not None and not args.temperature > 0:  # not silently greedy: the flag would do nothing
        raise LlavaLnError(f"--top_p {args.top_p} applies only to sampling: add --temperature > 0, or leave --top_p "
                           "out for greedy decoding")
    return GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_p=args.top_p, num_beams=args.num_beams)


def _fingerprint(model_path: str) -> dict:
    """Identifies the checkpoint's contents cheaply: a retrained folder gets a new manifest/config."""
    for name in ("manifest.json", "config.json"):
        path = os.path.join(model_path, name)
        if os.path.isfile(path):
            stat = os.stat(path)
            return {"file": name, "mtime_ns": stat.st_mtime_ns, "size": stat.st_size}
    return {}


def run_settings(args, sources, prompt, conv_template, aspect, dtype, generation) -> dict:
    """Everything that changes an answer; answers produced under other settings are never reused."""
    return {
        "benchmark": args.benchmark, "model_path": os.path.abspath(args.model_path),
        "model_fingerprint": _fingerprint(args.model_path), "sources": sources, "prompt": prompt,
        "conv_template": conv_template, "image_aspect_ratio": aspect, "dtype": str(dtype).replace("torch.", ""),
        "max_new_tokens": generation.max_new_tokens, "temperature": generation.temperature,
        "top_p": generation.top_p, "num_beams": generation.num_beams,
        "seed": args.seed if generation.temperature > 0 else None,
        **({"bits": args.bits} if args.bits != 16 else {}),  # absent at 16: earlier answer folders stay valid
    }


def _on_main(world: DistContext, task):
    """Run task on rank 0 and hand its result (or its error) to every rank."""
    outcome = None
    if world.is_main:
        try:
            outcome = {"value": task()}
        except LlavaLnError as err:
            outcome = {"error": str(err)}
    outcome = broadcast_object(world, outcome)
    if "error" in outcome:
        raise LlavaLnError(outcome["error"])
    return outcome["value"]


def _answered(args: EvalArguments, settings: dict, items: list) -> dict:
    if args.overwrite:
        shutil.rmtree(answer_store.answers_dir(args.output_dir), ignore_errors=True)
    answer_store.check_settings(args.output_dir, settings)
    return answer_store.reusable_answers(args.output_dir, items)


def _generate(args, world, items, generation, conv_template, aspect, dtype) -> dict:
    """This rank's answers, appended to its part file batch by batch, and what producing them cost."""
    from tqdm import tqdm

    if not items:
        return {"answers": {}, "path": None, "counts": GenerationCounts().as_dict()}
    if generation.temperature > 0:
        torch.manual_seed(args.seed + world.rank)
    eval_model = load_eval_model(args.model_path, world.device, dtype, conv_template, aspect, args.attn_implementation,
                                 args.max_image_pixels, bits=args.bits)
    encoder = PromptEncoder(eval_model.tokenizer, eval_model.template, eval_model.image_token_id,
                            eval_model.num_image_tokens)
    answerer = QuestionAnswerer(eval_model, generation, world.device, share_image_prefix=args.share_image_prefix)
    prompts = [encoder.encode(item.prompt, where=f"question {item.key}") for item in items]
    warn_past_context(eval_model.model, [item.key for item in items], prompts, generation.max_new_tokens)
    answers = {}
    bar = tqdm(total=len(items), desc=f"{args.benchmark} rank 0/{world.world_size}", unit="q",
               disable=not world.is_main, file=sys.stderr)
    with answer_store.AnswerWriter(args.output_dir, world.rank) as writer:
        for batch, texts in answerer.answer(items, prompts, args.batch_size):
            writer.append([answer_store.answer_record(item, text) for item, text in zip(batch, texts)])
            answers.update((item.key, text) for item, text in zip(batch, texts))
            bar.update(len(batch))
    bar.close()
    return {"answers": answers, "path": answerer.path, "counts": answerer.counts.as_dict()}


def _generation_summary(parts: list) -> dict:
    """The path taken and the summed counts of every rank that generated."""
    totals = GenerationCounts()
    for part in parts:
        totals.add(GenerationCounts(**part["counts"]))
    paths = sorted({part["path"] for part in parts if part["path"]})
    return {"path": ",".join(paths) or None, **totals.as_dict()}


def run_eval(args: EvalArguments) -> dict | None:
    """Run the evaluation; returns the summary on rank 0 and None on the other ranks."""
    check_flag_domains(args)  # also for EvalArguments built in code (compare, the demo), not parsed from a command line
    benchmark = get_benchmark(args.benchmark)
    if args.score and not benchmark.scored:  # refused before hours of answers, not after
        raise LlavaLnError(f"--score: --benchmark {args.benchmark} has no ground truth to score; run without it and "
                           f"score {os.path.join(args.output_dir, ANSWERS_FILE)} with the benchmark's own tools")
    generation = generation_settings(args)
    flags = DataFlags(data=args.data, question_file=args.question_file, annotation_file=args.annotation_file,
                      image_folder=args.image_folder, split=args.split, upload_question_file=args.upload_question_file)
    with distributed_session(args.device, local_rank_flag=args.local_rank, backend="gloo") as world, \
            owned_folder(world, args.output_dir, "eval"):  # one eval per --output_dir (core.folder_lock)
        # Answers and official files go into --output_dir: never into the model's or the benchmark's own folder.
        refuse_overlap(args.output_dir, [("--model_path", args.model_path), ("--data", args.data)], "llava-ln eval",
                       allowed={"*": ("lies inside", "contains")})
        sources = benchmark.locate(flags)
        prompt = benchmark.default_prompt if args.prompt is None else args.prompt
        items = benchmark.read_items(sources, prompt)
        check_question_texts(items)  # a question that cannot be asked stops eval before the model loads
        conv_template, aspect = resolve_format(args.model_path, args.conv_template, args.image_aspect_ratio)
        dtype = resolve_dtype(args.dtype, world.device)
        settings = run_settings(args, sources, prompt, conv_template, aspect, dtype, generation)
        done = _on_main(world, lambda: _answered(args, settings, items))
        todo = [item for item in items if item.key not in done]
        mine = rank_share(todo, world, args.share_image_prefix)
        gathered = gather_objects(world, _generate(args, world, mine, generation, conv_template, aspect, dtype))
        if not world.is_main:
            return None
        answers = dict(done)
        for part in gathered:
            answers.update(part["answers"])
        missing = [item.key for item in items if item.key not in answers]
        if missing:
            raise LlavaLnError(f"{len(missing)} question(s) got no answer (first: {missing[0]})")
        outputs = benchmark.write_outputs(sources, items, answers, args.output_dir)
        if args.answers_format == "llava" or args.benchmark == "generic":
            outputs["files"].update(write_llava_answers(args.benchmark, sources, items, answers, args.output_dir,
                                                        args.model_path))
        summary = {"benchmark": args.benchmark, "questions": len(items), "reused_answers": len(items) - len(todo),
                   "generated_answers": len(todo), "generation": _generation_summary(gathered),
                   "files": outputs["files"], "counts": outputs["counts"]}
        if outputs["score"] is not None:
            summary["score_command"] = "llava-ln score " + " ".join(_quoted(outputs["score"].command_line()))
        if args.score:
            summary["scores"] = score(outputs["score"])
        return summary


def _quoted(argv: list) -> list:
    import shlex

    return [shlex.quote(part) for part in argv]
