"""The other side of a verification: plain transformers (+ PEFT) on a written folder, no llava-ln code.

Invoked by path in a fresh, isolated process (`python -I fresh_child.py SPEC.json`, see verify.py),
never imported by llava-ln, so what it checks is exactly what a transformers user gets. It must not
import llava_ln; the summary lists any llava_ln module that got imported anyway.

SPEC.json: {"kind": "hf" | "peft", "device", "max_new_tokens", "output", ...}
  hf:   {"folder", "probes": [{"name", "messages", "images": [paths]}]}: AutoProcessor +
        LlavaForConditionalGeneration.from_pretrained, the processor's chat template, generate().
  peft: {"base", "adapter", "stop_ids", "probes": [{"name", "input_ids"}]}: AutoModelForCausalLM +
        PeftModel.from_pretrained on text prompts.
Writes OUTPUT.safetensors (per probe: input_ids, logits[, pixel_values, image_features]) and OUTPUT.json
(generated ids, library versions, the classes that were loaded).
"""
import json
import sys


def _image_features(model, pixel_values):
    """The connector's output for the images, through transformers' own get_image_features: [n, tokens, hidden]."""
    import torch

    config = model.config
    out = model.get_image_features(pixel_values=pixel_values, vision_feature_layer=config.vision_feature_layer,
                                   vision_feature_select_strategy=config.vision_feature_select_strategy)
    out = getattr(out, "pooler_output", out)  # newer transformers return a model output around the list
    if isinstance(out, (list, tuple)):
        out = torch.stack(list(out))
    return out.float().cpu().contiguous()


def _run_hf(spec: dict):
    import torch
    import transformers
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(spec["folder"], trust_remote_code=False)
    model = LlavaForConditionalGeneration.from_pretrained(spec["folder"], dtype=torch.float32,
                                                          trust_remote_code=False)
    model = model.to(spec["device"]).eval()
    tensors, generated = {}, {}
    for probe in spec["probes"]:
        prompt = processor.apply_chat_template(probe["messages"], add_generation_prompt=True, tokenize=False)
        images = [Image.open(path).convert("RGB") for path in probe["images"]] or None
        inputs = processor(images=images, text=prompt, return_tensors="pt").to(spec["device"])
        with torch.no_grad():
            logits = model(**inputs).logits[0].float().cpu()
            output = model.generate(**inputs, max_new_tokens=spec["max_new_tokens"], do_sample=False, num_beams=1)
        name = probe["name"]
        tensors[f"{name}.input_ids"] = inputs["input_ids"][0].cpu().contiguous()
        tensors[f"{name}.logits"] = logits.contiguous()
        if "pixel_values" in inputs:
            tensors[f"{name}.pixel_values"] = inputs["pixel_values"].float().cpu().contiguous()
            with torch.no_grad():
                tensors[f"{name}.image_features"] = _image_features(model, inputs["pixel_values"])
        generated[name] = output[0, inputs["input_ids"].shape[1]:].tolist()
    summary = {"transformers_version": transformers.__version__, "processor_class": type(processor).__name__,
               "image_processor_class": type(processor.image_processor).__name__,
               "model_class": type(model).__name__}
    return tensors, generated, summary


def _run_peft(spec: dict):
    import peft
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32, trust_remote_code=False)
    model = PeftModel.from_pretrained(base, spec["adapter"]).to(spec["device"]).eval()
    tensors, generated = {}, {}
    for probe in spec["probes"]:
        ids = torch.tensor([probe["input_ids"]], device=spec["device"])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[0].float().cpu()
            output = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=spec["max_new_tokens"],
                                    do_sample=False, num_beams=1, eos_token_id=spec["stop_ids"],
                                    pad_token_id=spec["stop_ids"][0] if spec["stop_ids"] else None)
        tensors[f"{probe['name']}.input_ids"] = ids[0].cpu().contiguous()
        tensors[f"{probe['name']}.logits"] = logits.contiguous()
        generated[probe["name"]] = output[0, ids.shape[1]:].tolist()
    return tensors, generated, {"peft_version": peft.__version__, "model_class": type(model).__name__}


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    from safetensors.torch import save_file

    tensors, generated, summary = (_run_peft if spec["kind"] == "peft" else _run_hf)(spec)
    summary["generated"] = generated
    summary["custom_modules_imported"] = sorted(m for m in sys.modules if m == "llava_ln" or m.startswith("llava_ln."))
    save_file(tensors, spec["output"] + ".safetensors")
    with open(spec["output"] + ".json", "w", encoding="utf-8") as handle:
        json.dump(summary, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
