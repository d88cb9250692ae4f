"""Parse command-line flags into dataclasses (HfArgumentParser), with one-line errors."""
from transformers import HfArgumentParser

from llava_ln.core.errors import LlavaLnError


def parse_flags(argv, dataclass_types, prog: str, description: str = ""):
    """Return one instance per dataclass type; unknown flags are a LlavaLnError naming them."""
    parser = HfArgumentParser(dataclass_types, prog=prog, description=description)
    *parsed, remaining = parser.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
    if remaining:
        raise LlavaLnError(f"{prog}: unknown flag(s): {' '.join(remaining)}")
    return parsed
