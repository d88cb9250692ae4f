"""Benchmark (not a test): `llava-ln eval` generation throughput at batch size 1 vs 16.

Times AnswerGenerator (left-padded batched greedy generation, the code `llava-ln eval` runs)
over the same VQAv2-format questions at each batch size, after one warm-up batch, and checks
that every batch size gives the same answers.

    python bench/generation_throughput.py --toy_dir DIR          # `llava-ln toy --out DIR`: toy backbones + toy VQAv2
    python bench/generation_throughput.py --model_path CKPT --data VQAV2_DIR [--split val2014]
    python bench/generation_throughput.py                        # tiny random backbones (tests/support/tiny.py), synthetic set

With --toy_dir and no --model_path, the model is the toy LLM + toy CLIP tower with an untrained
connector (a stage-1 run folder, if one is passed as --model_path, is better).
Options: --questions 64 --batch_sizes 1,16 --max_new_tokens 16 --threads N --device cpu|cuda --dtype auto
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "support"))

import torch  # noqa: E402

from llava_ln.evaluation.benchmarks import vqav2  # noqa: E402
from llava_ln.evaluation.benchmarks.common import (
    SHORT_ANSWER_SUFFIX,  # noqa: E402
    DataFlags,  # noqa: E402
)
from llava_ln.evaluation.generation import (  # noqa: E402
    AnswerGenerator,
    GenerationSettings,
    PromptEncoder,  # noqa: E402
)
from llava_ln.evaluation.model_loading import load_eval_model, resolve_dtype  # noqa: E402


def toy_vqav2_folder(toy_dir: str) -> str:
    """The toy world's VQAv2 folder (official file names, see DIR/eval/README.md)."""
    folder = os.path.join(toy_dir, "eval", "vqav2")
    if not os.path.isdir(folder):
        raise SystemExit(f"no {folder}: write a toy world first (llava-ln toy --out {toy_dir})")
    return folder


def build_untrained_run(llm: str, vision: str, directory: str) -> str:
    from eval_helpers import make_run_folder

    # Connector-only, random connector: what an untrained stage-1 model answers.
    return make_run_folder(directory, llm, vision, tune_mode="connector", scale=0.02)


def setup(args, workdir: str) -> tuple[str, str, str, str]:
    """(model_path, vqav2 folder, split, description)."""
    if args.model_path and args.data:
        return args.model_path, args.data, args.split, f"checkpoint {args.model_path}"
    if args.toy_dir:
        data = args.data or toy_vqav2_folder(args.toy_dir)
        model = args.model_path or build_untrained_run(os.path.join(args.toy_dir, "llm"),
                                                       os.path.join(args.toy_dir, "vision"), os.path.join(workdir, "run"))
        return model, data, args.split, f"toy backbones from {args.toy_dir}" + ("" if args.model_path else " (untrained connector)")
    from eval_helpers import make_run_folder, write_vqav2
    from tiny import make_llm_dir, make_vision_dir
    llm, vision = make_llm_dir(workdir, "llama"), make_vision_dir(workdir, "clip")
    model = make_run_folder(os.path.join(workdir, "run"), llm, vision)
    data = write_vqav2(os.path.join(workdir, "vqav2"), images=max(1, args.questions // 2))
    return model, data, "val2014", "tiny random backbones (tests/support/tiny.py)"


def time_batch_size(generator, prompts, images, batch_size: int) -> tuple[float, list]:
    generator.generate(prompts[:batch_size], images[:batch_size])  # warm-up (allocations, kernel choice)
    if generator.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    answers = []
    for begin in range(0, len(prompts), batch_size):
        answers += generator.generate(prompts[begin:begin + batch_size], images[begin:begin + batch_size])
    if generator.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy_dir")
    parser.add_argument("--model_path")
    parser.add_argument("--data")
    parser.add_argument("--split", default="val2014")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--batch_sizes", default="1,16")
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on a GPU, else float32), float32, bfloat16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    with tempfile.TemporaryDirectory() as workdir:
        model_path, data, split, description = setup(args, workdir)
        sources = vqav2.locate(DataFlags(data=data, split=split))
        items = vqav2.read_items(sources, SHORT_ANSWER_SUFFIX)[: args.questions]
        eval_model = load_eval_model(model_path, device, dtype)
        encoder = PromptEncoder(eval_model.tokenizer, eval_model.template, eval_model.image_token_id,
                                eval_model.num_image_tokens)
        generator = AnswerGenerator(eval_model, GenerationSettings(max_new_tokens=args.max_new_tokens), device)
        prompts = [encoder.encode(item.prompt) for item in items]
        images = [item.image for item in items]
        print(f"model: {description}; {len(items)} questions from {sources['questions']}")
        name = f"{device} {torch.cuda.get_device_name(device)}" if device.type == "cuda" else str(device)
        print(f"device: {name} ({dtype}), torch threads: {torch.get_num_threads()}, "
              f"load average: {os.getloadavg()[0]:.2f}, max_new_tokens: {args.max_new_tokens}, "
              f"prompt tokens: {min(map(len, prompts))}-{max(map(len, prompts))}")
        reference = None
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            seconds, answers = time_batch_size(generator, prompts, images, batch_size)
            tokens = sum(len(eval_model.tokenizer.encode(a, add_special_tokens=False)) + 1 for a in answers)
            same = "reference" if reference is None else ("same answers" if answers == reference else "ANSWERS DIFFER")
            reference = reference or answers
            print(f"batch {batch_size:>3}: {seconds:7.2f} s  {len(items) / seconds:8.2f} questions/s  "
                  f"{tokens / seconds:8.1f} answer tokens/s  ({same})")


if __name__ == "__main__":
    main()
