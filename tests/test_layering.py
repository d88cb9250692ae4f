"""The package layers point down only: a package imports from itself and from packages below it.

The order is llava_ln.LAYERS; the package docstring and README.md's layout list it in prose, checked here
against it. Every import counts, function-local ones included (a lazy import
that points up is still a dependency that points up).
"""
import ast
import os
import re

import pytest

import llava_ln
from llava_ln import ENTRY_POINTS, LAYERS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "llava_ln")


def _layer_of(module: str) -> str | None:
    """`llava_ln.training.loop` -> "training"; the package root itself has no layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "llava_ln" else None


def _modules():
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                yield relative.removesuffix(".__init__"), path


def _imports(path: str):
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def test_every_package_has_a_layer():
    packages = {_layer_of(module) for module, _ in _modules()} - {None}
    assert packages <= set(LAYERS), f"packages without a layer: {sorted(packages - set(LAYERS))}"


def test_imports_point_down_only():
    upward = []
    for module, path in _modules():
        here = _layer_of(module)
        if here is None:
            continue
        for line, imported in _imports(path):
            there = _layer_of(imported)
            if there is not None and there in LAYERS and LAYERS.index(there) > LAYERS.index(here):
                upward.append(f"{os.path.relpath(path, os.path.dirname(PACKAGE))}:{line} ({here}) imports {imported}")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def _packages():
    """Every package and subpackage, as a path under llava_ln/ ("training", "training/zero", ...)."""
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        if root != PACKAGE and "__init__.py" in files:
            yield os.path.relpath(root, PACKAGE).replace(os.sep, "/")


@pytest.mark.parametrize("package", list(_packages()))
def test_package_docstring_names_its_modules(package):
    """A newcomer reads a package in order: its docstring names every module in it."""
    init = os.path.join(PACKAGE, package, "__init__.py")
    doc = ast.get_docstring(ast.parse(open(init, encoding="utf-8").read())) or ""
    folder = os.path.join(PACKAGE, package)
    modules = [n[:-3] for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py"]
    modules += [n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n, "__init__.py"))]
    missing = [m for m in modules if m not in doc]
    assert not missing, f"llava_ln/{package}/__init__.py does not mention {missing}"


def test_the_package_docstring_lists_the_layers_in_order():
    doc = llava_ln.__doc__
    listed = re.findall(r"^  (\w+)/ ", doc, flags=re.MULTILINE)
    assert listed == [name for name in LAYERS if name not in ENTRY_POINTS]
    entry_points = doc[doc.index("Entry points:"):]
    assert all(f"{name}.py" in entry_points or f"{name}/" in entry_points for name in ENTRY_POINTS)


def test_the_readme_layout_lists_the_layers_in_order():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    block = readme[readme.index("## Layout"):]
    block = block[:block.index("\n```\n", block.index("```") + 3)]
    assert re.findall(r"^  (\w+)(?:/|\.py) ", block, flags=re.MULTILINE) == list(LAYERS)
