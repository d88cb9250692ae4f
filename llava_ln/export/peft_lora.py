"""`export --format peft-lora`: a lora run's LoRA factors as an adapter for the base LLM alone, verified.

A run's adapter/ folder is internal: PEFT saved it for the composed model, so its module names sit
under LlavaForConditionalGeneration (`base_model.model.model.language_model.layers.0...`). Loaded
with PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter/), none of those
modules exists in the causal LM: PEFT reports the keys missing and the LLM computes exactly what it
computed before. This export writes the same factors under the causal LM's own module names
(`base_model.model.model.layers.0...`), with the run's rank, alpha and dropout, so plain PEFT
applies them to the base LLM.

What an LLM adapter cannot carry is listed and left out: the connector (it belongs to the
multimodal model) and, for `--tune_embeddings true`, the trained embeddings and head. A run that
started from a multimodal checkpoint has no plain base LLM to apply an adapter to and is refused
(use --format hf or llava). Verification loads the adapter in a fresh process with plain
transformers + PEFT and compares text logits and greedy answers with llava-ln's model carrying the
same LoRA on text prompts.
"""
import gc
import tempfile

import torch

from llava_ln.checkpoint.loading import effective_manifest, load_checkpoint, model_arguments_from, reference_attention
from llava_ln.checkpoint.run_folder import ADAPTER_DIR
from llava_ln.checkpoint.tensor_checks import check_model_finite
from llava_ln.core.atomic import atomic_directory
from llava_ln.core.constants import strip_peft_prefix
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.pretrained import load_pretrained
from llava_ln.core.saving import save_pretrained
from llava_ln.data.templates import get_template, stop_token_ids
from llava_ln.export.merge import check_output_dir, refuse_tuned_tower
from llava_ln.export.peft_ln import text_probes
from llava_ln.export.probes import OurPipeline, run_probes
from llava_ln.export.verify import ExportSettings, compare_all, probe_results, run_child
from llava_ln.model.builder import build_mllm
from llava_ln.tuning.plan import quiet_peft_wrapping, wrap_peft

LLM_PREFIX = "model.language_model."


def _refuse(checkpoint: str, manifest) -> None:
    # A tuned tower first: no adapter format can carry it, so pointing at peft-ln would only lead to its refusal.
    if manifest.kind != "merged":
        refuse_tuned_tower("peft-lora", checkpoint, manifest)
    if manifest.kind == "merged" or manifest.lora is None:
        what = "a merged checkpoint" if manifest.kind == "merged" else f"a --tune_mode {manifest.tune_mode} run"
        raise LlavaLnError(f"--format peft-lora carries the LoRA factors of a lora run folder; {checkpoint} is {what}; "
                           "use --format hf (or peft-ln for norm runs)")
    if manifest.source:
        raise LlavaLnError(f"--format peft-lora: {checkpoint} started from the multimodal checkpoint "
                           f"{manifest.source['path']}, which has no plain base LLM to apply an adapter to; use "
                           "--format hf or --format llava")


def lora_factors(model) -> dict:
    """Our LoRA tensors under the causal LM's names: {module name in the causal LM: {"lora_A"/"lora_B": tensor}}."""
    factors = {}
    for name, param in model.named_parameters():
        name = strip_peft_prefix(name)
        if ".lora_A." not in name and ".lora_B." not in name:
            continue
        if not name.startswith(LLM_PREFIX):
            raise LlavaLnError(f"LoRA tensor {name} is outside the LLM; an LLM adapter cannot carry it")
        module, factor = name[len(LLM_PREFIX):].split(".lora_")
        factors.setdefault(module, {})[f"lora_{factor.split('.')[0]}"] = param.detach().clone()
    return factors


def export_peft_lora(checkpoint: str, output_dir: str, overrides=None, settings=None, log=print) -> list:
    """Write the adapter; returns the causal LM's target module names."""
    settings = settings or ExportSettings()
    check_output_dir(output_dir, settings.overwrite, checkpoint, overrides)
    manifest = effective_manifest(checkpoint, overrides)
    _refuse(checkpoint, manifest)
    loaded = load_checkpoint(checkpoint, overrides, dtype=torch.float32, device="cpu",
                             attn_implementation=reference_attention())
    factors = lora_factors(loaded.model)
    pipeline_args = (loaded.manifest, loaded.tokenizer, loaded.image_processor_path)
    tokenizer = loaded.tokenizer
    loaded = None
    gc.collect()
    with atomic_directory(output_dir) as folder:
        targets = _write_adapter(folder, manifest, factors)
        log(f"wrote a PEFT LoRA adapter for the base LLM ({len(targets)} modules, r={manifest.lora['r']}) to "
            f"{output_dir}")
        log(f"  load it with: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({manifest.llm!r}), "
            f"{output_dir!r})")
        left = ["the connector"] + (["the trained embeddings and head"] if manifest.tune_embeddings else [])
        log(f"  not carried: {', '.join(left)} (an LLM adapter has no place for them; use --format hf for the whole "
            "model)")
        if settings.verify:
            _verify(folder, checkpoint, manifest, pipeline_args, tokenizer, settings, log)
    return targets


def _write_adapter(folder: str, manifest, factors: dict) -> list:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    causal_lm = load_pretrained(AutoModelForCausalLM, manifest.llm, dtype=torch.float32)
    prefix = causal_lm.base_model_prefix
    targets = [f"{prefix}.{module}" for module in sorted(factors)]
    config = LoraConfig(r=manifest.lora["r"], lora_alpha=manifest.lora["alpha"], lora_dropout=manifest.lora["dropout"],
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    peft_model = wrap_peft(causal_lm, config)
    inner = peft_model.get_base_model()
    with torch.no_grad():
        for target, module in zip(targets, sorted(factors)):
            layer = inner.get_submodule(target)
            for factor, value in factors[module].items():
                weight = getattr(layer, factor)["default"].weight
                if tuple(weight.shape) != tuple(value.shape):
                    raise LlavaLnError(f"LoRA factor {module}.{factor} has shape {tuple(value.shape)} but the base LLM's "
                                       f"module needs {tuple(weight.shape)} (checkpoint from another model?)")
                weight.copy_(value)
    check_model_finite(peft_model, "the adapter")
    save_pretrained(peft_model, folder, safe_serialization=True)
    return targets


def _verify(folder, checkpoint, manifest, pipeline_args, tokenizer, settings, log) -> list:
    """Our model with the run's LoRA and nothing else it trained, vs plain PEFT on the base LLM, on text."""
    import os

    from peft import PeftModel
    from transformers import AutoConfig

    model, _ = build_mllm(model_arguments_from(manifest, reference_attention()), tokenizer, dtype=torch.float32)
    with quiet_peft_wrapping():
        model = load_pretrained(PeftModel, model, os.path.join(checkpoint, ADAPTER_DIR)).to(settings.device).eval()
    base_vocab = load_pretrained(AutoConfig, manifest.llm).get_text_config().vocab_size
    stops = set(stop_token_ids(tokenizer, get_template(manifest.conv_template, tokenizer)))
    probes = text_probes()
    with tempfile.TemporaryDirectory() as work:
        reference = run_probes(model, OurPipeline(*pipeline_args), probes, work, settings.max_new_tokens, stops,
                               vocab_limit=base_vocab)
        del model
        gc.collect()
        spec = {"kind": "peft", "base": manifest.llm, "adapter": folder, "device": settings.device,
                "max_new_tokens": settings.max_new_tokens, "stop_ids": sorted(stops),
                "probes": [{"name": r.name, "input_ids": r.input_ids.tolist()} for r in reference]}
        tensors, summary = run_child(spec, work, "peft-lora verification")
    others = probe_results(tensors, summary, [p.name for p in probes])
    what = (f"PeftModel.from_pretrained (peft {summary['peft_version']}, fresh process) vs llava-ln with the same "
            "LoRA, text input")
    return compare_all(reference, others, settings.tolerance, tokenizer, what, log)
