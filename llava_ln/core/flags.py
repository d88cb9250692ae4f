"""Parse command-line flags into dataclasses (HfArgumentParser), with one-line errors; --help without torch.

A command's flags are a CommandFlags (its name as shown, a description, its flag dataclasses), declared in
a module that imports neither torch nor transformers, so that `llava-ln <command> --help` is answered
from the dataclasses alone (render_help: argparse, no transformers) before the command is even imported.
Every numeric flag's declared domain (core.flag_domains) is checked before the dataclasses are returned,
so a value outside it is one line naming the flag before any command reads a model or data; --help shows it.
"""
from dataclasses import dataclass

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import check_flag_domains, with_domain_in_help

HELP_FLAGS = ("-h", "--help")


@dataclass(frozen=True)
class CommandFlags:
    """What parse_flags and --help need of a command: prog ("llava-ln eval"), description, flag dataclasses."""

    prog: str
    description: str
    types: tuple


def parse_flags(argv, dataclass_types, prog: str, description: str = ""):
    """Return one instance per dataclass type; unknown flags and out-of-domain values are a LlavaLnError."""
    if wants_help(argv):
        print_help_and_exit(CommandFlags(prog, description, tuple(dataclass_types)))
    parser = _domain_parser(dataclass_types, prog=prog, description=description)
    *parsed, remaining = parser.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
    if remaining:
        raise LlavaLnError(f"{prog}: unknown flag(s): {' '.join(remaining)}")
    check_flag_domains(*parsed)
    return parsed


def parse_command_flags(argv, command: CommandFlags):
    return parse_flags(argv, command.types, command.prog, command.description)


# ---- --help, rendered from the dataclasses alone ----

def wants_help(argv) -> bool:
    return any(word in HELP_FLAGS for word in argv)


def print_help_and_exit(command: CommandFlags) -> None:
    print(render_help(command))
    raise SystemExit(0)


def render_help(command: CommandFlags) -> str:
    """The command's --help: every flag with its value type or choices, its help and its default.

    A flag without a default, or named in a dataclass's `required_flags` (checked by the command itself),
    says "(required)"; a flag whose default is None shows none. A boolean takes an optional true/false;
    one that defaults to true also gets its --no_<name> line, saying what it turns off.
    """
    import argparse
    import typing
    from dataclasses import MISSING, fields

    parser = argparse.ArgumentParser(prog=command.prog, description=command.description,
                                     formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=32))
    required = {name for kind in command.types for name in getattr(kind, "required_flags", ())}
    seen = set()
    for kind in command.types:
        hints = typing.get_type_hints(kind)
        for spec in map(with_domain_in_help, fields(kind)):
            if spec.name in seen or not spec.init:
                continue
            seen.add(spec.name)
            value_type = _plain_type(hints[spec.name])
            text = spec.metadata.get("help", "").strip()
            has_default = spec.default is not MISSING or spec.default_factory is not MISSING
            default = spec.default if spec.default is not MISSING else None
            is_required = not has_default or spec.name in required
            choices = spec.metadata.get("choices")
            if is_required:
                suffix = " (required)"
            elif default is None:
                suffix = ""
            else:
                suffix = f" (default: {_shown(default)})"
            options = {"help": text + suffix, "required": is_required}  # help texts write % as %% (argparse)
            if value_type is bool:
                parser.add_argument(f"--{spec.name}", nargs="?", metavar="true|false", **options)
                if default is True:
                    parser.add_argument(f"--no_{spec.name}", action="store_true", help=(
                    f"Same as --{spec.name} false: turns off what --{spec.name} does ({_lowered(text).rstrip('.')})."))
            else:
                metavar = "{" + ",".join(map(str, choices)) + "}" if choices else value_type.__name__.upper()
                parser.add_argument(f"--{spec.name}", metavar=metavar, **options)
    return parser.format_help()


def _plain_type(hint):
    """Optional[X] -> X (the flag takes an X)."""
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _shown(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if value == "" else str(value)


def _lowered(text: str) -> str:
    """'Load the export ...' -> 'load the export ...' (the sentence continues after 'Turn off --x:')."""
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def usage_error(prog: str, message: str) -> LlavaLnError:
    """argparse's complaint as one line naming the flag as --help shows it (without the --dashed-alias
    HfArgumentParser adds), instead of argparse's usage dump in another notation than --help's."""
    import re

    message = re.sub(r"(--\w+)/--[\w-]+", r"\1", message)
    return LlavaLnError(f"{prog}: {message} (see {prog} --help)")


def _domain_parser(dataclass_types, **kwargs):
    """An HfArgumentParser that keeps each flag's domain out of argparse (shown in its help instead) and
    reports a usage error as a LlavaLnError (one line, exit 2) rather than printing usage and exiting."""
    from transformers import HfArgumentParser

    class DomainParser(HfArgumentParser):
        @staticmethod
        def _parse_dataclass_field(parser, field):
            HfArgumentParser._parse_dataclass_field(parser, with_domain_in_help(field))

        def error(self, message):
            raise usage_error(self.prog, message)

    return DomainParser(dataclass_types, **kwargs)
