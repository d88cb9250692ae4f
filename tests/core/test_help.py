"""`llava-ln <command> --help`: answered without importing torch, transformers or DeepSpeed; every flag described
as it works (required flags say so, negated booleans say what they turn off, defaults shown once)."""
import json
import subprocess
import sys

import pytest

from llava_ln.cli import SUBCOMMANDS, command_flags
from llava_ln.core.flags import render_help

# One process for every subcommand (each help is printed, then sys.modules inspected), so the check costs
# one interpreter start, not eleven.
PROBE = """
import contextlib, io, json, sys
from llava_ln.cli import SUBCOMMANDS, main
heavy = ("torch", "transformers", "deepspeed")
result = {}
for name in SUBCOMMANDS:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([name, "--help"])
            code = None
        except SystemExit as done:
            code = done.code
    result[name] = {"code": code, "text": out.getvalue(), "imported": [m for m in heavy if m in sys.modules]}
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def helps():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_every_subcommand_help_imports_no_torch(helps):
    assert set(helps) == set(SUBCOMMANDS)
    for name, result in helps.items():
        assert result["code"] == 0 and f"usage: llava-ln {name}" in result["text"], name
        assert result["imported"] == [], (name, result["imported"])


def _entry(text: str, flag: str) -> str:
    """The help of one flag, its lines joined."""
    lines = text.splitlines()
    # An entry starts at column 2; the wrapped usage lines above the entries are indented further.
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("  " + flag) and line[2:].split(" ")[0] in (flag, flag + ","))
    entry = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith(" " * 10):  # flags start at column 2, continued help far right
            break
        entry.append(line)
    return " ".join(" ".join(entry).split())


def test_negated_booleans_say_what_they_turn_off(helps):
    text = helps["export"]["text"]
    assert _entry(text, "--no_verify") == ("--no_verify Same as --verify false: turns off what --verify does (load "
                                           "the export in a fresh process and compare outputs).")
    assert _entry(text, "--verify").endswith("(default: true)")


def test_required_flags_say_required_and_no_flag_shows_a_default_of_none(helps):
    assert _entry(helps["merge"]["text"], "--checkpoint").endswith("(required)")
    assert _entry(helps["eval"]["text"], "--benchmark").endswith("(required)")
    assert _entry(helps["eval"]["text"], "--output_dir").endswith("(required)")
    assert _entry(helps["train"]["text"], "--output_dir").endswith("(required)")
    for name, result in helps.items():
        assert "(default: None)" not in result["text"], name


def test_demo_help_shows_the_recipe_knobs_with_descriptions_and_defaults(helps):
    text = helps["demo"]["text"]
    assert _entry(text, "--stage2_steps") == "--stage2_steps INT Stage-2 optimizer steps. Allowed: >= 1. (default: 600)"
    assert _entry(text, "--stage1_lr") == "--stage1_lr FLOAT Stage-1 learning rate. Allowed: >= 0. (default: 0.002)"
    assert _entry(text, "--restart").startswith("--restart [true|false] Start over")
    assert "--eval_scale" in text and "--benchmarks" in text


def test_a_default_both_recipes_share_is_said_once():
    text = render_help(command_flags("compare"))
    assert "(default: 16, with either recipe)" in " ".join(text.split())
    assert "else 16" not in text
