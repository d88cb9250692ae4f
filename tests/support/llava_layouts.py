"""Tiny multimodal checkpoints in the layouts other projects write, built from configs (nothing downloaded),
and each one's own forward computed without llava-ln, to compare a run's starting logits with.

  make_hf_llava(root)      transformers' LlavaForConditionalGeneration folder (llava-hf layout)
  make_original_llava(root, vision)
                           original LLaVA (haotian-liu/LLaVA) layout: a LLaMA/Mistral config with mm_* keys,
                           the LLM's weights under their own names plus model.mm_projector.{0,2}.*, the vision
                           tower named in mm_vision_tower; safetensors, or sharded .bin files with an index
  original_llava_logits(folder, vision, ids, pixels)
                           LLaVA's forward as llava/model/llava_arch.py computes it: tower hidden state
                           [select_layer], CLS dropped ("patch"), nn.Sequential projector, the features
                           spliced where IMAGE_TOKEN_INDEX (-200) stands, the LLM run on the embeddings.
"""
import json
import os

import torch
from safetensors.torch import save_file
from tiny import LLM_CONFIGS, make_bpe_tokenizer
from transformers import AutoModelForCausalLM, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

LLAVA_IMAGE_TOKEN_INDEX = -200
_SCALE = 0.3  # random weights large enough that logits depend on the image and the text


def _randomize(module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * _SCALE)


def make_hf_llava(root: str, family: str = "llama", seed: int = 0, select_layer: int = -2,
                  strategy: str = "default") -> str:
    """A LlavaForConditionalGeneration folder with a tokenizer holding <image>, and a CLIP image processor."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    path = os.path.join(root, f"hf_llava_{family}")
    tokenizer = make_bpe_tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    vision_config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     image_size=28, patch_size=14)
    config = LlavaConfig(text_config=LLM_CONFIGS[family](), vision_config=vision_config,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=select_layer,
                         vision_feature_select_strategy=strategy, image_seq_length=4)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    _randomize(model, seed)
    model.save_pretrained(path)
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}{{ eos_token if "
                               "m['role'] == 'assistant' else ' ' }}{% endfor %}{% if add_generation_prompt %}"
                               "ASSISTANT:{% endif %}")
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(path)
    return path


def make_original_llava(root: str, vision: str, family: str = "llama", fmt: str = "safetensors", seed: int = 1,
                        projector: str = "mlp2x_gelu", select_layer: int = -2) -> str:
    """An original-LLaVA checkpoint folder; fmt: "safetensors" (one file) or "bin" (two shards + index)."""
    path = os.path.join(root, f"llava_{family}_{fmt}_{projector}")
    os.makedirs(path, exist_ok=True)
    torch.manual_seed(seed)
    config = LLM_CONFIGS[family]()
    config.vocab_size = len(make_bpe_tokenizer())  # as in LLaVA-1.5 (32000 rows): <image> gets a new row
    llm = AutoModelForCausalLM.from_config(config)
    _randomize(llm, seed)
    tensors = {name: t.detach().clone().contiguous() for name, t in llm.state_dict().items()}
    with open(os.path.join(vision, "config.json"), encoding="utf-8") as handle:
        vision_hidden = json.load(handle)["hidden_size"]
    generator = torch.Generator().manual_seed(seed + 1)
    depth = 1 if projector == "linear" else int(projector[3:-len("x_gelu")])
    for index in range(depth):
        fan_in = vision_hidden if index == 0 else config.hidden_size
        prefix = "model.mm_projector." if projector == "linear" else f"model.mm_projector.{2 * index}."
        tensors[prefix + "weight"] = torch.randn(config.hidden_size, fan_in, generator=generator) * _SCALE
        tensors[prefix + "bias"] = torch.randn(config.hidden_size, generator=generator) * _SCALE
    # LLaVA checkpoints may also hold the tower's weights; LLaVA ignores them (it loads mm_vision_tower by name).
    tensors["model.vision_tower.vision_tower.vision_model.post_layernorm.weight"] = torch.full((vision_hidden,), 9.0)
    _write_weights(path, tensors, fmt)
    raw = config.to_dict()
    raw.update(architectures=[{"llama": "LlavaLlamaForCausalLM", "mistral": "LlavaMistralForCausalLM"}[family]],
               model_type="llava" if family == "llama" else "llava_mistral", mm_vision_tower=vision,
               mm_hidden_size=vision_hidden, mm_projector_type=projector, mm_vision_select_layer=select_layer,
               mm_vision_select_feature="patch", mm_use_im_start_end=False, mm_use_im_patch_token=False,
               mm_patch_merge_type="flat", image_aspect_ratio="pad", use_mm_proj=True, tune_mm_mlp_adapter=False,
               freeze_mm_mlp_adapter=False)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(raw, handle, indent=2)
    make_bpe_tokenizer().save_pretrained(path)  # no <image>: LLaVA splices features at id -200
    return path


def _write_weights(path: str, tensors: dict, fmt: str) -> None:
    if fmt == "safetensors":
        save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
        return
    names = sorted(tensors)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for number, part in enumerate(halves, start=1):
        file = f"pytorch_model-0000{number}-of-00002.bin"
        torch.save({n: tensors[n] for n in part}, os.path.join(path, file))
        weight_map.update({n: file for n in part})
    with open(os.path.join(path, "pytorch_model.bin.index.json"), "w", encoding="utf-8") as handle:
        json.dump({"metadata": {}, "weight_map": weight_map}, handle)


def _original_tensors(folder: str) -> dict:
    from safetensors.torch import load_file

    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return load_file(single)
    tensors = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".bin"):
            tensors.update(torch.load(os.path.join(folder, name), weights_only=True))
    return tensors


@torch.no_grad()
def original_llava_logits(folder: str, vision: str, ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Logits of LLaVA's own forward for one sequence holding one -200 image placeholder."""
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
        raw = json.load(handle)
    tensors = _original_tensors(folder)
    family = {"LlavaLlamaForCausalLM": "llama", "LlavaMistralForCausalLM": "mistral"}[raw["architectures"][0]]
    llm_config = LLM_CONFIGS[family]()
    llm_config.vocab_size = raw["vocab_size"]
    llm = AutoModelForCausalLM.from_config(llm_config).eval()
    llm.load_state_dict({n: t for n, t in tensors.items() if "mm_projector" not in n and "vision_tower" not in n})
    tower = CLIPVisionModel.from_pretrained(vision).eval()
    hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[raw["mm_vision_select_layer"]]
    features = hidden[:, 1:]  # "patch": drop CLS
    if raw["mm_projector_type"] == "linear":
        features = features @ tensors["model.mm_projector.weight"].T + tensors["model.mm_projector.bias"]
    else:
        depth = int(raw["mm_projector_type"][3:-len("x_gelu")])
        for index in range(depth):
            if index:
                features = torch.nn.functional.gelu(features)
            weight, bias = (tensors[f"model.mm_projector.{2 * index}.{k}"] for k in ("weight", "bias"))
            features = features @ weight.T + bias
    position = int((ids[0] == LLAVA_IMAGE_TOKEN_INDEX).nonzero()[0])
    embed = llm.get_input_embeddings()
    embeds = torch.cat([embed(ids[:, :position]), features, embed(ids[:, position + 1:])], dim=1)
    return llm(inputs_embeds=embeds).logits


def with_image_tokens(ids: torch.Tensor, image_token_id: int, count: int) -> torch.Tensor:
    """LLaVA's -200 placeholder expanded to `count` in-vocabulary image tokens (transformers' Llava convention)."""
    position = int((ids[0] == LLAVA_IMAGE_TOKEN_INDEX).nonzero()[0])
    image = torch.full((1, count), image_token_id, dtype=ids.dtype)
    return torch.cat([ids[:, :position], image, ids[:, position + 1:]], dim=1)
