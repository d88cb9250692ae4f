"""Benchmark (not a test): `llava-ln eval` questions per second, per-question path vs shared image prefixes.

    python -m bench.generation_throughput                      # both geometries, POPE, VQAv2 and MME
    python -m bench.generation_throughput --geometries llava15 --benchmarks pope --repeats 5
    python -m bench.generation_throughput --json_out bench/results/cpu_generation_throughput.jsonl

Both paths answer the same questions with the code `llava-ln eval` runs (answering.QuestionAnswerer,
batch 16, greedy, float32), interleaved in one process: per-question, shared, per-question, shared,
... (--repeats pairs) after a warm-up batch of each, so a busy machine slows both alike. Every run's
answers (token ids) must equal the first per-question run's; a difference fails the benchmark.
Another process can only add time, so questions/s come from each path's fastest run and the
speedup is their ratio; the median and range of the pairs' ratios (each pair back to back) show the noise.

Geometries (the prompt is always the vicuna_v1 template: LLaVA-1.5's system prompt, `USER: <image>\\n`,
the question, its answer-format line, ` ASSISTANT:`):
  toy      the toy world's own backbones (pretrained LLM, 16 image tokens) with a new, untrained
           connector; answers end where the model stops (at most --toy_max_new_tokens)
  llava15  LLaVA-1.5's 576 image tokens: a CLIP tower at 336 px, patch 14, and a LLaMA LLM, both
           randomly initialised at the sizes below, the toy tokenizer; a random LLM never stops, so
           every answer is --llava15_max_new_tokens tokens (LLaVA-1.5 answers these in one to three)
Questions: toy-world eval sets written for the run (llava_ln.toy.generate): POPE's three splits over
--pope_images images (18 questions per image, as POPE asks), VQAv2 with 3 questions per image (as
test-dev averages) over --vqav2_images, MME's yes/no pairs over --mme_pairs per subtask.

Prints one line per (geometry, benchmark) and, with --json_out, appends one JSON object per line:
questions/s of both paths, the speedup, prefix fills and vision-tower images of each path, the load
average before and after, torch threads and versions.
"""
import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import torch

from llava_ln.core.benchmarks import BENCHMARKS
from llava_ln.data.images import ImageLoader, load_image_processor
from llava_ln.data.templates import get_template
from llava_ln.evaluation.answering import PER_QUESTION, SHARED_PREFIX, QuestionAnswerer
from llava_ln.evaluation.benchmarks.common import DataFlags
from llava_ln.evaluation.benchmarks.registry import get_benchmark
from llava_ln.evaluation.generation import GenerationSettings, PromptEncoder
from llava_ln.evaluation.model_loading import EvalModel
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.toy.backbones.spec import CLIP_MEAN, CLIP_STD, LLM_FILES, VISION_CONFIG, install_backbones
from llava_ln.toy.generate import ToySizes, write_mme, write_pope, write_vqa

TEMPLATE = "vicuna_v1"
LLAVA15_IMAGE_SIZE, LLAVA15_PATCH = 336, 14  # CLIP ViT-L/14-336: 24 x 24 = 576 image tokens
PATHS = (PER_QUESTION, SHARED_PREFIX)


def write_questions(root: str, args) -> str:
    """The toy eval sets the benchmark asks (root/eval/...); returns root."""
    sizes = ToySizes(pope_images=args.pope_images, vqa_images=args.vqav2_images, vqa_questions_per_image=3,
                     mme_pairs_per_subtask=args.mme_pairs)
    write_pope(root, args.seed, sizes)
    write_vqa(root, args.seed, sizes)
    write_mme(root, args.seed, sizes)
    return root


def llava15_backbones(toy_llm: str, root: str, hidden: int, layers: int, seed: int) -> tuple[str, str]:
    """Random LLaMA (toy tokenizer) and random CLIP tower at 336 px, patch 14, saved under root."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(toy_llm)
    llm_dir, vision_dir = os.path.join(root, "llava15_llm"), os.path.join(root, "llava15_vision")
    llm_config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=3 * hidden,
                             num_hidden_layers=layers, num_attention_heads=max(1, hidden // 32),
                             max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(llm_config).save_pretrained(llm_dir)
    for name in LLM_FILES:
        if name.startswith(("tokenizer", "special_tokens")):
            with open(os.path.join(toy_llm, name), "rb") as source, open(os.path.join(llm_dir, name), "wb") as target:
                target.write(source.read())
    vision_config = CLIPVisionConfig(**{**VISION_CONFIG, "image_size": LLAVA15_IMAGE_SIZE, "patch_size": LLAVA15_PATCH})
    CLIPVisionModel(vision_config).save_pretrained(vision_dir)
    CLIPImageProcessor(size={"shortest_edge": LLAVA15_IMAGE_SIZE},
                       crop_size={"height": LLAVA15_IMAGE_SIZE, "width": LLAVA15_IMAGE_SIZE},
                       image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True).save_pretrained(vision_dir)
    return llm_dir, vision_dir


def eval_model_of(llm_dir: str, vision_dir: str, seed: int) -> EvalModel:
    """The composed model as `llava-ln eval` holds it, with a new (untrained) connector."""
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(llm_dir)
    model, _ = build_mllm(ModelArguments(model_name_or_path=llm_dir, vision_tower=vision_dir,
                                         attn_implementation="sdpa"), tokenizer)
    return EvalModel(model=model.eval(), tokenizer=tokenizer, template=get_template(TEMPLATE, tokenizer),
                     image_loader=ImageLoader(load_image_processor(vision_dir), "pad"), conv_template=TEMPLATE,
                     image_aspect_ratio="pad")


def run_path(eval_model, settings, share: bool, items, prompts, batch_size: int) -> tuple[float, dict, dict]:
    """(seconds, {key: answer token ids}, counts) for one pass over the questions."""
    answerer = QuestionAnswerer(eval_model, settings, torch.device("cpu"), share_image_prefix=share)
    start = time.perf_counter()
    answers = {}
    for batch, ids in answerer.answer_ids(items, prompts, batch_size):
        answers.update((item.key, tuple(row)) for item, row in zip(batch, ids))
    return time.perf_counter() - start, answers, answerer.counts.as_dict()


def measure(eval_model, settings, name: str, eval_root: str, args) -> dict:
    benchmark = get_benchmark(name)
    sources = benchmark.locate(DataFlags(data=os.path.join(eval_root, BENCHMARKS[name].folder)))
    items = benchmark.read_items(sources, benchmark.default_prompt)
    encoder = PromptEncoder(eval_model.tokenizer, eval_model.template, eval_model.image_token_id,
                            eval_model.num_image_tokens)
    prompts = [encoder.encode(item.prompt) for item in items]
    for share in (False, True):  # warm-up: allocations, kernel choice
        run_path(eval_model, settings, share, items[:args.batch_size], prompts[:args.batch_size], args.batch_size)
    load_before = os.getloadavg()[0]
    seconds, counts, reference = {path: [] for path in PATHS}, {}, None
    for _ in range(args.repeats):
        for path in PATHS:
            elapsed, answers, counts[path] = run_path(eval_model, settings, path == SHARED_PREFIX, items, prompts,
                                                      args.batch_size)
            reference = reference or answers
            differing = sum(answers[key] != reference[key] for key in reference)
            if differing:
                raise SystemExit(f"{name}: {differing} of {len(items)} answers differ between the paths")
            seconds[path].append(elapsed)
    ratios = [a / b for a, b in zip(seconds[PER_QUESTION], seconds[SHARED_PREFIX])]
    return {
        "benchmark": name, "questions": len(items), "images": len({item.image for item in items}),
        "prompt_tokens": [min(map(len, prompts)), max(map(len, prompts))],
        "answer_tokens_mean": round(statistics.mean(map(len, reference.values())), 2),
        **{f"{path}_questions_per_s": round(len(items) / min(seconds[path]), 2) for path in PATHS},
        "speedup": round(min(seconds[PER_QUESTION]) / min(seconds[SHARED_PREFIX]), 2),
        "speedup_paired_median": round(statistics.median(ratios), 2),
        "speedup_paired_range": [round(min(ratios), 2), round(max(ratios), 2)],
        "identical_answers": True, "counts": counts, "seconds": seconds,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometries", default="toy,llava15")
    parser.add_argument("--benchmarks", default="pope,vqav2,mme")
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs (per-question, shared) per benchmark")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--pope_images", type=int, default=3)
    parser.add_argument("--vqav2_images", type=int, default=12)
    parser.add_argument("--mme_pairs", type=int, default=5, help="images per MME subtask (4 subtasks, 2 questions each)")
    parser.add_argument("--toy_max_new_tokens", type=int, default=8)
    parser.add_argument("--llava15_max_new_tokens", type=int, default=3)
    parser.add_argument("--llava15_hidden", type=int, default=256)
    parser.add_argument("--llava15_layers", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json_out", help="append one JSON object per (geometry, benchmark) to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    machine = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
               "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    print(f"# CPU, float32, batch {args.batch_size}, {args.repeats} interleaved pairs; {machine}")
    with tempfile.TemporaryDirectory() as root:
        eval_root = os.path.join(write_questions(root, args), "eval")
        toy_llm, toy_vision = install_backbones(root)
        for geometry in args.geometries.split(","):
            if geometry == "toy":
                eval_model = eval_model_of(toy_llm, toy_vision, args.seed)
                settings = GenerationSettings(max_new_tokens=args.toy_max_new_tokens)
            elif geometry == "llava15":
                llm, vision = llava15_backbones(toy_llm, root, args.llava15_hidden, args.llava15_layers, args.seed)
                eval_model = eval_model_of(llm, vision, args.seed)
                settings = GenerationSettings(max_new_tokens=args.llava15_max_new_tokens)
            else:
                raise SystemExit(f"--geometries: {geometry!r} is not toy or llava15")
            for name in args.benchmarks.split(","):
                result = {"geometry": geometry, "image_tokens": eval_model.num_image_tokens,
                          **measure(eval_model, settings, name, eval_root, args), "machine": machine}
                print(f"{geometry:8} {name:6} {result['questions']:4} q on {result['images']:3} images, "
                      f"prompt {result['prompt_tokens'][1]} tokens: per-question "
                      f"{result[f'{PER_QUESTION}_questions_per_s']:8.2f} q/s, shared prefix "
                      f"{result[f'{SHARED_PREFIX}_questions_per_s']:8.2f} q/s, speedup {result['speedup']:5.2f}x "
                      f"(pairs: median {result['speedup_paired_median']}, {result['speedup_paired_range'][0]}-"
                      f"{result['speedup_paired_range'][1]}), identical answers; "
                      f"fills {result['counts'][PER_QUESTION]['prefix_fills']} -> "
                      f"{result['counts'][SHARED_PREFIX]['prefix_fills']}, load {result['load_average_1min']}",
                      flush=True)
                if args.json_out:
                    with open(args.json_out, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
