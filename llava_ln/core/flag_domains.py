"""The domain of every numeric flag, declared beside the flag and checked before any command does work.

A numeric field (int, float, or Optional of either) of a flag dataclass declares the values it accepts
in its metadata, next to its help text:

    save_steps: float = field(default=500, metadata={"help": "...", "domain": Domain(gt=0)})
    max_steps: int = field(default=-1, metadata={
        "help": "...", "domain": Domain(ge=1, special={-1: "--num_train_epochs decides"})})

Domain(ge=, gt=, le=, lt=) bounds the value (any mix), Domain(choices=(...)) lists it, special={value:
meaning} adds values outside that range whose meaning is documented (0 = off, -1 = unset, ...), and
note= explains an unbounded one (Domain(note="...") accepts any finite number). A float is always
finite: NaN and infinities are never in a domain. An Optional field also accepts None (its default
is computed later). A flag that must agree with another dataclass's declares `domain_of(Other, name)`.

check_flag_domains(*flag_objects) refuses the first value outside its domain in one line naming the
flag, the value and the domain (`--save_steps 0.0: must be > 0`). parse_flags runs it on every command
line before returning; a dataclass built in code is not checked on construction (its values come
from a manifest, a recipe or a caller that checked them), so the functions that run a command from
one built in code call check_flag_domains themselves (run_eval, run_compare, run_demo, run_analyze).
with_domain_in_help(field) is the field HfArgumentParser sees: the domain appended to its help,
the `domain` key removed (argparse would take it for an argument of add_argument).
"""
import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields

from llava_ln.core.errors import LlavaLnError

DOMAIN_KEY = "domain"


@dataclass(frozen=True, kw_only=True)
class Domain:
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    special: dict = field(default_factory=dict)  # value outside the range -> what it means
    note: str = ""  # why an unbounded domain is unbounded, or what the range means

    def __post_init__(self):
        if self.choices is not None and any(v is not None for v in (self.ge, self.gt, self.le, self.lt)):
            raise ValueError("a Domain is either choices or bounds, not both")

    def contains(self, value) -> bool:
        if value in self.special:
            return True
        if not math.isfinite(value):
            return False
        if self.choices is not None:
            return value in self.choices
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self, integer: bool = False) -> str:
        """'>= 1, or -1 (--num_train_epochs decides)', 'in [0, 1)', 'one of 4, 8, 16', 'any integer'."""
        if self.choices is not None:
            text = "one of " + ", ".join(map(_shown, self.choices))
        else:
            low = (self.ge, "[") if self.ge is not None else (self.gt, "(") if self.gt is not None else None
            high = (self.le, "]") if self.le is not None else (self.lt, ")") if self.lt is not None else None
            if low and high:
                text = f"in {low[1]}{_shown(low[0])}, {_shown(high[0])}{high[1]}"
            elif low:
                text = f"{'>=' if low[1] == '[' else '>'} {_shown(low[0])}"
            elif high:
                text = f"{'<=' if high[1] == ']' else '<'} {_shown(high[0])}"
            else:
                text = "any integer" if integer else "any finite number"
        if self.note:
            text += f" ({self.note})"
        return text + "".join(f", or {_shown(value)} ({meaning})" for value, meaning in self.special.items())


def _shown(number) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


def numeric_type(annotation) -> type | None:
    """int or float for a field typed int, float, Optional[int] or Optional[float] (bool is not numeric)."""
    if annotation in (int, float):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1 and members[0] in (int, float):
            return members[0]
    return None


def numeric_fields(flags_class) -> list[tuple[dataclasses.Field, type]]:
    """(field, int or float) for every numeric field of a flag dataclass, inherited ones included."""
    hints = typing.get_type_hints(flags_class)
    return [(spec, kind) for spec in fields(flags_class) if (kind := numeric_type(hints[spec.name])) is not None]


def domain_of(flags_class, name: str) -> Domain:
    """The domain `flags_class` declares for `name` (for a flag that must accept the same values)."""
    for spec in fields(flags_class):
        if spec.name == name:
            return spec.metadata[DOMAIN_KEY]
    raise KeyError(f"{flags_class.__name__} has no flag {name}")


def check_flag_domains(*flag_objects) -> None:
    """Raise a LlavaLnError naming the first numeric flag whose value lies outside its declared domain."""
    for flags in flag_objects:
        for spec, kind in numeric_fields(type(flags)):
            value = getattr(flags, spec.name)
            if value is None:
                continue  # Optional: the default is decided later
            domain = spec.metadata.get(DOMAIN_KEY, Domain())
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not is_number or (kind is int and not isinstance(value, int)):
                raise LlavaLnError(f"--{spec.name} {value!r}: must be {'an integer' if kind is int else 'a number'} "
                                   f"{domain.describe(kind is int)}")
            if not domain.contains(value):
                finite = "" if math.isfinite(value) else "a finite number "
                raise LlavaLnError(f"--{spec.name} {value}: must be {finite}{domain.describe(kind is int)}")


def with_domain_in_help(spec: dataclasses.Field) -> dataclasses.Field:
    """A copy of a flag's field for the argument parser: the domain shown at the end of its help."""
    if DOMAIN_KEY not in spec.metadata:
        return spec
    metadata = {key: value for key, value in spec.metadata.items() if key != DOMAIN_KEY}
    integer = numeric_type(spec.type) is int
    shown = f"Allowed: {spec.metadata[DOMAIN_KEY].describe(integer)}.".replace("%", "%%")  # argparse %-formats help
    metadata["help"] = f"{metadata['help']} {shown}" if metadata.get("help") else shown
    shown_field = copy.copy(spec)
    shown_field.metadata = types.MappingProxyType(metadata)
    return shown_field


# --seed and every other seed: numpy's seeds are 32-bit.
SEEDS = Domain(ge=0, le=2**32 - 1)
