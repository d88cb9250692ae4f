"""Benchmark (not a test): padding in padded vs packed micro-batches, and CPU step time per supervised token.

Two length distributions:
  toy      the toy world's stage-2 instruction data (conversation, detail, reasoning), tokenized exactly as
           training reads it (vicuna_v1, the toy LLM's tokenizer, 16 image tokens per image);
  mix665k  a model of LLaVA-1.5's llava_v1_5_mix665k.json built from its published composition (MIX665K
           below; the assumptions are stated there), at LLaVA-1.5's shapes: 576 image tokens per image,
           --model_max_length 2048, the vicuna_v1 system prompt.
For each, the share of computed tokens that are padding, over one epoch:
  random       a seeded permutation cut into batches of 16, each padded to its longest sample (the default)
  grouped      --group_by_modality_length batches of 16, with 1 rank and with 8 (LLaVA-1.5's 8 GPUs: the
               sampler sorts megabatches of world size x 16); grouped by the length estimate training uses
               (words + image tokens) on the toy world, by the exact lengths on the mix665k model (its best case)
  packed       --packing at the equivalent token budget (16 x the mean sample length, at least the longest
               sample; padding counts against it): rows of several samples up to the median length, as every
               attention but FlashAttention's runs them (their row padding is counted), and one row under
               FlashAttention-2 (no padding by construction; its share of the budget used is reported)
Then the step time: a tiny model (the toy world's pretrained LLM and vision tower, --tune_mode ln, the lean
kernels training uses by default, AdamW, SDPA) trains on the same --time_samples random samples (both
modalities, each a whole number of batches, so no batching repeats or drops one) as --group_by_modality_length
batches of 16 (1 rank, 8 ranks) and as packed micro-batches at the full data's equivalent budget, in one
process, the batchings taking turns micro-batch by micro-batch, --repeats times; each micro-batch counts its
fastest time (a shared machine's busy moments fall on all batchings), reported per supervised token. On the mix665k
model the samples are synthetic token ids of the modelled lengths: an image sample carries the tiny tower's 16
placeholders and ordinary tokens for the other 560 of LLaVA-1.5's 576 image positions (the LLM's cost is per
position; the tower's cost per image).

    python -m bench.packing [--time_samples 64] [--repeats 3] [--out bench/results/cpu_packing.json]
"""
import argparse
import json
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
import torch

from llava_ln.core.processes import forward_stop_signals, scratch_folder
from llava_ln.data.args import DataArguments
from llava_ln.data.dataset import build_train_dataset, load_data_components
from llava_ln.data.encode import DataCollator
from llava_ln.data.index import ModalityLengthGroupedSampler
from llava_ln.data.packing import PackedCollator, TokenBudgetPacker
from llava_ln.data.templates import get_template
from llava_ln.kernels import apply_kernels
from llava_ln.model.args import ModelArguments
from llava_ln.model.builder import build_mllm
from llava_ln.toy import layout
from llava_ln.toy.generate import write_toy_world
from llava_ln.training.strategy import TrainingModule
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
BATCH = 16
MAX_LENGTH = 2048  # LLaVA-1.5's --model_max_length
IMAGE_TOKENS = 576  # CLIP ViT-L/14 at 336 px
SYSTEM_TOKENS = 36  # bos + vicuna_v1's system prompt in LLaMA tokens
TURN_TOKENS = 8  # " USER: ", " ASSISTANT: " and "</s>" around each question-answer pair
SHORT_ANSWER_PROMPT = 11  # "Answer the question using a single word or phrase."


@dataclass(frozen=True)
class Part:
    """One source of mix665k: samples, whether they carry an image, and its conversations' shape.

    turns: mean question-answer pairs per sample (1 + Poisson(turns - 1)); question, answer: mean tokens of one
    question (prompt included) and one answer, each drawn from a gamma distribution with a coefficient of
    variation of `spread`."""

    name: str
    samples: int
    image: bool
    turns: float
    question: float
    answer: float
    spread: float = 0.5


# llava_v1_5_mix665k.json as the LLaVA-1.5 paper (Table 7) lists it. The sample counts are published; the shapes
# are this benchmark's assumptions. The academic VQA sets come as one conversation per image holding all of that
# image's questions (VQAv2 443K questions on 83K images, GQA 943K on 72K, OCR-VQA about 5 per image, Visual Genome
# and RefCOCO several regions per image); their questions carry LLaVA-1.5's short-answer prompt and their answers
# are a word or two. LLaVA-Instruct's conversations hold 1-8 turns of one-paragraph answers; its detailed
# descriptions and complex reasoning are one turn with a long answer. ShareGPT dialogues are long, text-only and
# often cut at 2048 tokens. Region tasks (RefCOCO, VG) write boxes as "[0.12, 0.34, 0.56, 0.78]" (~25 tokens).
MIX665K = (
    Part("llava_instruct_conversation", 58_000, True, turns=3.5, question=16, answer=65, spread=0.6),
    Part("llava_instruct_detail", 23_000, True, turns=1, question=12, answer=110, spread=0.3),
    Part("llava_instruct_reasoning", 77_000, True, turns=1, question=25, answer=170, spread=0.4),
    Part("sharegpt", 40_000, False, turns=2.5, question=90, answer=260, spread=0.9),
    Part("vqav2", 83_000, True, turns=5.3, question=10 + SHORT_ANSWER_PROMPT, answer=2, spread=0.3),
    Part("gqa", 72_000, True, turns=13.0, question=12 + SHORT_ANSWER_PROMPT, answer=2, spread=0.3),
    Part("okvqa", 9_000, True, turns=1, question=11 + SHORT_ANSWER_PROMPT, answer=2, spread=0.3),
    Part("ocrvqa", 80_000, True, turns=5.0, question=10 + SHORT_ANSWER_PROMPT, answer=5, spread=0.5),
    Part("a_okvqa", 66_000, True, turns=1, question=45, answer=1, spread=0.2),
    Part("textcaps", 22_000, True, turns=1, question=12, answer=15, spread=0.4),
    Part("refcoco", 48_000, True, turns=4.0, question=30, answer=15, spread=0.5),
    Part("vg", 86_000, True, turns=8.0, question=30, answer=10, spread=0.5),
)


def _gamma(rng, mean: float, spread: float, size) -> np.ndarray:
    shape = 1 / spread**2
    return np.maximum(1, np.rint(rng.gamma(shape, mean / shape, size))).astype(np.int64)


def mix665k_lengths(scale: float, seed: int = 0):
    """(lengths, supervised tokens, has_image) of a mix665k-shaped sample set, `scale` of its size."""
    rng = np.random.default_rng(seed)
    lengths, supervised, has_image = [], [], []
    for part in MIX665K:
        count = max(1, round(part.samples * scale))
        turns = 1 + rng.poisson(part.turns - 1, count)
        for n in turns.tolist():
            questions, answers = _gamma(rng, part.question, part.spread, n), _gamma(rng, part.answer, part.spread, n)
            total = SYSTEM_TOKENS + (IMAGE_TOKENS + 1 if part.image else 0) + int((questions + answers).sum()) \
                + TURN_TOKENS * n
            answered = int(answers.sum()) + n  # each answer and its "</s>"
            if total > MAX_LENGTH:  # truncation keeps the same share of supervised tokens, roughly
                answered = max(1, answered * MAX_LENGTH // total)
                total = MAX_LENGTH
            lengths.append(total)
            supervised.append(answered)
            has_image.append(part.image)
    return np.array(lengths), np.array(supervised), np.array(has_image)


def padded_share(lengths: np.ndarray, batches) -> tuple[float, int]:
    """(share of computed tokens that are padding, computed tokens) of right-padded batches."""
    computed = sum(len(b) * int(lengths[b].max()) for b in batches)
    tokens = sum(int(lengths[b].sum()) for b in batches)
    return 1 - tokens / computed, computed


def random_batches(size: int, seed: int) -> list:
    order = np.random.default_rng([seed, 0]).permutation(size)
    return [order[i:i + BATCH] for i in range(0, size, BATCH)]


def grouped_batches(estimates, has_image, world_size: int, seed: int) -> list:
    sampler = ModalityLengthGroupedSampler(estimates, has_image, BATCH, world_size, seed)
    return [np.array(b) for b in sampler.batches()]


def equivalent_budget(lengths: np.ndarray) -> int:
    return max(int(round(BATCH * lengths.mean())), int(lengths.max()))


def padding_report(lengths, has_image, estimates, seed: int) -> dict:
    """Padding shares of every batching for one length distribution."""
    budget = equivalent_budget(lengths)
    rows = TokenBudgetPacker(lengths, budget, seed)
    tokens, computed = rows.computed_tokens()
    one_row = TokenBudgetPacker(lengths, budget, seed, one_row=True)
    report = {
        "samples": len(lengths), "mean_tokens": round(float(lengths.mean()), 1), "max_tokens": int(lengths.max()),
        "image_share": round(float(np.mean(has_image)), 3),
        "random_b16": padded_share(lengths, random_batches(len(lengths), seed))[0],
        "grouped_b16_1rank": padded_share(lengths, grouped_batches(estimates, has_image, 1, seed))[0],
        "grouped_b16_8ranks": padded_share(lengths, grouped_batches(estimates, has_image, 8, seed))[0],
        "packed_budget": budget, "packed_row_tokens": rows.row_tokens,
        "packed_rows": 1 - tokens / computed,
        "packed_rows_budget_fill": computed / (len(rows.batches(0)) * budget),
        "packed_one_row_flash": 0.0,
        "packed_one_row_budget_fill": float(lengths.sum()) / (len(one_row.batches(0)) * budget),
    }
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()}


def toy_world(scratch: str, seed: int):
    """(model args, components, dataset) of a toy world written into scratch."""
    world = os.path.join(scratch, "world")
    write_toy_world(world, seed=seed, scale=0.25)
    model_args = ModelArguments(model_name_or_path=os.path.join(world, "llm"),
                                vision_tower=os.path.join(world, "vision"), mm_projector_type="mlp2x_gelu")
    data_args = DataArguments(data_path=",".join(os.path.join(world, p) for p in layout.INSTRUCT_JSON.values()),
                              image_folder=os.path.join(world, layout.IMAGES), conv_template="vicuna_v1",
                              model_max_length=MAX_LENGTH)
    components = load_data_components(model_args, data_args)
    dataset = build_train_dataset(data_args, components.tokenizer, components.image_processor,
                                  get_template("vicuna_v1", components.tokenizer), components.image_token_id,
                                  components.num_image_tokens, seed)
    return model_args, components, dataset


def synthetic_sample(number: int, length: int, answered: int, image: bool, spec, vocab: int, image_size: int,
                     rng: np.random.Generator) -> dict:
    """A training sample of this shape: random ids, the image's placeholders after bos, answers spread out."""
    ids = rng.integers(3, vocab, length)
    ids[ids == spec.image_token_id] = 3
    prompt = 1 + (spec.num_image_tokens if image else 0)
    if image:
        ids[1:prompt] = spec.image_token_id
    labels = np.full(length, -100)
    chosen = rng.choice(np.arange(prompt, length), size=min(answered, length - prompt), replace=False)
    labels[chosen] = ids[chosen]
    pixels = torch.from_numpy(rng.standard_normal((1, 3, image_size, image_size)).astype(np.float32))
    return {"id": f"s{number}", "input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
            "pixel_values": pixels if image else None}


def time_passes(model, plan_groups, batches_by_mode: dict, repeats: int) -> dict:
    """Each batching's micro-batches trained `repeats` times, the batchings taking turns micro-batch by micro-batch
    (so a busy moment of a shared machine falls on all of them); a micro-batch counts its fastest time."""
    module = TrainingModule(model)
    optimizer = torch.optim.AdamW(plan_groups, lr=1e-5)
    fastest = {mode: [float("inf")] * len(batches) for mode, batches in batches_by_mode.items()}
    for batches in batches_by_mode.values():  # warm-up, untimed: first-call costs fall on no batching
        module(batches[0]).backward()
        optimizer.zero_grad(set_to_none=True)
    for _ in range(repeats):
        for position in range(max(map(len, batches_by_mode.values()))):
            for mode, batches in batches_by_mode.items():
                if position >= len(batches):
                    continue
                started = time.perf_counter()
                module(batches[position]).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                fastest[mode][position] = min(fastest[mode][position], time.perf_counter() - started)
    result = {}
    for mode, batches in batches_by_mode.items():
        supervised = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        computed = sum(b["input_ids"].numel() for b in batches)
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        seconds = sum(fastest[mode])
        result[mode] = {"micro_batches": len(batches), "supervised_tokens": supervised, "computed_tokens": computed,
                        "padding_share": round(1 - real / computed, 4), "pass_seconds": round(seconds, 3),
                        "us_per_supervised_token": round(1e6 * seconds / supervised, 2)}
    for baseline in ("grouped_b16_1rank", "grouped_b16_8ranks"):
        result[f"packed_speedup_over_{baseline}"] = round(result[baseline]["us_per_supervised_token"]
                                                          / result["packed"]["us_per_supervised_token"], 3)
    return result


def timing_subset(has_image, samples: int, seed: int) -> np.ndarray:
    """Random samples of both modalities, each a whole number of batches of 16 (the grouped sampler then repeats
    none, so every batching trains exactly these samples): text-only ones in proportion, at least one batch."""
    rng = np.random.default_rng([seed, 1])
    images, texts = np.flatnonzero(has_image), np.flatnonzero(~np.asarray(has_image, dtype=bool))
    text_batches = 0 if len(texts) < BATCH else max(1, round(samples * len(texts) / len(has_image) / BATCH))
    image_batches = samples // BATCH - text_batches
    return np.concatenate([rng.choice(images, image_batches * BATCH, replace=False),
                           rng.choice(texts, text_batches * BATCH, replace=False)])


def timing_batches(lengths, has_image, estimates, sample_of, pad_token_id: int, seed: int, samples: int) -> dict:
    """The same random samples as --group_by_modality_length batches of 16 (1 and 8 ranks) and as packed
    micro-batches at the full data's equivalent budget."""
    subset = timing_subset(has_image, samples, seed)
    packer = TokenBudgetPacker(lengths[subset], equivalent_budget(lengths), seed)
    orders = {"grouped_b16_1rank": grouped_batches(estimates[subset], has_image[subset], 1, seed),
              "grouped_b16_8ranks": grouped_batches(estimates[subset], has_image[subset], 8, seed),
              "packed": [np.array(b) for b in packer.batches(0)]}
    padded = DataCollator(type("Pad", (), {"pad_token_id": pad_token_id})())
    collators = {"grouped_b16_1rank": padded, "grouped_b16_8ranks": padded,
                 "packed": PackedCollator(pad_token_id, packer.row_tokens)}
    loaded = {int(i): sample_of(int(i)) for i in subset}
    return {mode: [collators[mode]([loaded[int(subset[i])] for i in batch]) for batch in batches]
            for mode, batches in orders.items()}


def run(args) -> dict:
    torch.manual_seed(args.seed)
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
                           "torch": torch.__version__}, "settings": vars(args)}
    lengths, supervised, has_image = mix665k_lengths(args.mix_scale, args.seed)
    results["mix665k_padding"] = padding_report(lengths, has_image, lengths, args.seed)
    print("mix665k model:", json.dumps(results["mix665k_padding"]))
    with scratch_folder("bench_packing_") as scratch:
        model_args, components, dataset = toy_world(scratch, args.seed)
        toy_lengths = dataset.token_lengths()
        results["toy_padding"] = padding_report(toy_lengths, dataset.has_image, dataset.length_estimates, args.seed)
        print("toy world:", json.dumps(results["toy_padding"]))

        model, spec = build_mllm(model_args, components.tokenizer)
        model, plan = apply_tune_mode(model, TuningArguments(tune_mode="ln"))
        apply_kernels(model, "auto", torch.device("cpu"))
        groups = plan.param_groups(model, 1e-5, 0.0)
        pad = components.tokenizer.pad_token_id

        vocab, image_size = model.config.text_config.vocab_size, model.config.vision_config.image_size

        def mix_sample(index: int) -> dict:
            rng = np.random.default_rng([args.seed, index])
            return synthetic_sample(index, int(lengths[index]), int(supervised[index]), bool(has_image[index]), spec,
                                    vocab, image_size, rng)

        batches = timing_batches(lengths, has_image, lengths, mix_sample, pad, args.seed, args.time_samples)
        results["mix665k_cpu_step"] = time_passes(model, groups, batches, args.repeats)
        print("mix665k model, CPU step:", json.dumps(results["mix665k_cpu_step"]))

        batches = timing_batches(toy_lengths, dataset.has_image, dataset.length_estimates, dataset.__getitem__, pad,
                                 args.seed, args.time_samples)
        results["toy_cpu_step"] = time_passes(model, groups, batches, args.repeats)
        print("toy world, CPU step:", json.dumps(results["toy_cpu_step"]))
    return results


def summary(results: dict) -> str:
    lines = ["| data | random b16 | grouped b16, 1 rank | grouped b16, 8 ranks | packed, rows | packed, one row (FA2) "
             "| CPU per supervised token: grouped 1 rank / 8 ranks / packed (us) | packed speed-up over grouped "
             "1 rank / 8 ranks |", "|---|---|---|---|---|---|---|---|"]
    for name in ("toy", "mix665k"):
        pad, step = results[f"{name}_padding"], results[f"{name}_cpu_step"]
        times = " / ".join(f"{step[m]['us_per_supervised_token']:.0f}" for m in
                           ("grouped_b16_1rank", "grouped_b16_8ranks", "packed"))
        lines.append(f"| {name} | {pad['random_b16']:.1%} | {pad['grouped_b16_1rank']:.1%} | "
                     f"{pad['grouped_b16_8ranks']:.1%} | {pad['packed_rows']:.1%} | {pad['packed_one_row_flash']:.1%}"
                     f" | {times} | {step['packed_speedup_over_grouped_b16_1rank']:.2f}x / "
                     f"{step['packed_speedup_over_grouped_b16_8ranks']:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mix_scale", type=float, default=0.05, help="share of mix665k's 665K samples modelled")
    parser.add_argument("--time_samples", type=int, default=64, help="samples per timed pass (a multiple of 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per batching (the fastest counts)")
    parser.add_argument("--out", default="bench/results/cpu_packing.json")
    args = parser.parse_args()
    with forward_stop_signals():
        results = run(args)
    table = summary(results)
    results["table"] = table
    print(table)
    for name in ("toy", "mix665k"):
        share, step = results[f"{name}_padding"]["packed_rows"], results[f"{name}_cpu_step"]
        print(f"{name}: padding with packing {share:.2%} of computed tokens (target <= 3%): "
              f"{'met' if share <= 0.03 else 'MISSED'}; CPU speed-up per supervised token over "
              f"--group_by_modality_length: {step['packed_speedup_over_grouped_b16_1rank']:.2f}x (1 rank), "
              f"{step['packed_speedup_over_grouped_b16_8ranks']:.2f}x (8 ranks)")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
