"""Every numeric flag of every command declares its domain, and parse_flags refuses a value outside it in one line.

The flag dataclasses are found from the package's source (every module with a dataclass whose fields carry
`help` metadata, the text HfArgumentParser shows), so a flag added anywhere later is covered without
editing this file.
"""
import dataclasses
import importlib
import math
import pathlib

import pytest

import llava_ln
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import DOMAIN_KEY, Domain, check_flag_domains, numeric_fields, with_domain_in_help
from llava_ln.core.flags import parse_flags

PACKAGE = pathlib.Path(llava_ln.__file__).parent
HOW_TO_DECLARE = (
    "declare its domain next to it, in the field's metadata, e.g.\n"
    "    from llava_ln.core.flag_domains import Domain\n"
    "    my_steps: int = field(default=10, metadata={\"help\": \"...\", \"domain\": Domain(ge=1)})\n"
    "Domain(ge=, gt=, le=, lt=) bounds it, Domain(choices=(4, 8)) lists it, special={0: \"off\"} adds documented "
    "values outside the range, Domain(note=\"why\") accepts any finite number; a flag that must accept what "
    "another accepts uses domain_of(OtherArguments, \"name\"). core/flag_domains.py explains each.")


def _flag_classes() -> list:
    """Every dataclass of the package whose fields carry help text: the classes parse_flags turns argv into."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if "@dataclass" not in source or '"help"' not in source:
            continue
        name = ".".join(("llava_ln", *path.relative_to(PACKAGE).with_suffix("").parts))
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == name \
                    and any("help" in spec.metadata for spec in dataclasses.fields(obj)):
                found[obj.__qualname__] = obj
    return sorted(found.values(), key=lambda c: c.__qualname__)


FLAG_CLASSES = _flag_classes()
# Each numeric field once, where it is declared (a composed dataclass inherits it).
NUMERIC = sorted({(owner, spec.name): (owner, spec, kind) for cls in FLAG_CLASSES for spec, kind in numeric_fields(cls)
                  for owner in [next(c for c in cls.__mro__ if spec.name in c.__dict__.get("__annotations__", {}))]
                  }.values(), key=lambda item: (item[0].__qualname__, item[1].name))


def test_the_flag_classes_of_every_command_are_found():
    names = {cls.__name__ for cls in FLAG_CLASSES}
    assert {"TrainingArguments", "EvalArguments", "ExportArguments", "CompareArguments", "AnalyzeArguments",
            "DemoRecipe", "DescribeArguments", "ScoreRequest", "ToyArguments", "TuningArguments"} <= names
    assert len(NUMERIC) >= 60


def test_every_numeric_flag_declares_its_domain():
    undeclared = [f"{owner.__module__}.{owner.__qualname__}.{spec.name}" for owner, spec, _ in NUMERIC
                  if not isinstance(spec.metadata.get(DOMAIN_KEY), Domain)]
    assert not undeclared, f"numeric flags without a domain: {', '.join(undeclared)}.\nFor each, {HOW_TO_DECLARE}"


def _outside(domain: Domain, kind: type) -> list:
    """Values just outside the domain: below the lowest accepted, above the highest, between choices."""
    step = 1 if kind is int else 1e-6
    values = []
    if domain.choices is not None:
        values.append(max(domain.choices) + 1)
    low = domain.ge - step if domain.ge is not None else domain.gt if domain.gt is not None else None
    if low is not None:
        values.append(min([low, *(v - step for v in domain.special if v <= low)]))
    high = domain.le + step if domain.le is not None else domain.lt if domain.lt is not None else None
    if high is not None:
        values.append(max([high, *(v + step for v in domain.special if v >= high)]))
    return [kind(v) for v in values]


def _required_argv(cls) -> list:
    """Flags the dataclass needs before its numbers are checked: required fields, and what __post_init__ asks."""
    argv = []
    for spec in dataclasses.fields(cls):
        if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            argv += [f"--{spec.name}", str((spec.metadata.get("choices") or ["x"])[0])]
        elif spec.name in ("output_dir", "checkpoint"):
            argv += [f"--{spec.name}", "unused"]
    return argv


CASES = [pytest.param(cls, spec.name, value, id=f"{cls.__name__}.{spec.name}={value}")
         for owner, spec, kind in NUMERIC if isinstance(spec.metadata.get(DOMAIN_KEY), Domain)
         for cls in [next(c for c in FLAG_CLASSES if owner in c.__mro__)]
         for value in _outside(spec.metadata[DOMAIN_KEY], kind)
         + ([math.nan, math.inf, -math.inf] if kind is float else [])]


@pytest.mark.parametrize("cls,name,value", CASES)
def test_a_value_outside_its_domain_is_one_line_naming_the_flag(cls, name, value):
    with pytest.raises(LlavaLnError) as caught:
        parse_flags(_required_argv(cls) + [f"--{name}={value}"], (cls,), prog="llava-ln test")  # = : argparse reads -1e-06 as a flag
    message = str(caught.value)
    domain = dict((spec.name, spec) for spec in dataclasses.fields(cls))[name].metadata[DOMAIN_KEY]
    kind = int if isinstance(value, int) else float
    assert message.startswith(f"--{name} {value}: must be ") and "\n" not in message, message
    assert message.endswith(domain.describe(kind is int)), message
    assert ("a finite number" in message) == (not math.isfinite(value)), message


def test_the_edges_and_special_values_of_a_domain_are_accepted():
    from llava_ln.training.args import TrainingArguments

    parsed = parse_flags(["--output_dir", "o", "--max_steps", "-1", "--warmup_ratio", "1", "--adam_beta1", "0",
                          "--max_grad_norm", "0", "--eval_steps", "0", "--save_steps", "0.001", "--seed", "4294967295"],
                         (TrainingArguments,), prog="llava-ln train")[0]
    assert (parsed.max_steps, parsed.warmup_ratio, parsed.max_grad_norm, parsed.seed) == (-1, 1.0, 0.0, 2**32 - 1)


def test_the_defaults_of_every_flag_class_lie_in_their_domains():
    for cls in FLAG_CLASSES:
        parse_flags(_required_argv(cls), (cls,), prog="llava-ln test")


def test_domains_describe_themselves_for_messages_and_help():
    assert Domain(ge=1, special={-1: "unset"}).describe(integer=True) == ">= 1, or -1 (unset)"
    assert Domain(ge=0, lt=1).describe() == "in [0, 1)"
    assert Domain(gt=0, le=1).describe() == "in (0, 1]"
    assert Domain(choices=(4, 8, 16)).describe() == "one of 4, 8, 16"
    assert Domain(note="negative counts back").describe(integer=True) == "any integer (negative counts back)"
    assert not Domain(ge=0).contains(math.nan) and not Domain(note="any").contains(math.inf)
    with pytest.raises(ValueError, match="either choices or bounds"):
        Domain(choices=(1, 2), ge=0)


def test_help_shows_the_domain_and_argparse_never_sees_it():
    from llava_ln.training.args import TrainingArguments

    spec = TrainingArguments.__dataclass_fields__["save_steps"]
    shown = with_domain_in_help(spec)
    assert DOMAIN_KEY not in shown.metadata and DOMAIN_KEY in spec.metadata  # the declaration itself is untouched
    assert shown.metadata["help"].endswith("(a value below 1 is a share of all steps). Allowed: > 0.")


def test_train_help_lists_the_domains(capsys):
    from llava_ln.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Clip the global gradient norm to this. Allowed: > 0, or 0 (no clipping)." in out
    assert "AdamW epsilon. Allowed: > 0." in out


def test_flags_built_in_code_are_checked_where_a_command_runs_them():
    from llava_ln.evaluation.args import EvalArguments
    from llava_ln.evaluation.runner import run_eval

    args = EvalArguments(benchmark="pope", model_path="run", output_dir="out", top_p=1.5)  # not parsed: not checked yet
    with pytest.raises(LlavaLnError, match=r"^--top_p 1.5: must be in \(0, 1\]$"):
        run_eval(args)
    with pytest.raises(LlavaLnError, match="--max_new_tokens 'many': must be an integer >= 1"):
        check_flag_domains(EvalArguments(benchmark="pope", model_path="run", output_dir="out", max_new_tokens="many"))
