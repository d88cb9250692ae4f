"""Pretrain the toy LLM: a sentencepiece tokenizer and a tiny LlamaForCausalLM, text only.

The tokenizer is a byte-fallback BPE sentencepiece model with LLaMA's conventions (ids
0/1/2 = <unk>/<s>/</s>, digits split, newline as a byte token) saved as Vicuna ships
it: tokenizer.model + tokenizer_config.json. The model is trained with plain next-token
loss on the documents of `train_data.text_corpus`.
"""
import io
import json
import math
import os
import shutil
import time

import numpy as np
import torch

from llava_ln.core.pretrained import load_pretrained
from llava_ln.toy.backbones.spec import LLM_CONFIG, TOKENIZER_VOCAB_SIZE
from llava_ln.toy.language import detailed_description, short_answer_prompt
from llava_ln.toy.questions import PERCEPTION, REASONING, sample_qa
from llava_ln.toy.train_data import EOS, text_corpus, vicuna_v1
from llava_ln.toy.world import sample_scene

TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": None,
    "clean_up_tokenization_spaces": False,
    "legacy": False,
    "model_max_length": 1024,
    "padding_side": "right",
    "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizer",
}
TOKENIZER_DOCUMENTS = 4000  # the first documents of the corpus train the tokenizer
SPECIAL_TOKENS_MAP = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_tokenizer(documents: list[str], out_dir: str, vocab_size: int = TOKENIZER_VOCAB_SIZE) -> None:
    import sentencepiece as spm

    # One training sentence per line; newlines and </s> are left to byte fallback / specials.
    lines = [line for doc in documents for line in doc.replace(EOS, "\n").split("\n") if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, allow_whitespace_only_pieces=True, num_threads=1, hard_vocab_limit=False,
        minloglevel=2,
    )
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as handle:
        handle.write(model.getvalue())
    for name, content in (("tokenizer_config.json", TOKENIZER_CONFIG), ("special_tokens_map.json", SPECIAL_TOKENS_MAP)):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2, sort_keys=True)
            handle.write("\n")


def _batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Length-grouped batches (sorted inside shuffled pools) to keep padding small."""
    order = rng.permutation(len(lengths))
    pool = batch_size * 32
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool].tolist(), key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _collate(encoded: list[list[int]], pad_id: int):
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        labels[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
    return ids, mask, labels


def text_qa_accuracy(model, tokenizer, seed: int, count: int = 200, device: str = "cpu") -> float:
    """Greedy exact-match accuracy on short-answer questions about written descriptions."""
    rng = np.random.default_rng(seed)
    kinds = list(PERCEPTION) + list(REASONING)
    correct = 0
    model.eval()
    for _ in range(count):
        scene = sample_scene(rng)
        qa = sample_qa(scene, rng, kinds)
        prompt = vicuna_v1([(f"{detailed_description(scene, rng)}\n{short_answer_prompt(qa.question)}", "")])
        prompt = prompt[: -len(EOS)].rstrip()  # end at "ASSISTANT:"; the reply's leading space is its first token
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.eos_token_id)
        answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        correct += answer == qa.answer
    model.train()
    return correct / count


def pretrain_llm(out_dir: str, seed: int = 0, num_documents: int = 12000, epochs: int = 1, batch_size: int = 32,
                 learning_rate: float = 3e-3, device: str = "cpu", tokenizer_dir: str | None = None,
                 eval_questions: int = 200, log=print) -> dict:
    """tokenizer_dir: reuse a tokenizer trained earlier (by this function, same seed) instead of training it."""
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    started = time.time()
    documents = text_corpus(seed, num_documents)
    if tokenizer_dir:
        os.makedirs(out_dir, exist_ok=True)
        for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))
        tokenizer = load_pretrained(AutoTokenizer, tokenizer_dir)
    else:
        train_tokenizer(documents[:TOKENIZER_DOCUMENTS], out_dir)
        tokenizer = load_pretrained(AutoTokenizer, out_dir)
    encoded = [tokenizer(doc).input_ids for doc in documents]
    log(f"llm corpus: {len(encoded)} documents, {sum(map(len, encoded))} tokens, vocab {len(tokenizer)}")

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), **LLM_CONFIG)
    model = LlamaForCausalLM(config)
    model.config._attn_implementation = "eager" if device == "cpu" else "sdpa"  # eager is faster on CPU here
    model.to(device)
    rng = np.random.default_rng(seed + 1)
    schedule = [b for _ in range(epochs) for b in _batches([len(e) for e in encoded], batch_size, rng)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, len(schedule) // 20)

    def lr_at(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, len(schedule) - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    for step, batch in enumerate(schedule):
        ids, mask, labels = (t.to(device) for t in _collate([encoded[i] for i in batch], tokenizer.eos_token_id))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 200 == 0 or step == len(schedule) - 1:
            log(f"llm step {step}/{len(schedule)} loss {loss.item():.4f} ({time.time() - started:.0f}s)")

    accuracy = text_qa_accuracy(model, tokenizer, seed + 2, count=eval_questions, device=device)
    log(f"llm text QA exact match on held-out descriptions: {accuracy:.3f}")
    model.config._attn_implementation = "sdpa"
    model.to("cpu")
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model.save_pretrained(out_dir)
    return {"text_qa_accuracy": accuracy, "steps": len(schedule), "seconds": round(time.time() - started, 1)}
