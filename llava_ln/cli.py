"""`llava-ln` console entry point: dispatches to one module per subcommand.

Subcommands are looked up lazily so that `llava-ln describe` does not import DeepSpeed
and a broken optional dependency only affects the subcommand that needs it.
Each command module exposes `main(argv: list[str]) -> int | None`.
"""
import importlib
import sys

from llava_ln.core.errors import LlavaLnError

# name -> (module, one-line help). Order is the order shown in `llava-ln --help`.
SUBCOMMANDS = {
    "describe": ("llava_ln.commands.describe", "count parameters and show what a --tune_mode trains"),
    "inspect-data": ("llava_ln.commands.inspect_data", "print processed samples with their label masks"),
    "train": ("llava_ln.train", "run stage 1 or stage 2 training (same flags as llava_ln/train.py)"),
    "toy": ("llava_ln.commands.toy", "write the synthetic toy world (data, eval sets, tiny backbones)"),
    "eval": ("llava_ln.commands.eval", "generate benchmark answers in the official formats"),
    "score": ("llava_ln.commands.score", "score prediction files exactly as the official tools do"),
    "merge": ("llava_ln.commands.merge", "fold trained tensors into one standalone checkpoint"),
    "export": ("llava_ln.commands.export", "export to the transformers-native LLaVA format (verified)"),
    "demo": ("llava_ln.commands.demo", "run the whole pipeline on the toy world and write a report"),
}


def _usage() -> str:
    lines = ["usage: llava-ln <command> [flags]", "", "commands:"]
    width = max(len(n) for n in SUBCOMMANDS)
    for name, (_, help_text) in SUBCOMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {help_text}")
    lines.append("")
    lines.append("Run `llava-ln <command> --help` for the flags of a command.")
    return "\n".join(lines)


def one_line(err: LlavaLnError) -> str:
    """The user-facing line of an error.

    A LlavaLnError raised inside a DataLoader worker is re-raised by PyTorch in the main
    process with the worker's traceback embedded in its message; only its last line (our
    own message) is meant for the user.
    """
    message = str(err)
    if "Traceback (most recent call last)" not in message:
        return message
    last = [line for line in message.strip().splitlines() if line.strip()][-1]
    prefix = f"{LlavaLnError.__module__}.{LlavaLnError.__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


def run_command(main_fn, argv) -> int:
    """Run a command's main, turning LlavaLnError into a one-line message and exit code 2."""
    try:
        code = main_fn(argv)
    except LlavaLnError as err:
        print(f"llava-ln: error: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("llava-ln: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"llava-ln: error: unknown command {name!r}; choose from: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return run_command(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
