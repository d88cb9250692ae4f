"""Run text probes through base LLM + PEFT LN-tuning adapter, in a fresh process (no llava-ln code).

Invoked by path (`python peft_child.py SPEC.json`), like hf_child.py. SPEC.json: {"base",
"adapter", "probes": [{"name", "input_ids"}], "max_new_tokens", "stop_ids", "device",
"output"}. Writes OUTPUT.safetensors (per probe: input_ids, logits) and OUTPUT.json
(generated ids, versions).
"""
import json
import sys


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    import peft
    import torch
    from peft import PeftModel
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32)
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
    custom = sorted(m for m in sys.modules if m == "llava_ln" or m.startswith("llava_ln."))
    save_file(tensors, spec["output"] + ".safetensors")
    with open(spec["output"] + ".json", "w", encoding="utf-8") as handle:
        json.dump({"generated": generated, "peft_version": peft.__version__, "custom_modules_imported": custom,
                   "model_class": type(model).__name__}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
