"""The package layers point down only, and every package docstring lists exactly its modules.

A package imports from itself and from packages below it. The order is llava_ln.LAYERS; the package
docstring and README.md's layout list it for readers, checked here against it. Every import counts,
function-local ones included (a lazy import that points up is still a dependency that points up).
"""
import ast
import os
import re

import pytest

from llava_ln import LAYERS

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


# A package docstring's module list: one entry per line, indented exactly two spaces, the module's name
# (`loop` for loop.py) or a subpackage's name with a slash (`zero/`), then at least two spaces and what it
# does. Deeper-indented lines continue an entry's description; every other line is prose and lists nothing.
ENTRY = re.compile(r"^  ([A-Za-z_][A-Za-z0-9_]*/?) {2,}\S")


def _packages():
    """The package root ("") and every package and subpackage under it ("training", "training/zero", ...)."""
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        if "__init__.py" in files:
            yield os.path.relpath(root, PACKAGE).replace(os.sep, "/").removeprefix(".")


def listed_entries(docstring: str) -> list[str]:
    """The entries of a package docstring's module list, in order ("loop", "zero/", ...)."""
    return [match.group(1) for match in map(ENTRY.match, docstring.splitlines()) if match]


def package_contents(folder: str) -> set[str]:
    """What a package's docstring must list: its modules ("loop") and its subpackages ("zero/")."""
    names = set()
    for name in os.listdir(folder):
        if name.endswith(".py") and name != "__init__.py":
            names.add(name[:-3])
        elif os.path.isfile(os.path.join(folder, name, "__init__.py")):
            names.add(name + "/")
    return names


def _docstring(package: str) -> str:
    init = os.path.join(PACKAGE, package, "__init__.py")
    return ast.get_docstring(ast.parse(open(init, encoding="utf-8").read()), clean=False) or ""


@pytest.mark.parametrize("package", list(_packages()))
def test_package_docstring_lists_exactly_its_modules(package):
    """A newcomer reads a package in order: its docstring lists every module and subpackage in it, once each,
    and nothing that is not there (an entry left behind by a deleted or renamed module fails too)."""
    where = f"llava_ln/{package}/__init__.py".replace("//", "/")
    listed = listed_entries(_docstring(package))
    expected = package_contents(os.path.join(PACKAGE, package))
    duplicates = sorted({name for name in listed if listed.count(name) > 1})
    missing, stale = sorted(expected - set(listed)), sorted(set(listed) - expected)
    assert not (missing or stale or duplicates), (
        f"{where}: not listed {missing}, listed but absent {stale}, listed twice {duplicates} (an entry is a line "
        "'  name  what it does' for name.py, '  name/  ...' for a subpackage)")


def test_the_package_docstring_lists_the_layers_bottom_to_top():
    assert [name.rstrip("/") for name in listed_entries(_docstring(""))] == list(LAYERS)


def test_the_readme_layout_lists_the_layers_in_order():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    block = readme[readme.index("## Layout"):]
    block = block[:block.index("\n```\n", block.index("```") + 3)]
    assert re.findall(r"^  (\w+)(?:/|\.py) ", block, flags=re.MULTILINE) == list(LAYERS)
