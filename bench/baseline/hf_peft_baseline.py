# The team's plain transformers + PEFT baseline; below these two lines, byte-for-byte ../shared/bench/hf_peft_baseline.py
# (whose H200 numbers are in ../shared/bench/h200_baseline_results.jsonl), so the GPU suite carries it along.
"""Anchor measurement: what a plain transformers+PEFT stack costs per tuning mode.

Builds a LLaVA-shaped model (LLaMA-7B text config + CLIP ViT-L/14-336 vision config,
random weights), then for each tuning mode runs a few training steps of a single-GPU,
mixed-precision loop (frozen weights bf16, trainable weights fp32, autocast bf16,
fused AdamW) and records peak memory and step time.  Prints one JSON line per mode.
"""
import argparse, gc, json, math, os, sys, time
import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

p = argparse.ArgumentParser()
p.add_argument("--size", default="7b", choices=["tiny", "1b", "7b", "13b"])
p.add_argument("--modes", default="ln_simple,connector,ln,lora,full")
p.add_argument("--batch", type=int, default=8)
p.add_argument("--seq", type=int, default=2048)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--attn", default="sdpa")
p.add_argument("--no-gc", action="store_true")
a = p.parse_args()
dev = "cuda" if torch.cuda.is_available() else "cpu"

if a.size == "7b":
    tc = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    vc = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                          image_size=336, patch_size=14, projection_dim=768)
elif a.size == "13b":
    tc = LlamaConfig(vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                     num_attention_heads=40, num_key_value_heads=40, max_position_embeddings=4096)
    vc = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                          image_size=336, patch_size=14, projection_dim=768)
elif a.size == "1b":
    tc = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                     num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=4096)
    vc = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                          image_size=336, patch_size=14, projection_dim=768)
else:
    tc = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
    vc = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          image_size=56, patch_size=14)
IMG_TOK = tc.vocab_size  # an extra id past the text vocab
tc.vocab_size += 1
cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=IMG_TOK, vision_feature_layer=-2,
                  vision_feature_select_strategy="default")
n_img = (vc.image_size // vc.patch_size) ** 2


def select(model, mode):
    """Return the names of trainable parameters for a mode (the LLM is model.model.language_model)."""
    names = []
    for n, _ in model.named_parameters():
        llm = ".language_model." in n
        proj = "multi_modal_projector" in n
        norm_in_block = llm and (".input_layernorm." in n or ".post_attention_layernorm." in n)
        final_norm = llm and n.endswith("language_model.norm.weight")
        emb = "embed_tokens" in n
        head = n.startswith("lm_head")
        if mode == "full" and (llm or proj or head):
            names.append(n)
        elif mode == "ln" and (norm_in_block or final_norm or proj or emb or head):
            names.append(n)
        elif mode == "ln_simple" and (norm_in_block or final_norm):
            names.append(n)
        elif mode == "connector" and proj:
            names.append(n)
        elif mode == "lora" and proj:
            names.append(n)
    return set(names)


def run(mode):
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device(dev):
        model = LlavaForConditionalGeneration._from_config(cfg, torch_dtype=torch.bfloat16, attn_implementation=a.attn)
    build_s = time.time() - t0
    train = select(model, mode)
    for n, prm in model.named_parameters():
        prm.requires_grad_(n in train)
        if n in train:
            prm.data = prm.data.float()
    if mode == "lora":
        from peft import LoraConfig, get_peft_model
        lc = LoraConfig(r=128, lora_alpha=256, lora_dropout=0.05,
                        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
        model = get_peft_model(model, lc)
        for n, prm in model.named_parameters():
            if "multi_modal_projector" in n:
                prm.requires_grad_(True)
            if prm.requires_grad:
                prm.data = prm.data.float()
    if not a.no_gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    n_train = sum(q.numel() for q in params)
    n_all = sum(q.numel() for q in model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, fused=(dev == "cuda"))
    g = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(3, tc.vocab_size - 1, (a.batch, a.seq), generator=g)
    ids[:, 1:1 + n_img] = IMG_TOK
    labels = ids.clone()
    labels[:, : 1 + n_img] = -100
    ids, labels = ids.to(dev), labels.to(dev)
    px = torch.randn(a.batch, 3, vc.image_size, vc.image_size, generator=g).to(dev, torch.bfloat16)
    if dev == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    times = []
    loss = float("nan")
    for step in range(a.warmup + a.steps):
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(dev, dtype=torch.bfloat16):
            out = model(input_ids=ids, pixel_values=px, labels=labels)
        out.loss.backward()
        opt.step(); opt.zero_grad(set_to_none=True)
        if dev == "cuda":
            torch.cuda.synchronize()
        if step >= a.warmup:
            times.append(time.perf_counter() - t)
        loss = out.loss.item()
    step_s = sorted(times)[len(times) // 2]
    toks = a.batch * a.seq
    res = dict(mode=mode, size=a.size, attn=a.attn, grad_ckpt=not a.no_gc, batch=a.batch, seq=a.seq,
               trainable=n_train, total=n_all, trainable_pct=round(100 * n_train / n_all, 5),
               step_s_median=round(step_s, 4), step_s_min=round(min(times), 4), step_s_max=round(max(times), 4),
               tokens_per_s=round(toks / step_s, 1), loss=round(loss, 4), build_s=round(build_s, 1))
    if dev == "cuda":
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        res["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(res), flush=True)
    del model, opt, out, params
    gc.collect()
    if dev == "cuda":
        torch.cuda.empty_cache()


print(json.dumps(dict(torch=torch.__version__, transformers=__import__("transformers").__version__,
                      peft=__import__("peft").__version__, n_img_tokens=n_img)), flush=True)
for m in a.modes.split(","):
    try:
        run(m)
    except torch.OutOfMemoryError as e:
        print(json.dumps(dict(mode=m, size=a.size, error="OOM", detail=str(e)[:200])), flush=True)
        gc.collect(); torch.cuda.empty_cache()
