"""`llava-ln demo`: toy world -> stage 1 -> stage 2 -> five benchmarks -> report (markdown + PNG).

Everything runs through the same entry points a user calls (`llava-ln toy`, `llava-ln train`, `llava-ln
eval --score`), so the demo is also an end-to-end check of the framework. Run again, it continues: the
steps already done are reused and a stage stopped part-way continues from its newest checkpoint
(experiments/demo_state.py says what counts as done); --restart starts over. One progress line per step
says where the demo is and how long it has run.
"""
import contextlib
import logging
import os
import shlex
import signal
import time

from llava_ln.commands.args import DEMO_FLAGS, DemoArguments
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import check_flag_domains
from llava_ln.core.flags import parse_command_flags
from llava_ln.experiments.recipe import STAGE2_TEMPLATE, DemoRecipe

STEP_COUNT = 5  # toy world, stage 1, stage 2, two evaluations
RESULT_FILE = "demo_result.json"


class Progress:
    """Prints `[demo] stage k of n: what (how), elapsed` as each step starts, and records each step's time."""

    def __init__(self):
        self.started = time.time()
        self.timings: dict = {}
        self.index = 0
        self.current = "setup"  # the step under way, for the stop message

    def step(self, name: str, how: str):
        from contextlib import contextmanager

        self.index += 1
        self.current = name

        @contextmanager
        def timed():
            print(f"\n[demo] stage {self.index} of {STEP_COUNT}: {name} ({how}), {_clock(time.time() - self.started)} "
                  "elapsed", flush=True)
            began = time.time()
            yield
            self.timings[name] = time.time() - began
            print(f"[demo] {name}: done in {self.timings[name]:.1f}s", flush=True)

        return timed()


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def _toy_world(args: DemoArguments, recipe: DemoRecipe, world: str) -> bool:
    """Whether the toy world must be (re)written: none yet, another seed's, or --reuse_world false."""
    from llava_ln.core.bounded_json import read_json
    from llava_ln.toy import layout

    manifest = os.path.join(world, layout.WORLD_MANIFEST)
    if not (args.reuse_world and os.path.isfile(manifest)):
        return True
    try:
        return read_json(manifest).get("seed") != recipe.seed
    except (LlavaLnError, AttributeError):  # unreadable: written again
        return True


def _eval_sets(out: str, world: str, recipe: DemoRecipe) -> tuple[str, dict]:
    """(the evaluation root, its counts): the world's own sets at full size, else smaller ones under OUT,
    written once per share (their manifest, written last, says they are complete)."""
    from llava_ln.core.atomic import write_json_atomic
    from llava_ln.core.bounded_json import read_json
    from llava_ln.toy import layout
    from llava_ln.toy.generate import ToySizes, write_eval_sets

    share = recipe.eval_share()
    if share >= 1.0:
        return os.path.join(world, layout.EVAL), read_json(os.path.join(world, layout.WORLD_MANIFEST))["counts"]
    folder = os.path.join(out, f"eval_sets_x{share:.4g}")
    manifest = os.path.join(folder, "eval_sets.json")
    wanted = {"seed": recipe.seed, "share": share}
    if os.path.isfile(manifest) and {k: v for k, v in read_json(manifest).items() if k != "counts"} == wanted:
        return os.path.join(folder, layout.EVAL), read_json(manifest)["counts"]
    counts = write_eval_sets(folder, recipe.seed, ToySizes().scaled(share))
    write_json_atomic(manifest, {**wanted, "counts": counts})
    return os.path.join(folder, layout.EVAL), counts


def _again(command: str) -> str:
    return f"run `{command}` again to continue (add --restart to start over)"


@contextlib.contextmanager
def stop_says_how_to_continue(progress: Progress, command: str):
    """SIGTERM or SIGHUP outside training (which saves a checkpoint under its own handler first) end the demo
    with the line that says how to continue, not silently; what is done stays recorded."""
    from llava_ln.training.guards.stop_signals import Interrupted

    def stop(signum, frame):
        raise Interrupted(signum, f"stopped the demo in {progress.current}; {_again(command)}")

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None: a handler installed outside Python, which signal.signal cannot take back; the default then.
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _train(name: str, run_dir: str, argv: list, state, progress: Progress, command: str) -> None:
    """Train one stage unless it is done; continue it from its newest checkpoint when one is there."""
    from llava_ln.experiments.demo_state import newest_checkpoint
    from llava_ln.train import main as train_main
    from llava_ln.training.guards.stop_signals import Interrupted

    plan = state.training_plan(name, run_dir, argv)
    how = {"done": "done earlier, reused", "start": "training",
           "resume": f"continuing from {os.path.basename(newest_checkpoint(run_dir) or '')}"}[plan]
    with progress.step(name, how):
        if plan == "done":
            return
        state.start_training(name, argv)
        try:
            train_main(argv + (["--resume_from_checkpoint", "latest"] if plan == "resume" else []))
        except Interrupted as err:
            saved = newest_checkpoint(run_dir)
            kept = f"{saved} is saved" if saved else "the steps already done are kept"
            raise Interrupted(err.signum, f"stopped the demo in {name}: {kept}; {_again(command)}") from None


def _evaluate(name: str, model_dir: str, sets: tuple[str, str], out_dir: str, state, progress: Progress, *,
              benchmarks: list[str], conv_template: str | None = None) -> dict:
    """The model's headline numbers on the five benchmarks, reused when already measured on the same sets."""
    from llava_ln.experiments.benchmarks import evaluate, headline_numbers
    from llava_ln.training.guards.run_ownership import folder_run_id

    world, eval_root = sets  # the toy world, and the evaluation sets (its own or smaller ones)
    settings = {"model": model_dir, "run_id": folder_run_id(model_dir), "eval_root": eval_root,
                "conv_template": conv_template, "benchmarks": benchmarks}
    scores = state.scores(name, settings)
    with progress.step(name, "done earlier, reused" if scores is not None else "answering and scoring"):
        if scores is None:
            scores = evaluate(model_dir, world, out_dir, conv_template=conv_template, eval_root=eval_root,
                              benchmarks=benchmarks)
            state.finish_evaluation(name, settings, scores)
    return headline_numbers(scores)


def run_demo(args: DemoArguments, recipe: DemoRecipe, command: str = "llava-ln demo") -> dict:
    """The whole demo; command: how the user started it (the stop message tells them to run it again)."""
    import torch

    check_flag_domains(args, recipe)  # parse_flags checked a command line's; this covers flags built in code

    from llava_ln.experiments.demo_state import DemoState
    from llava_ln.tuning.modes import TUNE_MODES

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    state = DemoState(args.out)
    if args.restart:
        derived = [os.path.join(args.out, name) for name in os.listdir(args.out) if name.startswith("eval_sets_x")]
        stages = [os.path.join(args.out, "stage1_connector")] + [os.path.join(args.out, f"stage2_{mode}")
                                                                for mode in TUNE_MODES]
        reports = [os.path.join(args.out, name) for name in ("report.md", "report.png", RESULT_FILE)]
        evaluations = [os.path.join(args.out, "eval_stage1"), os.path.join(args.out, "eval_stage2")]
        state.restart(stages + evaluations + derived, files=reports)
    progress = Progress()
    with stop_says_how_to_continue(progress, command):
        return _run_steps(args, recipe, progress, state, command)


def _run_steps(args: DemoArguments, recipe: DemoRecipe, progress: Progress, state, command: str) -> dict:
    from llava_ln.experiments.recipe import stage1_argv, stage2_argv
    from llava_ln.experiments.report import write_report
    from llava_ln.toy.generate import write_toy_world

    world = os.path.join(args.out, "toy_world")
    stage1, stage2 = os.path.join(args.out, "stage1_connector"), os.path.join(args.out, f"stage2_{recipe.tune_mode}")
    eval1, eval2 = os.path.join(args.out, "eval_stage1"), os.path.join(args.out, "eval_stage2")
    rewrite = _toy_world(args, recipe, world)
    with progress.step("toy world", "writing" if rewrite else "reused"):
        if rewrite:
            write_toy_world(world, seed=recipe.seed)
        eval_root, eval_counts = _eval_sets(args.out, world, recipe)
    _train("stage 1: connector on captions", stage1, stage1_argv(world, recipe, stage1, overwrite=False), state,
           progress, command)
    _train(f"stage 2: --tune_mode {recipe.tune_mode}", stage2,
           stage2_argv(world, recipe, stage2, stage1, overwrite=False), state, progress, command)
    rows = {
        # Asked in the stage-2 template, so both models see exactly the same prompts.
        "connector only": _evaluate("evaluate the untuned model (connector only)", stage1, (world, eval_root), eval1, state,
                                    progress, benchmarks=recipe.benchmark_names(), conv_template=STAGE2_TEMPLATE),
        f"stage 2 ({recipe.tune_mode})": _evaluate(f"evaluate the stage-2 model ({recipe.tune_mode})", stage2,
                                                   (world, eval_root), eval2, state, progress,
                                                   benchmarks=recipe.benchmark_names()),
    }
    timings = {**progress.timings, "total": time.time() - progress.started}
    report = write_report(args.out, rows, timings, recipe, world, eval_counts=eval_counts)
    print("\n" + report["text"])
    print(f"report: {report['markdown']}" + (f", chart: {report['chart']}" if report["chart"] else ""))
    if not report["chart"]:
        from llava_ln.experiments.plots import NO_MATPLOTLIB

        print(NO_MATPLOTLIB)
    return {"scores": rows, "timings": timings, "recipe": recipe.summary(),
            **{k: v for k, v in report.items() if k != "text"}}


def demo_main(argv) -> int:
    from llava_ln.core.atomic import write_json_atomic

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args, recipe = parse_command_flags(argv, DEMO_FLAGS)
    command = shlex.join(["llava-ln", "demo", *[word for word in argv if word not in ("--restart", "--debug")]])
    result = run_demo(args, recipe, command)
    write_json_atomic(os.path.join(args.out, RESULT_FILE), result)
    return 0
