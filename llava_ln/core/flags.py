"""Parse command-line flags into dataclasses (HfArgumentParser), with one-line errors.

Every numeric flag's declared domain (core.flag_domains) is checked before the dataclasses are returned,
so a value outside it is one line naming the flag before any command reads a model or data.
"""
from transformers import HfArgumentParser

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import check_flag_domains, with_domain_in_help


def parse_flags(argv, dataclass_types, prog: str, description: str = ""):
    """Return one instance per dataclass type; unknown flags and out-of-domain values are a LlavaLnError."""
    parser = _DomainParser(dataclass_types, prog=prog, description=description)
    *parsed, remaining = parser.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
    if remaining:
        raise LlavaLnError(f"{prog}: unknown flag(s): {' '.join(remaining)}")
    check_flag_domains(*parsed)
    return parsed


class _DomainParser(HfArgumentParser):
    """HfArgumentParser that shows each flag's domain in --help (and keeps the domain out of argparse)."""

    @staticmethod
    def _parse_dataclass_field(parser, field):
        HfArgumentParser._parse_dataclass_field(parser, with_domain_in_help(field))
