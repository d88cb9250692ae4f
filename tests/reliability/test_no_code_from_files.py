"""No file can make llava-ln run code: a static check of every module, so a new reader cannot slip in.

Allowed: torch.load only with a literal weights_only=True, and only in the two readers built for it
(checkpoint/tensors.py: load_torch_tensors_safely; checkpoint/zero_shards.py: DeepSpeed shards).
Refused anywhere: pickle/dill/joblib/marshal loading, numpy loads with allow_pickle, weights_only=False,
trust_remote_code=True, yaml.load, eval/exec.
Every `from_pretrained` goes through core/pretrained.py (trust_remote_code pinned off, metadata files
bounded); the one exception is export/fresh_child.py, the plain-transformers process of a verification,
which must not import llava-ln and passes a literal trust_remote_code=False itself. Every JSON read goes
through core/bounded_json.py (json.load / json.loads nowhere else, except a json.loads(json.dumps(...))
round trip of our own values, and fresh_child), also in experiments/: a folder compare or the demo wrote
is still a file a user can edit, and --variants is a user's file.
"""
import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "llava_ln")
TORCH_LOAD_HOMES = {os.path.join("checkpoint", "tensors.py"), os.path.join("checkpoint", "zero_shards.py")}
PRETRAINED_HOME = os.path.join("core", "pretrained.py")
JSON_HOME = os.path.join("core", "bounded_json.py")
FRESH_CHILD = os.path.join("export", "fresh_child.py")
FORBIDDEN_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("dill", "load"),
                   ("dill", "loads"), ("joblib", "load"), ("marshal", "load"), ("marshal", "loads"),
                   ("yaml", "load"), ("yaml", "unsafe_load"), ("shelve", "open")}


def _modules():
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                yield os.path.relpath(path, PACKAGE), ast.parse(open(path, encoding="utf-8").read(), filename=path)


def _dotted(node) -> tuple:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "<expression>")  # x().eval() is no bare eval
    return tuple(reversed(parts))


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _problems():
    for relative, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            where = f"{relative}:{node.lineno}"
            if name[-2:] == ("torch", "load") or name == ("load",) and relative in TORCH_LOAD_HOMES:
                safe = _keyword(node, "weights_only")
                if relative not in TORCH_LOAD_HOMES:
                    yield f"{where}: torch.load outside the safe readers"
                elif not (isinstance(safe, ast.Constant) and safe.value is True):
                    yield f"{where}: torch.load without a literal weights_only=True"
            if name[-2:] in FORBIDDEN_CALLS:
                yield f"{where}: {'.'.join(name)}"
            if name[-1:] in (("eval",), ("exec",)) and len(name) == 1:
                yield f"{where}: {name[0]}()"
            if name[-1:] == ("load",) and name[:1] in (("np",), ("numpy",)):
                allow = _keyword(node, "allow_pickle")
                if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                    yield f"{where}: numpy load with allow_pickle"
            for keyword, bad in (("weights_only", False), ("trust_remote_code", True)):
                value = _keyword(node, keyword)
                if value is not None and not (isinstance(value, ast.Constant) and value.value is not bad):
                    yield f"{where}: {keyword}={ast.unparse(value)}"
            if name[-1] == "from_pretrained" and relative != PRETRAINED_HOME:
                pinned = _keyword(node, "trust_remote_code")
                if relative != FRESH_CHILD:
                    yield f"{where}: from_pretrained outside core/pretrained.py (use load_pretrained)"
                elif not (name[:1] == ("PeftModel",) or isinstance(pinned, ast.Constant) and pinned.value is False):
                    yield f"{where}: from_pretrained without a literal trust_remote_code=False"
            if name[-2:] in (("json", "load"), ("json", "loads")) and relative not in (JSON_HOME, FRESH_CHILD):
                argument = node.args[0] if node.args else None
                round_trip = isinstance(argument, ast.Call) and _dotted(argument.func)[-2:] == ("json", "dumps")
                if not round_trip:
                    yield f"{where}: {'.'.join(name)} outside core/bounded_json.py"


def test_no_module_unpickles_or_runs_code_from_a_file():
    problems = list(_problems())
    assert not problems, "\n".join(problems)


def test_the_check_sees_what_it_forbids(tmp_path):
    """The scanner itself: each forbidden form in a scratch module is reported."""
    global PACKAGE
    (tmp_path / "bad.py").write_text(
        "import pickle, torch, numpy as np\n"
        "pickle.load(open('x', 'rb'))\n"
        "torch.load('x')\n"
        "np.load('x', allow_pickle=True)\n"
        "f(weights_only=False)\n"
        "g(trust_remote_code=True)\n"
        "eval('1')\n"
        "AutoConfig.from_pretrained('x')\n"
        "import json\njson.load(open('x'))\n"
        "json.loads(json.dumps({}))\n"
    )
    saved, PACKAGE = PACKAGE, str(tmp_path)
    try:
        found = list(_problems())
    finally:
        PACKAGE = saved
    assert len(found) == 8, found
