"""The GPU suite's steps and its summary (bench/gpu_suite.sh installs the wheels, then runs this).

    python -m bench.gpu_suite_run --work DIR [--dry_run] [--quant] [--install DIR/install.json]

Steps, each timed, checked and continued past when it fails:
  toy_world                      `llava-ln toy`
  zero{2,3}_stage1               stage 1 (connector) under the `deepspeed` launcher, one rank
  zero{2,3}_stage2               stage 2 (`--tune_mode ln`) from it, a checkpoint at mid-run
  zero{2,3}_resume               stage 2 again from that checkpoint: final weights vs the straight run
  eval_pope, eval_vqav2          `llava-ln eval --score`, batch 16, of the ZeRO-3 stage-2 run
  export_hf                      `llava-ln export --format hf` (verified in a fresh transformers process)
  throughput_llava_ln            bench.train_throughput, every tune mode, 7B shape
  throughput_baseline            the plain transformers+PEFT loop (bench/baseline/hf_peft_baseline.py), same
                                 shapes, same call
The trainings are the demo's recipe (llava_ln.experiments.recipe: the same flags `llava-ln demo` trains
with) at the profile's size, with the suite's logging, checkpoint and precision flags after them.
With --quant, toy_world and then only the quantized-base steps of bench/gpu_suite_quant.py run (a
4-bit ZeRO-2 run, its eval and 4-bit export, the 13B-shape 4-bit throughput next to the baseline's LoRA).
The ZeRO-2 and ZeRO-3 chains run side by side, and so do the two evaluations and the export
(tiny models); the throughput runs come last, alone on the GPU. --dry_run runs the same steps on
the CPU at tiny size (fp32, DeepSpeed over gloo). One summary JSON is printed at the end and
written to WORK/gpu_suite.json and, when OUT is set, to $OUT with the raw logs (see
gpu_suite_runner.write_outputs).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from bench import gpu_suite_checks as checks
from bench import hf_baseline
from bench.gpu_suite_runner import Runner, Step, print_summary, write_outputs
from llava_ln.core.processes import forward_stop_signals, free_port, run_in_group
from llava_ln.experiments.recipe import DemoRecipe, stage1_argv, stage2_argv
from llava_ln.tuning.modes import TUNE_MODES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every tune mode, the baseline's first and in its order, so the two throughput runs go mode for mode.
BASELINE_MODES = ",".join(hf_baseline.MODES)
ALL_MODES = ",".join([*hf_baseline.MODES, *(mode for mode in TUNE_MODES if mode not in hf_baseline.MODES)])
EVAL_BATCH = 16


@dataclass
class Profile:
    device: str
    precision: str
    toy_scale: float
    batch: int
    stage1_steps: int
    stage2_steps: int        # the straight run; its checkpoint is at half of it
    stage2_captions: int     # caption records mixed into stage 2, as the demo does
    eval_dtype: str
    throughput: list         # flags shared by train_throughput.py and hf_peft_baseline.py
    resume_tolerance: float  # share of post-checkpoint weight movement the resumed run may differ by
    budget_s: float          # the whole suite, install excluded; later steps are skipped past it
    train_timeout_s: float
    eval_timeout_s: float
    throughput_timeout_s: float


PROFILES = {
    # 7B steps take 1.5-2.2 s on an H200; DeepSpeed needs no JIT-compiled op here (torch's fused AdamW
    # is handed to it; the configs have no optimizer block), so a start costs seconds, not minutes.
    "gpu": Profile(device="cuda", precision="bf16", toy_scale=1.0, batch=16, stage1_steps=40, stage2_steps=40,
                   stage2_captions=300, eval_dtype="bfloat16",
                   throughput=["--size", "7b", "--steps", "3", "--warmup", "2"], resume_tolerance=1e-2,
                   budget_s=440, train_timeout_s=120, eval_timeout_s=120, throughput_timeout_s=240),
    "dry_run": Profile(device="cpu", precision="fp32", toy_scale=0.05, batch=4, stage1_steps=4, stage2_steps=4,
                       stage2_captions=20, eval_dtype="float32",
                       throughput=["--size", "tiny", "--steps", "2", "--warmup", "1", "--batch", "2", "--seq", "128"],
                       resume_tolerance=0.0, budget_s=900, train_timeout_s=300, eval_timeout_s=300,
                       throughput_timeout_s=300),
}


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "llava_ln.cli", *map(str, args)]


def recipe_of(p: Profile) -> DemoRecipe:
    """The demo's recipe at the profile's size (batch, steps, captions mixed into stage 2)."""
    return DemoRecipe(batch_size=p.batch, stage1_steps=p.stage1_steps, stage2_steps=p.stage2_steps,
                      stage2_data=f"conversation,captions:{p.stage2_captions}")


def _train_argv(world: str, p: Profile, zero: int, out: str, stage1: str | None = None, **extra) -> list[str]:
    """One rank under the real `deepspeed` launcher (python -m deepspeed.launcher.runner is that script): the
    recipe's stage 1 (stage1 None) or stage 2 from the stage-1 run `stage1` ("" for a fresh connector), then the
    suite's own flags and `extra` (later flags win)."""
    recipe = recipe_of(p)
    if stage1 is None:
        argv = stage1_argv(world, recipe, out)
    else:
        argv = stage2_argv(world, recipe, out, stage1)
        if not stage1:
            at = argv.index("--pretrain_mm_mlp_adapter")
            del argv[at:at + 2]
        argv += ["--save_strategy", "steps", "--save_steps", p.stage2_steps // 2]
    argv += ["--logging_steps", "1", "--disable_tqdm", "true"] + (["--bf16"] if p.precision == "bf16" else [])
    for key, value in extra.items():
        argv += [f"--{key}", value]
    # A port the kernel picks (at a random offset of its range), not a fixed range: suites of other checkouts
    # may run on the same machine at the same time.
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1",
                "--master_port", free_port(), "llava_ln/train.py",
                "--deepspeed", f"zero_configs/zero{zero}.json"]
    return [str(a) for a in launcher + argv]


def zero_chain(world: str, runs: str, p: Profile, zero: int) -> list[Step]:
    stage1, straight, resumed = (os.path.join(runs, f"zero{zero}_{n}") for n in ("stage1", "stage2", "resumed"))
    middle = p.stage2_steps // 2
    # argv are built when each step starts, so that the master port is free at that moment
    return [
        Step(f"zero{zero}_stage1", lambda: _train_argv(world, p, zero, stage1), p.train_timeout_s,
             facts=lambda: checks.train_facts(stage1, zero, p.precision, p.device)),
        Step(f"zero{zero}_stage2", lambda: _train_argv(world, p, zero, straight, stage1),
             p.train_timeout_s, needs=(f"zero{zero}_stage1",),
             facts=lambda: checks.train_facts(straight, zero, p.precision, p.device, checkpoint_step=middle)),
        Step(f"zero{zero}_resume", lambda: _train_argv(world, p, zero, resumed, stage1,
                                                       resume_from_checkpoint=f"{straight}/checkpoint-{middle}"),
             p.train_timeout_s, needs=(f"zero{zero}_stage2",),
             facts=lambda: checks.resume_facts(straight, resumed, middle, p.resume_tolerance)),
    ]


def later_steps(world: str, runs: str, logs: str, p: Profile, baseline: str, model_of) -> tuple[list, list]:
    """[eval_pope, eval_vqav2, export_hf] (side by side) and the two throughput runs (in order)."""
    stage2 = ("zero3_stage2", "zero2_stage2")
    evals = []
    for bench in ("pope", "vqav2"):
        out = os.path.join(runs, f"eval_{bench}")

        def argv(bench=bench, out=out) -> list[str]:  # built when it starts: model_of() decides then
            return _cli("eval", "--benchmark", bench, "--model_path", model_of(), "--data", f"{world}/eval/{bench}",
                        "--output_dir", out, "--score", "--batch_size", EVAL_BATCH, "--max_new_tokens", 8,
                        "--dtype", p.eval_dtype, "--device", p.device)

        evals.append(Step(f"eval_{bench}", argv, p.eval_timeout_s, needs_any=stage2,
                          facts=lambda b=bench, o=out: checks.eval_facts(o, b, EVAL_BATCH)))
    export_dir = os.path.join(runs, "export_hf")
    evals.append(Step("export_hf", lambda: _cli(
        "export", "--checkpoint", model_of(), "--format", "hf", "--output_dir", export_dir, "--device", p.device),
        p.eval_timeout_s, needs_any=stage2,
        facts=lambda: checks.export_facts(export_dir, os.path.join(logs, "export_hf.out"))))
    ours, theirs = os.path.join(logs, "throughput_llava_ln.out"), os.path.join(logs, "throughput_baseline.out")
    throughput = [
        Step("throughput_llava_ln", [sys.executable, "-m", "bench.train_throughput", "--modes", ALL_MODES, *p.throughput],
             p.throughput_timeout_s, facts=lambda: checks.throughput_facts(ours, ALL_MODES.split(","))),
        Step("throughput_baseline", [sys.executable, baseline, "--modes", BASELINE_MODES, *p.throughput],
             p.throughput_timeout_s, facts=lambda: checks.throughput_facts(theirs, BASELINE_MODES.split(","))),
    ]
    return evals, throughput


def find_baseline() -> str:
    """$HF_PEFT_BASELINE, else the repository's copy (bench/baseline/)."""
    return os.environ.get("HF_PEFT_BASELINE") or hf_baseline.SCRIPT


def environment() -> dict:
    """Versions as the steps see them (same interpreter and PYTHONPATH) and the card as nvidia-smi names it."""
    import importlib.metadata as metadata

    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for package in ("transformers", "peft", "deepspeed", "liger-kernel", "bitsandbytes", "pydantic"):
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env[package] = None
    try:
        env["gpu"] = run_in_group(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                   "--format=csv,noheader"], capture_output=True, text=True, timeout=30
                                  ).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        env["gpu"] = None
    commit = run_in_group(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    env["commit"] = commit.stdout.strip() or None
    return env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="scratch folder: toy world, runs, logs, summary")
    parser.add_argument("--dry_run", action="store_true", help="CPU, tiny sizes, fp32, DeepSpeed over gloo")
    parser.add_argument("--install", default=None, help="install.json written by gpu_suite.sh")
    parser.add_argument("--budget_s", type=float, default=None, help="override the profile's time budget")
    parser.add_argument("--quant", action="store_true", help="run the quantized-base steps (gpu_suite_quant.py) "
                        "instead of the usual ones")
    args = parser.parse_args(argv)
    with forward_stop_signals():  # Ctrl-C or SIGTERM reach the running steps, and no further step starts
        return run_suite(args)


def run_suite(args) -> int:
    name = "dry_run" if args.dry_run else "gpu"
    profile = PROFILES[name]
    if args.budget_s:
        profile.budget_s = args.budget_s
    work = os.path.abspath(args.work)
    world, runs, logs = (os.path.join(work, d) for d in ("world", "runs", "logs"))
    os.makedirs(runs, exist_ok=True)
    runner = Runner(REPO, logs, profile.budget_s)

    def model_of() -> str:  # the stage-2 run evaluated and exported: ZeRO-3's, else ZeRO-2's
        stage = "zero3" if runner.passed("zero3_stage2") else "zero2"
        return os.path.join(runs, f"{stage}_stage2")

    runner.run(Step("toy_world", _cli("toy", "--out", world, "--scale", profile.toy_scale), profile.eval_timeout_s))
    ours, theirs = os.path.join(logs, "throughput_llava_ln.out"), os.path.join(logs, "throughput_baseline.out")
    if args.quant:  # the quantized-base steps alone (bench/gpu_suite_quant.py)
        from bench.gpu_suite_quant import quant_steps, quant_table

        quant = quant_steps(world, runs, logs, profile, find_baseline(), _train_argv, _cli)
        runner.run_chains([quant])
        order, tables = ["toy_world"] + [s.name for s in quant], {"quant_table": quant_table(logs)}
    else:
        chains = [zero_chain(world, runs, profile, zero) for zero in (2, 3)]
        for chain in chains:
            for step in chain:
                step.needs = step.needs or ("toy_world",)
        runner.run_chains(chains)
        evals, throughput = later_steps(world, runs, logs, profile, find_baseline(), model_of)
        runner.run_chains([[step] for step in evals])
        runner.run_chains([throughput])
        order = ["toy_world"] + [s.name for c in chains for s in c] + [s.name for s in evals + throughput]
        tables = {"throughput_table": checks.throughput_table(ours, theirs)}
    steps = {n: runner.results[n] for n in order}
    install = {"status": "skipped", "reason": "dry_run"}
    if args.install and os.path.exists(args.install):
        with open(args.install, encoding="utf-8") as handle:
            install = json.load(handle)
    counts = {s: sum(r["status"] == s for r in steps.values()) for s in ("passed", "failed", "skipped")}
    summary = {
        "suite": "llava-ln gpu suite", "profile": name, "passed": counts["passed"] == len(steps), "counts": counts,
        "not_passed": [n for n, r in steps.items() if r["status"] != "passed"],
        "wall_s": round(time.time() - runner.started, 1), "install": install, "env": environment(),
        "settings": {**asdict(profile), "throughput": " ".join(profile.throughput), "throughput_modes": ALL_MODES,
                     "baseline_modes": BASELINE_MODES, "eval_batch": EVAL_BATCH, "baseline": find_baseline()},
        "steps": steps,
        **tables,
    }
    write_outputs(summary, work, os.environ.get("OUT"), {"throughput_llava_ln.jsonl": ours,
                                                         "throughput_baseline.jsonl": theirs})
    print_summary(summary)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
