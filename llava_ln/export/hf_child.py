"""Run probes on an exported folder with plain transformers, in a fresh process (no llava-ln code).

Invoked by path (`python hf_child.py SPEC.json`), never imported by llava-ln at run time, so
that what it checks is exactly what a transformers user gets: AutoProcessor and
LlavaForConditionalGeneration.from_pretrained with no custom code, the hub offline.
SPEC.json: {"folder", "probes": [{"name", "messages", "images": [paths]}], "max_new_tokens",
"device", "output"}. Writes OUTPUT.safetensors (per probe: input_ids, pixel_values, logits)
and OUTPUT.json (generated ids and the classes that were loaded).
"""
import json
import sys


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    import torch
    import transformers
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(spec["folder"])
    model = LlavaForConditionalGeneration.from_pretrained(spec["folder"], dtype=torch.float32)
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
        generated[name] = output[0, inputs["input_ids"].shape[1]:].tolist()
    custom = sorted(m for m in sys.modules if m == "llava_ln" or m.startswith("llava_ln."))
    save_file(tensors, spec["output"] + ".safetensors")
    summary = {
        "generated": generated,
        "transformers_version": transformers.__version__,
        "processor_class": type(processor).__name__,
        "image_processor_class": type(processor.image_processor).__name__,
        "model_class": type(model).__name__,
        "custom_modules_imported": custom,
    }
    with open(spec["output"] + ".json", "w", encoding="utf-8") as handle:
        json.dump(summary, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
