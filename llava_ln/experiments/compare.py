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
  stage1/, <run>/   one folder per run (run_state.py): run/ (the run folder that llava-ln eval /
                    export / analyze take), eval/, status.json, train.log, scores.json
Flags and recipes: compare_settings.py.

Restartable: a run whose status says "trained" is reused (its entry recomputed from its folder);
a run that was interrupted continues from its newest checkpoint (--resume_from_checkpoint latest,
checkpoints every --save_steps), or starts over when it had none. A run folder trained with other
flags is never reused silently: that is an error naming the run.
"""
import logging
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import check_flag_domains
from llava_ln.core.processes import forward_stop_signals
from llava_ln.experiments import launcher
from llava_ln.experiments.args import CompareArguments
from llava_ln.experiments.compare_settings import (
    Setup,
    resolve,
    stage1_flags,
    stage2_flags,
)
from llava_ln.experiments.entries import run_entry, write_comparison
from llava_ln.experiments.run_state import RunFolder, costs, ensure_trained, evaluate_run
from llava_ln.experiments.runs import RunSpec, mode_runs, parse_rates, parse_variants, variant_runs

logger = logging.getLogger("llava_ln.compare")
STAGE1 = "stage1"


def run_compare(args: CompareArguments) -> dict:
    check_flag_domains(args)  # parse_flags checked a command line's; this covers flags built in code
    with forward_stop_signals():  # each run leads a process group of its own: Ctrl-C and SIGTERM go on to it
        return _compare(args)


def _compare(args: CompareArguments) -> dict:
    setup = resolve(args)
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads else None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides = parse_rates(args.lr)
    runs = mode_runs([m.strip() for m in args.modes.split(",") if m.strip()], setup.recipe, overrides)
    runs += variant_runs(parse_variants(args.variants), setup.recipe, overrides, {r.name for r in runs} | {STAGE1})
    stage1 = setup.paths["pretrain_mm_mlp_adapter"]
    if not stage1:
        _check_train_flags(STAGE1, stage1_flags(args, setup, RunFolder(out, STAGE1).run_dir))
    for run in runs:  # a bad value in the last run's flags fails now, not after the others have trained
        _check_train_flags(run.name, stage2_flags(args, setup, run, RunFolder(out, run.name).run_dir,
                                                  stage1 or RunFolder(out, STAGE1).run_dir))
    started, cpu_before = time.perf_counter(), _cpu_seconds()
    outcomes = {}

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
                 **run_entry(folder.run_dir, raw), **costs(folder)}
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


def _check_train_flags(name: str, argv: list) -> None:
    """Read a run's training command line with train's own pre-model checks (names, domains, combinations)."""
    from llava_ln.training.command_line import read_train_command

    try:
        read_train_command(argv)
    except LlavaLnError as err:
        raise LlavaLnError(f"compare run {name!r}: {err}") from None


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _settings(args, setup: Setup, runs: list, outcomes: dict, started: float, cpu_before: float) -> dict:
    device = "cuda" if launcher.visible_gpus() else "cpu"
    return {
        "flags": asdict(args), "device": device, "toy_recipe": setup.toy, "paths": setup.paths,
        "stage1_steps": setup.stage1_steps, "stage2_steps": setup.stage2_steps, "batch_size": setup.batch_size,
        "lora_r_alpha": list(setup.lora), "max_new_tokens": setup.max_new_tokens, "seed": setup.seed,
        "eval_batch_size": setup.eval_batch_size,
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
