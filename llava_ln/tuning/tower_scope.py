"""Which vision-tower modules can change the image features LLaVA selects, and which of them a run tunes.

LLaVA reads hidden_states[vision_feature_layer] of the tower: the patch embeddings (and CLIP's
pre-norm) feed hidden_states[0], encoder layer i produces hidden_states[i + 1]. So with the default
feature layer -2 the last encoder layer never influences the features, and the modules that run after
the encoder (the final norm, SigLIP's attention-pooling head) influence no feature for any layer:
hidden_states are taken before them. A parameter there can receive no gradient, so it is never trained,
counted as trainable or saved.

Found by structure, not by name: the encoder layers are the tower's ModuleList whose length is the
config's num_hidden_layers; on the path from the tower down to that list, a sibling registered before
the path runs before the encoder (transformers registers a tower's parts in the order they run), one
registered after runs after it. --vision_tune_last_layers K narrows the scope to the last K reachable
layers (and then nothing before the encoder tunes).
"""
from dataclasses import dataclass

from torch import nn

from llava_ln.core.errors import LlavaLnError
from llava_ln.model.parts import unwrap, vision_tower_of


@dataclass(frozen=True)
class TowerScope:
    """Module names, relative to the Llava model, whose parameters may tune."""

    before: tuple  # modules that run before the encoder (patch embeddings, pre-norm)
    layers: tuple  # the tuned encoder layers, in order
    reachable_layers: int  # how many encoder layers the feature layer reaches
    total_layers: int

    @property
    def prefixes(self) -> tuple:
        return self.before + self.layers

    def covers(self, name: str) -> bool:
        """Whether a parameter name (or module name) lies inside the scope."""
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self.prefixes)


def _encoder_layers_path(tower: nn.Module) -> str:
    expected = getattr(tower.config, "num_hidden_layers", None)
    hits = [name for name, module in tower.named_modules()
            if isinstance(module, nn.ModuleList) and len(module) == expected]
    if len(hits) != 1:
        raise LlavaLnError(f"cannot find the encoder layers of the vision tower {type(tower).__name__}: "
                           f"{len(hits)} ModuleLists of length {expected}; use --vision_tune_mode frozen")
    return hits[0]


def reachable_layer_count(feature_layer, total_layers: int) -> int:
    """How many encoder layers can influence hidden_states[feature_layer] (0: only the embeddings)."""
    if isinstance(feature_layer, (list, tuple)):
        raise LlavaLnError(f"vision_feature_layer {list(feature_layer)} selects several layers; tower tuning needs "
                           "one (--mm_vision_select_layer)")
    index = feature_layer if feature_layer >= 0 else total_layers + 1 + feature_layer
    if not 0 <= index <= total_layers:
        raise LlavaLnError(f"--mm_vision_select_layer {feature_layer} is outside the tower's {total_layers} layers")
    return index


def tower_scope(model, last_layers: int = 0) -> TowerScope:
    """The tower modules a run may tune; last_layers (K > 0) keeps the last K reachable encoder layers."""
    llava = unwrap(model)
    tower = vision_tower_of(model)
    tower_name = {id(m): n for n, m in llava.named_modules()}[id(tower)]
    path = _encoder_layers_path(tower)
    layers = tower.get_submodule(path)
    reachable = reachable_layer_count(llava.config.vision_feature_layer, len(layers))
    if last_layers < 0:
        raise LlavaLnError(f"--vision_tune_last_layers {last_layers} is negative; 0 tunes every reachable layer")
    if last_layers > reachable:
        raise LlavaLnError(f"--vision_tune_last_layers {last_layers}: the feature layer "
                           f"{llava.config.vision_feature_layer} reaches only {reachable} of the tower's "
                           f"{len(layers)} encoder layers")
    before = []
    current, prefix = tower, tower_name
    for part in path.split("."):
        for child_name, _ in current.named_children():
            if child_name == part:
                break
            before.append(f"{prefix}.{child_name}")
        current, prefix = current.get_submodule(part), f"{prefix}.{part}"
    first = reachable - last_layers if last_layers else 0
    return TowerScope(before=tuple(before) if not last_layers else (),
                      layers=tuple(f"{prefix}.{i}" for i in range(first, reachable)),
                      reachable_layers=reachable, total_layers=len(layers))


def tower_lora_targets(model, scope: TowerScope) -> list[str]:
    """Every nn.Linear inside the scope's encoder layers (attention q/k/v/out and the MLP's two)."""
    llava = unwrap(model)
    return [f"{prefix}.{name}" for prefix in scope.layers
            for name, module in llava.get_submodule(prefix).named_modules() if isinstance(module, nn.Linear)]
