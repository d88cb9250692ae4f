"""Benchmark (not a test): is the toy world learnable, and does stage 2 beat the connector-only model?

A small hand-written loop over the real core (build_mllm, apply_tune_mode,
TuningPlan.param_groups, multimodal_forward) and the real data pipeline (LLaVA-format
datasets, plain / vicuna_v1 templates): stage 1 trains the connector on captions (plain
template), then stage 2 starts from that model once per --modes entry. Each model answers
the toy VQAv2 questions and the POPE splits greedily (the evaluation code's prompt encoder
and batched generator); VQA is scored with the official soft accuracy, POPE with the
official answer rule. Prints the scores and the training time of each stage.

    python -m bench.toy_learnability [--world DIR] [--stage1_steps 300] [--stage2_steps 600] [--modes ln,full]

Defaults are the demo-sized recipe: 300 connector steps on captions, then 600 steps of batch
16 on instruct_conversation.json (about 2.5 minutes of training on an idle 2-core CPU).
"""
import argparse
import copy
import json
import math
import os
import sys
import time

import torch
from torch.utils.data import DataLoader

from llava_ln.core.processes import forward_stop_signals, scratch_folder
from llava_ln.data.args import DataArguments
from llava_ln.data.dataset import build_train_dataset, load_data_components
from llava_ln.data.encode import DataCollator
from llava_ln.data.images import ImageLoader
from llava_ln.data.templates import get_template
from llava_ln.evaluation.generation import AnswerGenerator, GenerationSettings, PromptEncoder
from llava_ln.evaluation.model_loading import EvalModel
from llava_ln.model.args import ModelArguments
from llava_ln.model.builder import build_mllm
from llava_ln.model.forward import multimodal_forward
from llava_ln.scoring.mme import score_mme_subtask
from llava_ln.scoring.pope import parse_pope_answer, pope_metrics
from llava_ln.scoring.vqa import question_accuracy
from llava_ln.toy import layout
from llava_ln.toy.generate import write_toy_world
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", help="an existing toy world (default: generate one with --seed into a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--stage1_steps", type=int, default=300)
    parser.add_argument("--stage1_lr", type=float, default=2e-3)
    parser.add_argument("--stage2_steps", type=int, default=600)
    parser.add_argument("--stage2_data", default="conversation",
                        help="instruct types (or json paths) with optional record counts, e.g. conversation,reasoning:300")
    parser.add_argument("--lr", type=float, default=2e-3, help="stage 2: embeddings, head and other weights")
    parser.add_argument("--norm_lr", type=float, default=1e-2, help="stage 2: LLM norm weights")
    parser.add_argument("--connector_lr", type=float, default=1e-3, help="stage 2: connector")
    parser.add_argument("--modes", default="ln", help="stage-2 tuning modes to compare, comma separated")
    parser.add_argument("--eval_vqa", type=int, default=400, help="VQA questions to answer (first N)")
    parser.add_argument("--eval_pope", type=int, default=300, help="POPE questions per split (first N)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    return parser.parse_args()


def cosine_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(model, components, data_args: DataArguments, steps: int, groups, batch_size: int, seed: int) -> dict:
    dataset = build_train_dataset(data_args, components.tokenizer, components.image_processor,
                                  get_template(data_args.conv_template, components.tokenizer),
                                  components.image_token_id, components.num_image_tokens, seed)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                        collate_fn=DataCollator(components.tokenizer), drop_last=True)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, steps, max(1, steps // 10)))
    model.train()
    started, step, losses, tokens = time.time(), 0, [], 0
    while step < steps:
        for batch in loader:
            loss = multimodal_forward(model, **batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tokens += int(batch["attention_mask"].sum())
            step += 1
            if step % 20 == 0 or step == steps:
                recent = sum(losses[-20:]) / len(losses[-20:])
                print(f"  step {step}/{steps} loss {recent:.3f} ({time.time() - started:.0f}s)", flush=True)
            if step == steps:
                break
    model.eval()
    return {"seconds": round(time.time() - started, 1), "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
            "tokens_per_step": round(tokens / max(1, step))}


def read_jsonl(path: str) -> list:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def evaluate(model, components, world: str, args) -> dict:
    """Toy VQA soft accuracy (official rule) and POPE F1 per split, answers generated greedily."""
    template = get_template("vicuna_v1", components.tokenizer)
    eval_model = EvalModel(model, components.tokenizer, template, ImageLoader(components.image_processor, "pad"),
                           "vicuna_v1", "pad")
    generator = AnswerGenerator(eval_model, GenerationSettings(max_new_tokens=8), torch.device("cpu"))
    prompts = PromptEncoder(components.tokenizer, template, components.image_token_id, components.num_image_tokens)
    root = os.path.join(world, layout.EVAL)

    def answer(rows, image_folder):
        out = []
        for start in range(0, len(rows), 32):
            chunk = rows[start:start + 32]
            out += generator.generate([prompts.encode(r["text"]) for r in chunk],
                                      [os.path.join(root, image_folder, r["image"]) for r in chunk])
        return out

    started = time.time()
    with open(os.path.join(root, layout.VQA_ANNOTATIONS), encoding="utf-8") as handle:
        gts = {a["question_id"]: a for a in json.load(handle)["annotations"]}
    vqa_rows = read_jsonl(os.path.join(root, layout.VQA_LLAVA))[: args.eval_vqa]
    vqa_answers = answer(vqa_rows, layout.VQA_IMAGES)
    by_type, scores = {}, []
    for row, prediction in zip(vqa_rows, vqa_answers):
        gt = gts[row["question_id"]]
        accuracy = question_accuracy(prediction, [a["answer"] for a in gt["answers"]])
        scores.append(accuracy)
        by_type.setdefault(gt["answer_type"], []).append(accuracy)
    result = {"vqa": round(100 * sum(scores) / len(scores), 2),
              "vqa_by_type": {t: round(100 * sum(v) / len(v), 1) for t, v in sorted(by_type.items())}}

    f1s = {}
    for split, path in layout.POPE_LABELS.items():
        labels = read_jsonl(os.path.join(root, path))[: args.eval_pope]
        rows = [{"text": r["text"] + "\n" + "Answer the question using a single word or phrase.", "image": r["image"]}
                for r in labels]
        predictions = [parse_pope_answer(a) for a in answer(rows, layout.POPE_IMAGES)]
        metrics = pope_metrics([r["label"] for r in labels], predictions)
        f1s[split] = {"f1": round(metrics["f1"] or 0.0, 3), "acc": round(metrics["accuracy"], 3),
                      "yes_ratio": round(metrics["yes_ratio"], 3)}
    result["pope"] = f1s
    result["pope_mean_f1"] = round(sum(v["f1"] for v in f1s.values()) / len(f1s), 3)

    mme_rows = read_jsonl(os.path.join(root, layout.MME_LLAVA))
    responses = answer(mme_rows, layout.MME_RELEASE)
    subtasks = {}
    for row, response in zip(mme_rows, responses):
        subtasks.setdefault(row["category"], []).append(response)
    mme = {}
    for subtask, subtask_responses in subtasks.items():
        with open(os.path.join(root, layout.MME_GROUND_TRUTH, f"{subtask}.txt"), encoding="utf-8") as handle:
            truths = [line.split("\t")[2] for line in handle.read().splitlines()]
        mme[subtask] = round(score_mme_subtask(list(zip(truths, subtask_responses)))["score"], 1)
    result["mme"] = mme
    result["mme_total"] = round(sum(mme.values()), 1)
    result["sample_answers"] = [(r["text"].split("\n")[0], a) for r, a in zip(vqa_rows[:6], vqa_answers[:6])]
    result["eval_seconds"] = round(time.time() - started, 1)
    return result


def stage2_data(world: str, spec: str) -> str:
    parts = []
    for item in spec.split(","):
        kind, _, count = item.partition(":")
        path = os.path.join(world, layout.INSTRUCT_JSON[kind]) if kind in layout.INSTRUCT_JSON else kind
        parts.append(f"{path}:{count}" if count else path)
    return ",".join(parts)


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with forward_stop_signals(), scratch_folder("toy_learnability_") as scratch:
        world = args.world
        if world is None:
            world = os.path.join(scratch, "world")
            write_toy_world(world, seed=args.seed)
        return learn(args, world)


def learn(args, world: str) -> int:
    """Stage 1, then stage 2 per mode, each model evaluated; prints the report."""
    model_args = ModelArguments(model_name_or_path=os.path.join(world, "llm"),
                                vision_tower=os.path.join(world, "vision"), mm_projector_type="mlp2x_gelu")
    images = os.path.join(world, layout.IMAGES)
    stage1_data = DataArguments(data_path=os.path.join(world, layout.PRETRAIN_JSON), image_folder=images,
                                conv_template="plain")
    components = load_data_components(model_args, stage1_data)
    torch.manual_seed(args.seed)
    model, spec = build_mllm(model_args, components.tokenizer)
    print(f"world {world}: {spec.num_image_tokens} image tokens per image; torch threads {torch.get_num_threads()}")

    report = {"settings": vars(args)}
    model, plan = apply_tune_mode(model, TuningArguments(tune_mode="connector"))
    groups = plan.param_groups(model, args.stage1_lr, 0.0)
    print("stage 1: connector on captions (plain template)")
    report["stage1"] = train(model, components, stage1_data, args.stage1_steps, groups, args.batch_size, args.seed)
    report["connector_only"] = evaluate(model, components, world, args)
    print(json.dumps(report["connector_only"]))

    stage2 = DataArguments(data_path=stage2_data(world, args.stage2_data), image_folder=images,
                           conv_template="vicuna_v1")
    for mode in args.modes.split(","):
        tuned, plan = apply_tune_mode(copy.deepcopy(model), TuningArguments(tune_mode=mode, norm_lr=args.norm_lr,
                                                                            mm_projector_lr=args.connector_lr))
        groups = plan.param_groups(tuned, args.lr, 0.0)
        print(f"stage 2: --tune_mode {mode} on {args.stage2_data} (vicuna_v1)")
        report[f"stage2_{mode}"] = train(tuned, components, stage2, args.stage2_steps, groups, args.batch_size,
                                         args.seed + 1)
        report[mode] = evaluate(tuned, components, world, args)
        print(json.dumps(report[mode]))

    print("\nsummary (VQA: official soft accuracy %; POPE: mean F1 over splits; MME: sum of the 4 subtask "
          "scores, max 800)")
    print(f"{'model':<16}{'VQA':>8}{'POPE F1':>10}{'MME':>8}{'train s':>10}")
    rows = [("connector-only", report["connector_only"], report["stage1"])]
    rows += [(mode, report[mode], report[f"stage2_{mode}"]) for mode in args.modes.split(",")]
    for name, scores, training in rows:
        print(f"{name:<16}{scores['vqa']:>8}{scores['pope_mean_f1']:>10}{scores['mme_total']:>8}"
              f"{training['seconds']:>10}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
