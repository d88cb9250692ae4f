"""`llava-ln` console entry point: dispatches each subcommand to its function in llava_ln/commands.

Subcommands are looked up lazily so that `llava-ln describe` does not import DeepSpeed and a
broken optional dependency only affects the subcommand that needs it; `--help` is rendered from the
command's flag dataclasses alone, without importing the command, torch or transformers. Each command function takes
`argv: list[str]` and returns an exit code (or None); a LlavaLnError becomes one line and exit 2.
"""
import importlib
import os
import sys

from llava_ln.core.errors import run_command
from llava_ln.core.flags import print_help_and_exit, wants_help

# name -> (module, function, one-line help, its CommandFlags as "module:NAME"). Order is `llava-ln --help`'s.
# The flags live in torch-free modules, so `llava-ln <command> --help` is answered without importing the
# command (which may import torch, transformers or DeepSpeed).
_ARGS = "llava_ln.commands.args"
SUBCOMMANDS = {
    "describe": ("llava_ln.commands.prepare", "describe_main", "count parameters and show what a --tune_mode trains",
                 f"{_ARGS}:DESCRIBE_FLAGS"),
    "inspect-data": ("llava_ln.commands.prepare", "inspect_data_main",
                     "print processed samples with their label masks", f"{_ARGS}:INSPECT_FLAGS"),
    "train": ("llava_ln.train", "main", "run stage 1 or stage 2 training (same flags as llava_ln/train.py)",
              "llava_ln.training.args:TRAIN_FLAGS"),
    "toy": ("llava_ln.commands.prepare", "toy_main", "write the synthetic toy world (data, eval sets, tiny backbones)",
            f"{_ARGS}:TOY_FLAGS"),
    "eval": ("llava_ln.commands.evaluate", "eval_main", "generate benchmark answers in the official formats",
             f"{_ARGS}:EVAL_FLAGS"),
    "score": ("llava_ln.commands.evaluate", "score_main", "score prediction files exactly as the official tools do",
              f"{_ARGS}:SCORE_FLAGS"),
    "merge": ("llava_ln.commands.ship", "merge_main", "fold trained tensors into one standalone checkpoint",
              f"{_ARGS}:MERGE_FLAGS"),
    "export": ("llava_ln.commands.ship", "export_main", "export to the transformers-native LLaVA format (verified)",
               f"{_ARGS}:EXPORT_FLAGS"),
    "demo": ("llava_ln.commands.demo", "demo_main", "run the whole pipeline on the toy world and write a report",
             f"{_ARGS}:DEMO_FLAGS"),
    "compare": ("llava_ln.commands.experiments", "compare_main", "train tuning modes the same way, evaluate, compare",
                f"{_ARGS}:COMPARE_FLAGS"),
    "analyze": ("llava_ln.commands.experiments", "analyze_main", "layer similarity and gradient statistics of runs",
                f"{_ARGS}:ANALYZE_FLAGS"),
}


VERBOSE_FLAG = "--verbose"  # any command: show the libraries' model-loading progress bars


def quiet_loading(verbose: bool) -> None:
    """Without --verbose, the Hugging Face libraries show no progress bar per model loaded (a command loads
    several); the environment variable they read is set for child processes too. One set by the user wins."""
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def command_flags(name: str):
    """The subcommand's CommandFlags, imported from its torch-free module."""
    module_name, _, attribute = SUBCOMMANDS[name][3].partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _usage() -> str:
    lines = ["usage: llava-ln <command> [flags]", "", "commands:"]
    width = max(len(n) for n in SUBCOMMANDS)
    for name, (_, _, help_text, _) in SUBCOMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {help_text}")
    lines.append("")
    lines.append("Run `llava-ln <command> --help` for the flags of a command. Any command also takes --verbose "
                 "(model-loading progress bars) and --debug (tracebacks).")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"llava-ln: error: unknown command {name!r}; choose from: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    if wants_help(rest):
        print_help_and_exit(command_flags(name))
    quiet_loading(VERBOSE_FLAG in rest)
    rest = [word for word in rest if word != VERBOSE_FLAG]
    module_name, function, _, _ = SUBCOMMANDS[name]
    return run_command(getattr(importlib.import_module(module_name), function), rest)


if __name__ == "__main__":
    sys.exit(main())
