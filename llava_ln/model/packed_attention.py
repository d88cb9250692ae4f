"""Whether an LLM keeps the samples of a packed row apart (--packing), judged from its config and source.

A packed row holds several samples one after another, with position ids restarting at 0 at each
(data.packing); nothing but those position ids tells the model where one sample ends. An LLM keeps
the samples apart when all three hold:
  * its attention implementation reads packed samples from position ids: transformers' mask
    factories (masking_utils) build a block-diagonal mask from them for eager, sdpa and
    flex_attention, and FlashAttention runs its variable-length kernel from them;
  * every layer mixes tokens through attention alone: a Mamba, convolution (LFM2) or linear-attention
    (Qwen3-Next) layer carries one sample's state into the next whatever the mask;
  * its forward hands the position ids to every mask factory it calls: OPT, BLOOM, MPT, BioGPT or
    GPT-OSS call them without, and then get a mask that is causal over the whole row.
The last is read from the forward's source (a keyword, a dict of keyword arguments, a variable
holding a factory), so deciding costs no forward of a possibly large model; whatever the reading
cannot confirm is refused. tests/model/test_packed_forward.py holds the verdicts against what
tiny models of several families compute.
"""
import ast
import inspect
import textwrap

# Attention implementations that confine attention to each packed sample given restarting position ids.
PACKABLE_ATTENTION = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")
# transformers' mask factories: given the position ids (and no 2D mask, no cache) they build a mask per sample.
MASK_FACTORIES = ("create_causal_mask", "create_sliding_window_causal_mask", "create_chunked_causal_mask")
# Layer kinds (config.layer_types, or layers_block_type in hybrid configs) that mix tokens only through attention,
# or not at all (the feed-forward kinds of hybrid patterns).
ATTENTION_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention", "attention", "mlp", "moe")


def packed_attention_problem(llm) -> str | None:
    """Why `llm` (the language model inside the multimodal one) cannot keep packed samples apart, or None."""
    implementation = getattr(llm.config, "_attn_implementation", None)
    if implementation not in PACKABLE_ATTENTION:
        return (f"attention implementation {implementation!r} is not one that confines attention to each packed "
                f"sample ({', '.join(PACKABLE_ATTENTION)})")
    other_layers = non_attention_layer_types(llm.config)
    if other_layers:
        return (f"{type(llm).__name__} has {', '.join(map(repr, other_layers))} layers, which carry one packed "
                "sample's tokens into the next whatever the attention mask")
    if not masks_get_position_ids(type(llm)):
        return (f"{type(llm).__name__} does not pass the position ids to transformers' mask factories when it "
                "builds its attention mask, so packed samples would attend to each other")
    return None


def non_attention_layer_types(config) -> list[str]:
    """The layer kinds of `config` that are not attention (sorted, each once)."""
    kinds = set()
    for name in ("layer_types", "layers_block_type"):
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple)):
            kinds.update(str(kind) for kind in value)
    return sorted(kinds - set(ATTENTION_LAYER_TYPES))


def masks_get_position_ids(model_class) -> bool:
    """Whether model_class.forward calls a mask factory and hands every call the position ids. False when its
    source cannot be read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(model_class.forward))))
    except (OSError, TypeError, SyntaxError):
        return False
    names = _ForwardNames(tree)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and names.is_factory(node.func)]
    return bool(calls) and all(names.passes_position_ids(call) for call in calls)


class _ForwardNames:
    """What the local variables of a forward hold, as far as mask factories go: which name a factory
    (`mask_function = create_causal_mask if ... else ...`), and which keys a keyword dict gets (a dict
    literal, `dict(key=...)`, `d["key"] = ...`, or another such dict's `.copy()`, `dict(other)`, `{**other}`)."""

    def __init__(self, tree: ast.AST):
        self.factories: set[str] = set()
        self.keys: dict[str, set] = {}
        copies: list[tuple[str, str]] = []  # (name, the dict it starts from)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self._bind(target.id, node.value, copies)
                elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                      and isinstance(target.slice, ast.Constant)):
                    self.keys.setdefault(target.value.id, set()).add(target.slice.value)
        for _ in copies:  # enough rounds for any chain of copies
            for name, source in copies:
                self.keys.setdefault(name, set()).update(self.keys.get(source, ()))

    def _bind(self, name: str, value: ast.expr, copies: list) -> None:
        if any(isinstance(n, ast.Name) and n.id in MASK_FACTORIES for n in ast.walk(value)) and \
                isinstance(value, (ast.Name, ast.IfExp, ast.BoolOp)):
            self.factories.add(name)
        elif isinstance(value, ast.Dict):
            keys = self.keys.setdefault(name, set())
            for key, item in zip(value.keys, value.values):
                if isinstance(key, ast.Constant):
                    keys.add(key.value)
                elif key is None and isinstance(item, ast.Name):  # {**other, ...}
                    copies.append((name, item.id))
        elif isinstance(value, ast.Call):
            source = _copied_dict(value)
            if source:
                copies.append((name, source))
            if isinstance(value.func, ast.Name) and value.func.id == "dict":  # dict(config=..., position_ids=...)
                self.keys.setdefault(name, set()).update(k.arg for k in value.keywords if k.arg)

    def is_factory(self, func: ast.expr) -> bool:
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        return called in MASK_FACTORIES or (isinstance(func, ast.Name) and func.id in self.factories)

    def passes_position_ids(self, call: ast.Call) -> bool:
        for keyword in call.keywords:
            if keyword.arg == "position_ids":
                return True
            if keyword.arg is None and isinstance(keyword.value, ast.Name):
                if "position_ids" in self.keys.get(keyword.value.id, ()):
                    return True
        return False


def _copied_dict(call: ast.Call) -> str | None:
    """The name of the dict that `other.copy()` or `dict(other, ...)` copies, else None."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "copy" and isinstance(func.value, ast.Name):
        return func.value.id
    if isinstance(func, ast.Name) and func.id == "dict" and call.args and isinstance(call.args[0], ast.Name):
        return call.args[0].id
    return None
