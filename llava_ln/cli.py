"""`llava-ln` console entry point: dispatches each subcommand to its function in llava_ln/commands.

Subcommands are looked up lazily so that `llava-ln describe` does not import DeepSpeed and a
broken optional dependency only affects the subcommand that needs it. Each command function takes
`argv: list[str]` and returns an exit code (or None); a LlavaLnError becomes one line and exit 2.
"""
import importlib
import sys

from llava_ln.core.errors import run_command

# name -> (module, function, one-line help). Order is the order shown in `llava-ln --help`.
SUBCOMMANDS = {
    "describe": ("llava_ln.commands.prepare", "describe_main", "count parameters and show what a --tune_mode trains"),
    "inspect-data": ("llava_ln.commands.prepare", "inspect_data_main", "print processed samples with their label masks"),
    "train": ("llava_ln.train", "main", "run stage 1 or stage 2 training (same flags as llava_ln/train.py)"),
    "toy": ("llava_ln.commands.prepare", "toy_main", "write the synthetic toy world (data, eval sets, tiny backbones)"),
    "eval": ("llava_ln.commands.evaluate", "eval_main", "generate benchmark answers in the official formats"),
    "score": ("llava_ln.commands.evaluate", "score_main", "score prediction files exactly as the official tools do"),
    "merge": ("llava_ln.commands.ship", "merge_main", "fold trained tensors into one standalone checkpoint"),
    "export": ("llava_ln.commands.ship", "export_main", "export to the transformers-native LLaVA format (verified)"),
    "demo": ("llava_ln.commands.experiments", "demo_main", "run the whole pipeline on the toy world and write a report"),
    "compare": ("llava_ln.commands.experiments", "compare_main", "train tuning modes the same way, evaluate, compare"),
    "analyze": ("llava_ln.commands.experiments", "analyze_main", "layer similarity and gradient statistics of runs"),
}


def _usage() -> str:
    lines = ["usage: llava-ln <command> [flags]", "", "commands:"]
    width = max(len(n) for n in SUBCOMMANDS)
    for name, (_, _, help_text) in SUBCOMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {help_text}")
    lines.append("")
    lines.append("Run `llava-ln <command> --help` for the flags of a command.")
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
    module_name, function, _ = SUBCOMMANDS[name]
    return run_command(getattr(importlib.import_module(module_name), function), rest)


if __name__ == "__main__":
    sys.exit(main())
