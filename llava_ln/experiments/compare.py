"""`llava-ln compare`: train every listed tuning mode (and variant) the same way, evaluate each, compare them.

One base LLM, one vision tower, one stage-1 connector (given with --pretrain_mm_mlp_adapter, or
trained here first), one stage-2 data mix, order and step count; each run differs only in its mode
and that mode's learning rates (runs.py), or in what its variant names. Every run is the normal
training entry point started by the normal launcher (launcher.py), with evaluation during training
on a small fixed subset (learning curves) and gradient statistics on; afterwards each run is
evaluated on the whole of every --benchmarks set with `llava-ln eval --score`, in this process
(CPU or one GPU) or under torchrun (several GPUs).

OUTPUT_DIR/
  comparison.json, comparison.md    one entry per run (entries.py), the settings and notes
  score_vs_trainable.png, memory_time.png, learning_curves.png   (plots.py)
  <run>/run/        the run folder (what llava-ln eval / export / analyze take)
  <run>/eval/       answers and official result files per benchmark
  <run>/status.json the run's training flags and attempts; <run>/train.log its output
  <run>/scores.json the scorer JSON per benchmark

Restartable: a run whose status says "trained" is reused (its entry recomputed from its folder);
a run that was interrupted continues from its newest checkpoint (--resume_from_checkpoint latest,
checkpoints every --save_steps), or starts over when it had none. A run folder trained with other
flags is never reused silently: that is an error naming the run.
"""
import json
import logging
import os
import resource
import shlex
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Optional

from llava_ln.core.atomic import write_json_atomic
from llava_ln.core.errors import LlavaLnError
from llava_ln.experiments import launcher
from llava_ln.experiments.entries import run_entry, write_comparison
from llava_ln.experiments.recipe import stage2_data_path
from llava_ln.experiments.runs import ALL_MODES, RunSpec, mode_runs, parse_rates, parse_variants, variant_runs
from llava_ln.toy import layout

logger = logging.getLogger("llava_ln.compare")

ALL_BENCHMARKS = ("vqav2", "pope", "mme", "coco_caption", "flickr30k")
STAGE1 = "stage1"


@dataclass
class CompareArguments:
    output_dir: str = field(metadata={"help": "Where the runs, comparison.json/.md and the plots go (restartable)."})
    world: Optional[str] = field(default=None, metadata={
        "help": "A toy world (llava-ln toy): fills every path below and uses the toy recipe."})
    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "The base LLM."})
    vision_tower: Optional[str] = field(default=None, metadata={"help": "The vision tower."})
    image_folder: Optional[str] = field(default=None, metadata={"help": "Root of the training images."})
    data_path: Optional[str] = field(default=None, metadata={
        "help": "Stage-2 data (--data_path syntax); with --world a toy mix such as conversation,detail:300 "
                "(default conversation,detail,reasoning: the toy LLaVA-Instruct)."})
    stage1_data_path: Optional[str] = field(default=None, metadata={"help": "Stage-1 caption data."})
    pretrain_mm_mlp_adapter: Optional[str] = field(default=None, metadata={
        "help": "A stage-1 connector to start every run from (else stage 1 runs here first)."})
    eval_data: Optional[str] = field(default=None, metadata={
        "help": "Folder with the benchmarks in LLaVA's playground/data/eval layout (MME, pope, vqav2, ...)."})
    conv_template: str = field(default="vicuna_v1", metadata={"help": "Stage-2 conversation template."})
    modes: str = field(default=",".join(ALL_MODES), metadata={"help": "Tuning modes to train, comma separated."})
    variants: str = field(default="", metadata={
        "help": "Extra runs: 'NAME=MODE key=value ...; ...' or a YAML/JSON file (see experiments/runs.py)."})
    lr: str = field(default="", metadata={
        "help": "Per-mode headline rates, e.g. ln=1e-2,lora=2e-4 (norm rate for ln/ln_simple, else the base rate)."})
    benchmarks: str = field(default=",".join(ALL_BENCHMARKS), metadata={"help": "Benchmarks for the table."})
    stage1_steps: Optional[int] = field(default=None, metadata={
        "help": "Stage-1 optimizer steps (toy default 300; else one epoch)."})
    stage2_steps: Optional[int] = field(default=None, metadata={
        "help": "Stage-2 optimizer steps of every run (toy default 300; else one epoch)."})
    stage1_lr: Optional[float] = field(default=None, metadata={"help": "Stage-1 rate (toy 2e-3, else 1e-3)."})
    per_device_train_batch_size: Optional[int] = field(default=None, metadata={"help": "Toy 16, else 16."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-steps per optimizer step."})
    model_max_length: Optional[int] = field(default=None, metadata={"help": "Toy 512, else 2048."})
    warmup_ratio: Optional[float] = field(default=None, metadata={"help": "Toy 0.1, else 0.03."})
    lora_r: Optional[int] = field(default=None, metadata={
        "help": "LoRA rank (toy 4: the share of the LLM's linear weights that r=128 is at 7B; else 128)."})
    lora_alpha: Optional[int] = field(default=None, metadata={"help": "LoRA alpha (toy 8, else 256)."})
    seed: int = field(default=0, metadata={"help": "Seed of every run (data order, initialisation)."})
    train_args: str = field(default="", metadata={
        "help": "More train.py flags for every run, e.g. '--bf16 --deepspeed zero_configs/zero3.json "
                "--gradient_checkpointing' (they come last, so they override compare's own)."})
    launcher: str = field(default="auto", metadata={
        "help": "auto | python | torchrun | deepspeed (auto: python on a CPU, deepspeed when --train_args has "
                "--deepspeed, else torchrun on several GPUs)."})
    num_gpus: int = field(default=0, metadata={"help": "GPUs per run (0: every visible one)."})
    save_steps: float = field(default=0.25, metadata={
        "help": "Checkpoint every N steps (below 1: a share), so an interrupted run resumes."})
    logging_steps: int = field(default=10, metadata={"help": "Log (and gradient-statistics window) every N steps."})
    log_grad_stats: bool = field(default=True, metadata={"help": "Gradient statistics per group (llava-ln analyze)."})
    curve_benchmarks: str = field(default="pope,vqav2", metadata={
        "help": "Benchmarks of the learning curves (evaluation during training); '' for none."})
    curve_steps: float = field(default=0.25, metadata={"help": "Learning-curve points every N steps (below 1: share)."})
    curve_limit: int = field(default=64, metadata={"help": "Items per benchmark at each learning-curve point."})
    eval_batch_size: int = field(default=32, metadata={"help": "Questions per generate call."})
    max_new_tokens: int = field(default=0, metadata={
        "help": "Longest answer in the final evaluation (0: toy 8 for short answers and 32 for captions; else 128)."})
    threads: int = field(default=0, metadata={"help": "CPU threads per process (0: torch's default)."})
    parallel: int = field(default=1, metadata={
        "help": "Runs trained at once (CPU: with --threads 1, 2 on a 2-core machine beats one run on 2 threads "
                "for small models; their times then share the CPU). GPUs: keep 1."})


@dataclass
class Setup:
    """The comparison's resolved settings (flags + the toy or 7B recipe)."""

    toy: bool
    paths: dict
    stage1_steps: int | None
    stage2_steps: int | None
    stage1_lr: float
    batch_size: int
    model_max_length: int
    warmup_ratio: float
    lora: tuple
    max_new_tokens: dict
    benchmarks: list


def resolve(args: CompareArguments) -> Setup:
    toy = bool(args.world)
    world = args.world
    if toy and not os.path.isfile(os.path.join(world, layout.WORLD_MANIFEST)):
        raise LlavaLnError(f"--world {world}: not a toy world (no {layout.WORLD_MANIFEST}; make one with llava-ln toy)")
    data = args.data_path or ("conversation,detail,reasoning" if toy else None)
    paths = {
        "model_name_or_path": args.model_name_or_path or (os.path.join(world, "llm") if toy else None),
        "vision_tower": args.vision_tower or (os.path.join(world, "vision") if toy else None),
        "image_folder": args.image_folder or (os.path.join(world, layout.IMAGES) if toy else None),
        "data_path": resolve_data(data, world),
        "stage1_data_path": args.stage1_data_path or (os.path.join(world, layout.PRETRAIN_JSON) if toy else None),
        "eval_data": args.eval_data or (os.path.join(world, layout.EVAL) if toy else None),
        "pretrain_mm_mlp_adapter": args.pretrain_mm_mlp_adapter,
    }
    needed = ["model_name_or_path", "vision_tower", "data_path", "eval_data"]
    needed += [] if args.pretrain_mm_mlp_adapter else ["stage1_data_path"]
    missing = [name for name in needed if not paths[name]]
    if missing:
        raise LlavaLnError("llava-ln compare needs " + ", ".join(f"--{m}" for m in missing) + " (or --world)")
    benchmarks = _names(args.benchmarks, "--benchmarks")
    short, caption = (8, 32) if toy else (128, 128)
    tokens = {b: args.max_new_tokens or (caption if b in ("coco_caption", "flickr30k") else short) for b in benchmarks}
    default = 300 if toy else None
    return Setup(
        toy=toy, paths=paths,
        stage1_steps=args.stage1_steps if args.stage1_steps is not None else default,
        stage2_steps=args.stage2_steps if args.stage2_steps is not None else default,
        stage1_lr=args.stage1_lr or (2e-3 if toy else 1e-3),
        batch_size=args.per_device_train_batch_size or 16,
        model_max_length=args.model_max_length or (512 if toy else 2048),
        warmup_ratio=args.warmup_ratio if args.warmup_ratio is not None else (0.1 if toy else 0.03),
        lora=(args.lora_r or (4 if toy else 128), args.lora_alpha or (8 if toy else 256)),
        max_new_tokens=tokens, benchmarks=benchmarks,
    )


def _names(text: str, flag: str) -> list:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_BENCHMARKS]
    if unknown:
        raise LlavaLnError(f"{flag}: {', '.join(unknown)} not among {', '.join(ALL_BENCHMARKS)}")
    return names


def resolve_data(spec: str | None, world: str | None) -> str | None:
    """A toy mix (conversation,detail:300) becomes the world's files; anything else is --data_path as is."""
    if not spec or not world:
        return spec
    kinds = {item.partition(":")[0] for item in spec.split(",")}
    if kinds <= set(layout.INSTRUCT_JSON) | {"captions"}:
        return stage2_data_path(world, spec)
    return spec


def _steps_flags(steps: int | None) -> list:
    return ["--max_steps", str(steps)] if steps else ["--num_train_epochs", "1"]


def common_flags(args: CompareArguments, setup: Setup, output_dir: str) -> list:
    return [
        "--model_name_or_path", setup.paths["model_name_or_path"], "--vision_tower", setup.paths["vision_tower"],
        *(["--image_folder", setup.paths["image_folder"]] if setup.paths["image_folder"] else []),
        "--image_aspect_ratio", "pad", "--model_max_length", str(setup.model_max_length),
        "--per_device_train_batch_size", str(setup.batch_size),
        "--gradient_accumulation_steps", str(args.gradient_accumulation_steps),
        "--lr_scheduler_type", "cosine", "--warmup_ratio", str(setup.warmup_ratio),
        "--logging_steps", str(args.logging_steps), "--save_strategy", "steps", "--save_steps", str(args.save_steps),
        "--save_total_limit", "1", "--report_to", "none", "--seed", str(args.seed), "--disable_tqdm", "true",
        "--output_dir", output_dir,
    ]


def stage1_flags(args, setup: Setup, output_dir: str) -> list:
    return common_flags(args, setup, output_dir) + [
        "--data_path", setup.paths["stage1_data_path"], "--conv_template", "plain", "--tune_mode", "connector",
        "--learning_rate", str(setup.stage1_lr), *_steps_flags(setup.stage1_steps),
        *shlex.split(args.train_args)]


def stage2_flags(args, setup: Setup, run: RunSpec, output_dir: str, stage1: str) -> list:
    curves = _names(args.curve_benchmarks, "--curve_benchmarks")
    return common_flags(args, setup, output_dir) + [
        "--data_path", resolve_data(run.data, args.world) if run.data else setup.paths["data_path"],
        "--conv_template", args.conv_template, "--pretrain_mm_mlp_adapter", stage1,
        *_steps_flags(run.steps or setup.stage2_steps),
        "--lora_r", str(setup.lora[0]), "--lora_alpha", str(setup.lora[1]),
        *(["--log_grad_stats", "true"] if args.log_grad_stats else []),
        *(["--eval_benchmarks", ",".join(curves), "--eval_data", setup.paths["eval_data"], "--eval_steps",
           str(args.curve_steps), "--eval_limit", str(args.curve_limit), "--eval_batch_size",
           str(args.eval_batch_size)] if curves else []),
        *run.train_flags(), *shlex.split(args.train_args)]


class RunFolder:
    """One run's corner of OUTPUT_DIR: its run folder, status, log, evaluation and scores."""

    def __init__(self, output_dir: str, name: str):
        self.root = os.path.join(output_dir, name)
        self.name = name
        self.run_dir = os.path.join(self.root, "run")
        self.status_path = os.path.join(self.root, "status.json")
        self.log_path = os.path.join(self.root, "train.log")
        self.scores_path = os.path.join(self.root, "scores.json")

    def status(self) -> dict | None:
        if not os.path.isfile(self.status_path):
            return None
        with open(self.status_path, encoding="utf-8") as handle:
            return json.load(handle)

    def write_status(self, status: dict) -> None:
        write_json_atomic(self.status_path, status)

    def trained(self) -> bool:
        status = self.status()
        return bool(status and status["state"] == "trained" and os.path.isfile(os.path.join(self.run_dir,
                                                                                            "manifest.json")))


def ensure_trained(folder: RunFolder, flags: list, how: tuple, env: dict | None) -> str:
    """Train the run unless its folder already holds it; continue an interrupted one. Returns its state."""
    os.makedirs(folder.root, exist_ok=True)
    status = folder.status()
    if status is not None and status["flags"] != flags:
        raise LlavaLnError(f"{folder.root} holds run {folder.name!r} trained with other flags; remove that folder "
                           "or choose another --output_dir")
    if folder.trained():
        return "reused"
    from llava_ln.training.checkpointing import list_checkpoints

    checkpoints = list_checkpoints(folder.run_dir) if os.path.isdir(folder.run_dir) else []
    status = status or {"name": folder.name, "flags": flags, "attempts": []}
    resumed_from = os.path.basename(checkpoints[-1][1]) if checkpoints else None
    extra = ["--resume_from_checkpoint", "latest"] if checkpoints else ["--overwrite_output_dir", "true"]
    attempt = {"started": time.time(), "resumed_from": resumed_from}
    status.update(state="training", attempts=status["attempts"] + [attempt])
    folder.write_status(status)
    logger.info("%s: %s", folder.name, f"resuming from {resumed_from}" if resumed_from else "training")
    started = time.perf_counter()
    cpu = launcher.run_logged(launcher.train_command(*how, flags + extra), folder.log_path, f"run {folder.name!r}",
                              env)
    attempt.update(ended=time.time(), seconds=round(time.perf_counter() - started, 1), cpu_s=round(cpu, 1))
    status.update(state="trained")
    folder.write_status(status)
    return "resumed" if resumed_from else "trained"


def evaluate_run(folder: RunFolder, setup: Setup, args: CompareArguments, how: tuple, env: dict | None) -> dict:
    """{benchmark: scorer JSON}, cached in scores.json (a trained run never changes).

    In this process when runs go one at a time on a CPU or one GPU; else in a child process (under
    torchrun on several GPUs), `python -m llava_ln.experiments.benchmarks`."""
    cached = {}
    if os.path.isfile(folder.scores_path):
        with open(folder.scores_path, encoding="utf-8") as handle:
            cached = json.load(handle)
    todo = [b for b in setup.benchmarks if b not in cached]
    if todo:
        eval_dir = os.path.join(folder.root, "eval")
        started, cpu_before = time.perf_counter(), _own_cpu_seconds()
        if args.parallel > 1 or how[1] > 1:
            fresh = os.path.join(folder.root, "scores.new.json")
            command = launcher.module_command("torchrun" if how[1] > 1 else "python", how[1],
                                              "llava_ln.experiments.benchmarks", [
                "--model_path", folder.run_dir, "--eval_root", setup.paths["eval_data"], "--output_dir", eval_dir,
                "--benchmarks", ",".join(todo), "--max_new_tokens", json.dumps(setup.max_new_tokens),
                "--batch_size", str(args.eval_batch_size), "--scores_file", fresh])
            cpu = launcher.run_logged(command, os.path.join(folder.root, "eval.log"), f"evaluation of {folder.name!r}",
                                      env)
            with open(fresh, encoding="utf-8") as handle:
                cached.update(json.load(handle))
        else:
            from llava_ln.experiments.benchmarks import evaluate_benchmarks

            cached.update(evaluate_benchmarks(folder.run_dir, setup.paths["eval_data"], eval_dir, todo,
                                              setup.max_new_tokens, args.eval_batch_size))
            cpu = _own_cpu_seconds() - cpu_before
        write_json_atomic(folder.scores_path, cached)
        status = folder.status()
        status.setdefault("evaluations", []).append({"benchmarks": todo, "cpu_s": round(cpu, 1),
                                                     "seconds": round(time.perf_counter() - started, 1)})
        folder.write_status(status)
    return {b: cached[b] for b in setup.benchmarks}


def _own_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def run_compare(args: CompareArguments) -> dict:
    setup = resolve(args)
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads else None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides = parse_rates(args.lr)
    runs = mode_runs([m.strip() for m in args.modes.split(",") if m.strip()], setup.toy, overrides)
    runs += variant_runs(parse_variants(args.variants), setup.toy, overrides, {r.name for r in runs} | {STAGE1})
    started, cpu_before = time.perf_counter(), _cpu_seconds()
    outcomes = {}

    stage1 = setup.paths["pretrain_mm_mlp_adapter"]
    if not stage1:
        folder = RunFolder(out, STAGE1)
        flags = stage1_flags(args, setup, folder.run_dir)
        outcomes[STAGE1] = ensure_trained(folder, flags, launcher.resolve_launcher(args.launcher, args.num_gpus, flags),
                                          env)
        stage1 = folder.run_dir
    def train_and_evaluate(run: RunSpec) -> tuple:
        folder = RunFolder(out, run.name)
        flags = stage2_flags(args, setup, run, folder.run_dir, stage1)
        how = launcher.resolve_launcher(args.launcher, args.num_gpus, flags)
        outcome = ensure_trained(folder, flags, how, env)
        raw = evaluate_run(folder, setup, args, how, env)
        entry = {"mode": run.mode, **({"variant_of": run.variant_of} if run.variant_of else {}), "rates": run.rates,
                 **run_entry(folder.run_dir, raw), **_costs(folder)}
        return outcome, entry

    done = {}
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        futures = {pool.submit(train_and_evaluate, run): run.name for run in runs}
        for future in as_completed(futures):
            name = futures[future]
            outcomes[name], done[name] = future.result()
            # Written after every run, in the order of --modes then --variants, so a kill loses nothing.
            entries = {run.name: done[run.name] for run in runs if run.name in done}
            payload = write_comparison(out, entries, _settings(args, setup, runs, outcomes, started, cpu_before))
            logger.info("%s: %s, average %s", name, outcomes[name], done[name]["average"])
    from llava_ln.experiments.plots import comparison_plots

    payload["plots"] = comparison_plots(out, payload)
    return payload


def _costs(folder: RunFolder) -> dict:
    """What the run cost on this machine: process seconds and CPU seconds of training (every attempt,
    an attempt killed before its end excepted) and of the final evaluation."""
    status = folder.status()
    attempts = [a for a in status["attempts"] if "seconds" in a]
    evaluations = status.get("evaluations", [])
    return {"process_s": round(sum(a["seconds"] for a in attempts), 1),
            "train_cpu_s": round(sum(a.get("cpu_s", 0.0) for a in attempts), 1),
            "eval_s": round(sum(e["seconds"] for e in evaluations), 1),
            "eval_cpu_s": round(sum(e["cpu_s"] for e in evaluations), 1)}


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _settings(args, setup: Setup, runs: list, outcomes: dict, started: float, cpu_before: float) -> dict:
    device = "cuda" if launcher.visible_gpus() else "cpu"
    return {
        "flags": asdict(args), "device": device, "toy_recipe": setup.toy, "paths": setup.paths,
        "stage1_steps": setup.stage1_steps, "stage2_steps": setup.stage2_steps, "batch_size": setup.batch_size,
        "lora_r_alpha": list(setup.lora), "max_new_tokens": setup.max_new_tokens,
        "runs": {r.name: r.train_flags() for r in runs}, "parallel": args.parallel, "this_invocation": {
            "outcomes": outcomes, "wall_s": round(time.perf_counter() - started, 1),
            "cpu_s": round(_cpu_seconds() - cpu_before, 1)},
        "notes": [
            "scores: VQAv2 accuracy (%), POPE mean F1 x100, MME perception, CIDEr x100; average: their mean, MME "
            "perception first divided by 2 x its subtask count (so 0-100 like VQAv2 and POPE; CIDEr x100 may pass 100)",
            "peak memory: " + ("CUDA allocator high-water mark, max over ranks" if device == "cuda" else
                               "the training process's peak resident set (CPU), runtime and libraries included"),
            "train s / tokens/s: the training loop alone (from log.jsonl), evaluation during training excluded",
        ] + ([f"runs went {args.parallel} at a time: their times and throughputs share the machine"]
             if args.parallel > 1 else []),
    }
