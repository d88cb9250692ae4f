"""Per-rank peak CPU memory of ZeRO-3 stage 2 on 2 ranks against one process: what the model adds.

    python -m bench.zero3_memory [--params 600e6] [--hidden 1536] [--steps 2] [--world_size 2] [--keep DIR]

Builds a LLaMA-shaped LLM of about --params parameters from a config (random weights, written
tensor by tensor as safetensors shards into a temporary folder, with the toy world's tokenizer),
then runs the same short `ln` stage 2 on the toy world four times, each rank recording its own peak
resident memory (VmHWM from /proc/self/status, which is what the kernel counted, file pages of
memory-mapped checkpoints included) into a file:

  zero3        --world_size ranks under the deepspeed launcher, zero_configs/zero3.json, this LLM
  zero3_toy    the same launch with the toy LLM (the fixed cost: Python, torch, DeepSpeed, data)
  single       one plain process (no DeepSpeed), this LLM
  single_toy   the same with the toy LLM

and prints ONE JSON line: the peaks, `zero3_added_gb` (the largest rank's peak minus the toy launch's
rank peak), `single_added_gb` (likewise for one process), their `ratio` (target: at most 0.6 for 2
ranks; a whole model per rank gives about 1) and, per rank, the peak right after the model was built
(`after_build_gb`: the loading itself) and after the strategy's setup (`after_setup_gb`: deepspeed.initialize).
The runs use the recipe's gradient checkpointing, so activations stay small next to the weights. fp32 on a
CPU: the model is 4 bytes per parameter. tests/bench/test_zero3_memory.py runs it at a smaller size and
asserts the ratio loosely. Every run is a child process group of its own, ended (and the temporary folder
removed) however the benchmark ends: a normal end, an error, Ctrl-C or SIGTERM (what a timeout of
core.processes.run_in_group sends first).
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

from llava_ln.core.processes import forward_stop_signals, free_port, run_in_group, scratch_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = "bench.zero3_memory"  # each rank runs this module again, with --child
GB = 1e9
TARGET_RATIO = 0.6


def vm_hwm_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(out_dir: str, argv: list[str]) -> int:
    """One rank of a measured run: train, then write this rank's peaks (also the peak after the build)."""
    import llava_ln.train as train
    from llava_ln.training.strategy import TorchStrategy
    from llava_ln.training.zero.strategy import DeepSpeedStrategy

    peaks = {}

    def measured(function, phase):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            peaks[phase] = vm_hwm_bytes()
            return result
        return wrapper

    # (build_mllm: the entry point before ZeRO-3 was built partitioned; lets the bench measure older trees)
    builder = "build_training_model" if hasattr(train, "build_training_model") else "build_mllm"
    setattr(train, builder, measured(getattr(train, builder), "after_build_bytes"))
    for strategy in (TorchStrategy, DeepSpeedStrategy):
        strategy.setup = measured(strategy.setup, "after_setup_bytes")
    code = train.main(argv)
    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as handle:
        json.dump({"rank": rank, "peak_bytes": vm_hwm_bytes(), **peaks}, handle)
    return code


def llama_config_for(params: float, vocab_size: int, hidden: int = 1536):
    """A LLaMA config of about `params` parameters (intermediate 8/3 hidden, head size 64): layers are added."""
    from transformers import LlamaConfig

    intermediate = 8 * hidden // 3
    per_layer = 4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden
    layers = max(1, round((params - 2 * vocab_size * hidden) / per_layer))
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                       max_position_embeddings=1024, tie_word_embeddings=False)


def _shapes(config) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return {n: tuple(p.shape) for n, p in AutoModelForCausalLM.from_config(config).named_parameters()}


def count_parameters(folder: str) -> int:
    from transformers import AutoConfig

    return sum(math.prod(shape) for shape in _shapes(AutoConfig.from_pretrained(folder)).values())


def write_llm(folder: str, params: float, toy_llm: str, hidden: int = 1536) -> int:
    """A random LLaMA of about `params` parameters, written tensor by tensor (never whole in memory)."""
    import torch
    from transformers import AutoConfig

    from llava_ln.checkpoint.tensors import ShardedTensorWriter

    config = llama_config_for(params, AutoConfig.from_pretrained(toy_llm).vocab_size, hidden)
    shapes = _shapes(config)
    os.makedirs(folder, exist_ok=True)
    config.save_pretrained(folder)
    generator = torch.Generator().manual_seed(0)
    writer = ShardedTensorWriter(folder, "model", max_shard_bytes=500 * 2**20)
    for name, shape in shapes.items():
        value = torch.ones(shape) if "norm" in name else torch.randn(shape, generator=generator) * 0.02
        writer.add(name, value)
    writer.close()
    for file in os.listdir(toy_llm):  # the toy tokenizer, so the toy data trains this model unchanged
        if "token" in file:
            shutil.copy(os.path.join(toy_llm, file), folder)
    return count_parameters(folder)


def train_flags(world: str, llm: str, output_dir: str, steps: int, zero3: bool) -> list[str]:
    flags = ["--model_name_or_path", llm, "--vision_tower", f"{world}/vision",
             "--data_path", f"{world}/data/instruct_conversation.json", "--image_folder", f"{world}/images",
             "--conv_template", "vicuna_v1", "--tune_mode", "ln", "--output_dir", output_dir,
             "--per_device_train_batch_size", "1", "--max_steps", str(steps), "--save_strategy", "no",
             "--model_max_length", "128", "--learning_rate", "1e-4", "--logging_steps", "1", "--seed", "0",
             "--gradient_checkpointing", "true", "--disable_tqdm", "true"]
    return flags + (["--deepspeed", os.path.join(REPO, "zero_configs", "zero3.json")] if zero3 else [])


def measure(name: str, root: str, world: str, llm: str, steps: int, world_size: int) -> dict:
    """Launch one run; return its ranks' peaks (GB) and wall time."""
    out = os.path.join(root, f"rss_{name}")
    os.makedirs(out)
    zero3 = name.startswith("zero3")
    child = ["--child", out, "--", *train_flags(world, llm, os.path.join(root, f"run_{name}"), steps, zero3)]
    if zero3:
        command = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", str(world_size),
                   "--master_port", str(free_port()), "--module", MODULE, *child]
    else:
        command = [sys.executable, "-m", MODULE, *child]
    start = time.time()
    done = run_in_group(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    ranks = []
    for file in sorted(os.listdir(out)):
        with open(os.path.join(out, file), encoding="utf-8") as handle:
            ranks.append(json.load(handle))
    return {"peak_gb": [round(r["peak_bytes"] / GB, 3) for r in ranks],
            "after_build_gb": [round(r["after_build_bytes"] / GB, 3) for r in ranks],
            "after_setup_gb": [round(r["after_setup_bytes"] / GB, 3) for r in ranks],
            "seconds": round(time.time() - start, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=float, default=600e6, help="LLM size in parameters (about).")
    parser.add_argument("--hidden", type=int, default=1536, help="LLM hidden size (blocks are added to reach --params).")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--world_size", type=int, default=2)
    parser.add_argument("--keep", default=None, help="Work in this folder and keep it (default: a temp folder); "
                        "a toy world and an LLM already there are reused.")
    args = parser.parse_args(argv)
    with forward_stop_signals(), scratch_folder("zero3_memory_", keep=args.keep) as root:
        world = os.path.join(root, "world")
        if not os.path.exists(world):
            run_in_group([sys.executable, "-m", "llava_ln.cli", "toy", "--out", world, "--scale", "0.05"], cwd=REPO,
                         check=True, capture_output=True)
        llm = os.path.join(root, "llm")
        params = count_parameters(llm) if os.path.exists(llm) else write_llm(llm, args.params, os.path.join(world, "llm"), args.hidden)
        runs = {}
        for name in ("zero3_toy", "zero3", "single_toy", "single"):
            model = os.path.join(world, "llm") if name.endswith("toy") else llm
            runs[name] = measure(name, root, world, model, args.steps, args.world_size)
    zero3_added = max(runs["zero3"]["peak_gb"]) - max(runs["zero3_toy"]["peak_gb"])
    single_added = runs["single"]["peak_gb"][0] - runs["single_toy"]["peak_gb"][0]
    result = {
        "bench": "zero3_memory", "llm_parameters": params, "model_gb_fp32": round(4 * params / GB, 3),
        "world_size": args.world_size, "steps": args.steps, "runs": runs,
        "zero3_added_gb": round(zero3_added, 3), "single_added_gb": round(single_added, 3),
        "ratio": round(zero3_added / single_added, 3), "target_ratio": TARGET_RATIO,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    if "--child" in sys.argv:  # one rank of a measured run (the deepspeed launcher puts --local_rank first)
        argv = sys.argv[1:]
        local_rank = [a for a in argv[:argv.index("--")] if a.startswith("--local_rank")]
        sys.exit(run_child(argv[argv.index("--child") + 1], argv[argv.index("--") + 1:] + local_rank))
    main()
