"""bench/ is a package like the library's: its docstring names every module, and every module has a docstring."""
import ast
import os
import re

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")


def _docstring(name: str) -> str:
    with open(os.path.join(BENCH, name), encoding="utf-8") as handle:
        return ast.get_docstring(ast.parse(handle.read())) or ""


def test_the_package_docstring_names_every_module_and_each_says_what_it_is():
    modules = sorted(name for name in os.listdir(BENCH) if name.endswith(".py") and name != "__init__.py")
    package = _docstring("__init__.py")
    assert modules and [m for m in modules if not re.search(rf"\b{m[:-3]}\b", package)] == []
    assert [m for m in modules if not _docstring(m).strip()] == []
