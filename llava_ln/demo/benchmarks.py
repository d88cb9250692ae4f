"""Evaluate one checkpoint on the toy world's five benchmarks and pull out the headline numbers."""
import os

from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.runner import run_eval

# benchmark -> folder under the toy world's eval/ (the layouts LLaVA users know)
BENCHMARK_FOLDERS = {"vqav2": "vqav2", "pope": "pope", "mme": "MME", "coco_caption": "coco_caption",
                     "flickr30k": "flickr30k"}

# Short-answer benchmarks are parsed from the first words (MME looks at 4 characters, POPE at the
# first sentence), so a few tokens suffice; an untuned model would otherwise ramble to the limit.
MAX_NEW_TOKENS = {"vqav2": 8, "pope": 8, "mme": 8, "coco_caption": 32, "flickr30k": 32}

# headline metric per benchmark: (label, function of the scorer's JSON, scale shown in the report)
HEADLINES = {
    "vqav2": ("VQA accuracy (%)", lambda s: s["overall"]),
    "pope": ("POPE mean F1 (x100)", lambda s: 100.0 * s["mean_f1"]),
    # F1 alone flatters a model that always says "yes" (F1 0.667 at 50% positives)
    "pope_accuracy": ("POPE accuracy (%)", lambda s: 100.0 * sum(v["accuracy"] for v in s["splits"].values())
                      / len(s["splits"])),
    "mme": ("MME perception", lambda s: s["perception"]),
    "coco_caption": ("COCO CIDEr (x100)", lambda s: 100.0 * s["CIDEr"]),
    "flickr30k": ("Flickr30k CIDEr (x100)", lambda s: 100.0 * s["CIDEr"]),
}


def evaluate(model_path: str, world: str, output_dir: str, conv_template: str | None = None,
             batch_size: int = 32, bits: int = 16) -> dict:
    """Run llava-ln eval --score for every benchmark; returns {benchmark: scorer JSON}.

    conv_template: None uses the checkpoint's own (its manifest); the demo asks the stage-1
    model in the stage-2 template so that both models get the very same prompts. bits: eval --bits
    (4: a --bits 4 run evaluated on the quantized base it trained on).
    """
    scores = {}
    for benchmark, folder in BENCHMARK_FOLDERS.items():
        summary = run_eval(EvalArguments(
            benchmark=benchmark, model_path=model_path, data=os.path.join(world, "eval", folder),
            output_dir=os.path.join(output_dir, benchmark), score=True, batch_size=batch_size,
            conv_template=conv_template,
            max_new_tokens=MAX_NEW_TOKENS[benchmark], dtype="float32", device="cpu", overwrite=True, bits=bits,
        ))
        scores[benchmark] = summary["scores"]
    return scores


def headline_numbers(scores: dict) -> dict:
    """{label: value} for the report, in the order of HEADLINES."""
    numbers = {}
    for name, (label, pick) in HEADLINES.items():
        source = "pope" if name == "pope_accuracy" else name
        if source in scores:
            numbers[label] = round(float(pick(scores[source])), 2)
    return numbers
