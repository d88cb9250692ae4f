"""`export --format peft-ln`: the norm deltas of an ln / ln_simple run as a PEFT LN-tuning adapter.

PEFT's LN tuning (LNTuningConfig) keeps, for every targeted norm module, a trained copy of
that module; the adapter file holds those copies' weights (and biases). We build exactly
that on the base causal LM: wrap it with LNTuningConfig targeting every LLM norm, write the
run's trained norm values into the copies, and let PEFT save it. A PEFT user then loads it
with PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).

The adapter is for the text LLM only: the connector (and the vision tower) have no place in
it, and an `ln` run's trained input embeddings / output head are not carried either (LN
tuning holds norms only); the command lists what is left out. Verification loads the
adapter in a fresh process with plain transformers + PEFT and compares text logits and
greedy answers with our model carrying the same norms.
"""
import gc
import tempfile
import warnings
from dataclasses import dataclass, field

import torch

from llava_ln.checkpoint.loading import effective_manifest, load_checkpoint, model_arguments_from, reference_attention
from llava_ln.checkpoint.tensor_checks import check_model_finite
from llava_ln.core.atomic import atomic_directory
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.pretrained import load_pretrained
from llava_ln.core.saving import save_pretrained
from llava_ln.data.templates import get_template, stop_token_ids
from llava_ln.export.merge import check_output_dir, refuse_tuned_tower
from llava_ln.export.probes import OurPipeline, Probe, run_probes
from llava_ln.export.verify import ExportSettings, compare_all, probe_results, run_child
from llava_ln.model.builder import build_mllm
from llava_ln.model.parts import language_model_of, unwrap
from llava_ln.tuning.groups import classify_parameters, is_norm_module
from llava_ln.tuning.modes import get_tune_mode
from llava_ln.tuning.plan import wrap_peft


@dataclass
class PeftLnResult:
    output_dir: str
    target_modules: list
    not_carried: dict  # group -> tensor names
    verified: bool
    comparisons: list = field(default_factory=list)


def _norm_modules(model) -> dict:
    """Norm modules of the LLM (relative name -> module), as tuning.groups finds them."""
    return {name: module for name, module in language_model_of(model).named_modules()
            if name and is_norm_module(module) and any(True for _ in module.parameters(recurse=False))}


def _not_carried(model, manifest, norm_parameter_names: set) -> dict:
    groups = classify_parameters(model)
    left = {}
    for name in sorted(manifest.trained_tensors):
        if name not in norm_parameter_names:
            left.setdefault(groups.get(name, "other"), []).append(name)
    return left


def text_probes() -> list:
    return [
        Probe("text_only", (("user", "How many sides does a triangle have?"),), ()),
        Probe("text_turns", (("user", "Name a color."), ("assistant", "Blue."), ("user", "Name another one.")), ()),
    ]


def export_peft_ln(checkpoint: str, output_dir: str, overrides=None, settings=None, log=print) -> PeftLnResult:
    settings = settings or ExportSettings()
    check_output_dir(output_dir, settings.overwrite, checkpoint, overrides)
    manifest = effective_manifest(checkpoint, overrides)
    if manifest.kind != "merged":  # a tuned tower first, as for peft-lora: no adapter format can carry it
        refuse_tuned_tower("peft-ln", checkpoint, manifest)
    if manifest.kind == "merged" or not get_tune_mode(manifest.tune_mode).changes_llm_norms_only:
        what = "a merged checkpoint" if manifest.kind == "merged" else f"a --tune_mode {manifest.tune_mode} run"
        raise LlavaLnError(f"--format peft-ln carries the norm deltas of an ln or ln_simple run folder; {checkpoint} "
                           f"is {what}; use --format hf (or `llava-ln merge`) instead")
    source = load_checkpoint(checkpoint, overrides, dtype=torch.float32, device=settings.device,
                             attn_implementation=reference_attention())
    norms = _norm_modules(source.model)
    prefix = "model.language_model."
    norm_values = {name: {k: v.detach().clone() for k, v in module.state_dict().items()} for name, module in norms.items()}
    norm_parameter_names = {f"{prefix}{name}.{k}" for name, values in norm_values.items() for k in values}
    not_carried = _not_carried(unwrap(source.model), manifest, norm_parameter_names)
    pipeline_args = (source.manifest, source.tokenizer, source.image_processor_path)
    tokenizer = source.tokenizer
    source = None
    gc.collect()

    with atomic_directory(output_dir) as folder:
        targets = _write_adapter(folder, manifest.llm, norm_values)
        _log_contents(output_dir, targets, not_carried, log)
        comparisons = []
        if settings.verify:
            comparisons = _verify(folder, manifest, pipeline_args, norm_values, tokenizer,
                                  settings, log)
    return PeftLnResult(output_dir, targets, not_carried, settings.verify, comparisons)


def _write_adapter(folder: str, base_llm: str, norm_values: dict) -> list:
    from peft import LNTuningConfig
    from transformers import AutoModelForCausalLM

    causal_lm = load_pretrained(AutoModelForCausalLM, base_llm, dtype=torch.float32)
    names = {id(m): n for n, m in causal_lm.named_modules()}
    prefix = names[id(causal_lm.base_model)]
    targets = [f"{prefix}.{name}" if prefix else name for name in sorted(norm_values)]
    with warnings.catch_warnings():
        # PEFT warns that norm classes are not Linear-like ("proceed at your own risk"); LN tuning copies them whole.
        warnings.filterwarnings("ignore", message="Unsupported layer type")
        peft_model = wrap_peft(causal_lm, LNTuningConfig(target_modules=targets, task_type="CAUSAL_LM"))
    inner = peft_model.get_base_model()
    for target, name in zip(targets, sorted(norm_values)):
        layer = inner.get_submodule(target)
        copy = layer.ln_tuning_layers["default"]
        missing = set(copy.state_dict()) ^ set(norm_values[name])
        if missing:
            raise LlavaLnError(f"norm {name}: the base LLM's module has tensors {sorted(copy.state_dict())}, "
                               f"the run has {sorted(norm_values[name])} (checkpoint from another model?)")
        copy.load_state_dict(norm_values[name])
    check_model_finite(peft_model, "the adapter")
    save_pretrained(peft_model, folder, safe_serialization=True)
    return targets


def _log_contents(output_dir: str, targets: list, not_carried: dict, log) -> None:
    log(f"wrote a PEFT LN-tuning adapter with {len(targets)} norm modules to {output_dir}")
    log("  load it with: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE_LLM), "
        f"{output_dir!r})")
    if not_carried:
        for group, names in not_carried.items():
            log(f"  not carried: {group} ({len(names)} trained tensors, e.g. {names[0]})")
        log("  the adapter is for the text LLM alone: the connector belongs to the multimodal model, and LN tuning "
            "holds norms only, so trained embeddings / head stay at the base values; use --format hf for the "
            "complete model")
    else:
        log("  not carried: the connector (the stage-1 one, kept with the run: an LLM adapter has no place for it); "
            "everything this run trained is in the adapter")


def _verify(folder, manifest, pipeline_args, norm_values, tokenizer, settings, log) -> list:
    model, _ = build_mllm(model_arguments_from(manifest, reference_attention()), tokenizer, dtype=torch.float32)
    language_model = language_model_of(model)
    with torch.no_grad():
        for name, values in norm_values.items():
            language_model.get_submodule(name).load_state_dict(values)
    model.to(settings.device).eval()
    from transformers import AutoConfig

    base_vocab = load_pretrained(AutoConfig, manifest.llm).get_text_config().vocab_size
    stops = set(stop_token_ids(tokenizer, get_template(manifest.conv_template, tokenizer)))
    probes = text_probes()
    with tempfile.TemporaryDirectory() as work:
        pipeline = OurPipeline(*pipeline_args)
        reference = run_probes(model, pipeline, probes, work, settings.max_new_tokens, stops, vocab_limit=base_vocab)
        del model
        gc.collect()
        spec = {"kind": "peft", "base": manifest.llm, "adapter": folder, "device": settings.device,
                "max_new_tokens": settings.max_new_tokens, "stop_ids": sorted(stops),
                "probes": [{"name": r.name, "input_ids": r.input_ids.tolist()} for r in reference]}
        tensors, summary = run_child(spec, work, "peft-ln verification")
    others = probe_results(tensors, summary, [p.name for p in probes])
    what = (f"PeftModel.from_pretrained (peft {summary['peft_version']}, fresh process) vs llava-ln with the "
            "same norms, text input")
    return compare_all(reference, others, settings.tolerance, tokenizer, what, log)

