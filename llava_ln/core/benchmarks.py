"""The benchmarks llava-ln scores, as data: one entry each, and how long their answers may be.

Every list, folder name, answer length and report label of a benchmark comes from here: `llava-ln score`
(scoring.dispatch picks the rules), `llava-ln eval` (evaluation.benchmarks.registry adds `generic`, any
LLaVA question file, which has no scorer), evaluation during training, the demo, compare and the toy
world's eval folder. It sits in core because training's flags name the benchmarks too.
"""
from dataclasses import dataclass
from typing import Literal

from llava_ln.core.errors import LlavaLnError

# short: a word or phrase appended to a question (VQA style); caption: one sentence about the image.
AnswerKind = Literal["short", "caption"]


@dataclass(frozen=True, kw_only=True)
class BenchmarkSpec:
    name: str  # --benchmark
    folder: str  # its folder under LLaVA's playground/data/eval (and under a toy world's eval/)
    answer: AnswerKind
    rules: Literal["vqa", "mme", "pope", "caption"]  # the official scoring rules that apply (scoring.dispatch)
    headline_key: str  # the scorer JSON's headline number ...
    headline_scale: float  # ... times this: x100 for fractions, as the paper's tables print them
    label: str  # the headline's name in the demo's report (README.md's table)
    column: str  # its short name in comparison tables and plots

    def headline(self, scores: dict) -> float | None:
        """The headline number from the scorer's JSON (None when the scorer left it undefined)."""
        value = scores[self.headline_key]
        return None if value is None else float(value) * self.headline_scale

    def scored(self, scores: dict) -> tuple[int | None, str]:
        """(how many items the scorer JSON covers, what they are): questions, or images for captions."""
        if self.rules == "vqa":
            return scores.get("counts", {}).get("questions"), "questions"
        if self.rules == "pope":
            return sum(split.get("questions", 0) for split in scores.get("splits", {}).values()), "questions"
        if self.rules == "mme":
            return sum(item.get("questions", 0) for item in scores.get("details", {}).values()), "questions"
        return scores.get("counts", {}).get("images"), "images"

    def headline_line(self, scores: dict) -> str:
        """One line a person reads: `vqav2: VQA accuracy (%) 59.48 (n=400 questions)`."""
        value = self.headline(scores)
        count, unit = self.scored(scores)
        shown = "undefined" if value is None else f"{value:.2f}"
        return f"{self.name}: {self.label} {shown} (n={count if count is not None else '?'} {unit})"


BENCHMARKS = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(name="vqav2", folder="vqav2", answer="short", rules="vqa", headline_key="overall",
                      headline_scale=1.0, label="VQA accuracy (%)", column="VQAv2"),
        BenchmarkSpec(name="pope", folder="pope", answer="short", rules="pope", headline_key="mean_f1",
                      headline_scale=100.0, label="POPE mean F1 (x100)", column="POPE F1"),
        BenchmarkSpec(name="mme", folder="MME", answer="short", rules="mme", headline_key="perception",
                      headline_scale=1.0, label="MME perception", column="MME perc."),
        BenchmarkSpec(name="coco_caption", folder="coco_caption", answer="caption", rules="caption",
                      headline_key="CIDEr", headline_scale=100.0, label="COCO CIDEr (x100)", column="COCO CIDEr"),
        BenchmarkSpec(name="flickr30k", folder="flickr30k", answer="caption", rules="caption", headline_key="CIDEr",
                      headline_scale=100.0, label="Flickr30k CIDEr (x100)", column="Flickr30k CIDEr"),
    )
}
POPE_SPLITS = ("random", "popular", "adversarial")


def get_benchmark_spec(name: str, flag: str = "--benchmark") -> BenchmarkSpec:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise LlavaLnError(f"{flag} {name!r} is not one of {', '.join(BENCHMARKS)}") from None


def benchmark_list(text: str, flag: str) -> list[str]:
    """'pope, vqav2' -> ["pope", "vqav2"]; an unknown name is a LlavaLnError naming the flag."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise LlavaLnError(f"{flag}: {', '.join(unknown)} not among {', '.join(BENCHMARKS)}")
    return names


@dataclass(frozen=True, kw_only=True)
class AnswerLengths:
    """The longest answer generated, in tokens, per answer kind."""

    short: int
    caption: int

    def of(self, benchmark: str) -> int:
        """The length for this benchmark's answers (a question file no entry describes gets short answers)."""
        spec = BENCHMARKS.get(benchmark)
        return self.caption if spec is not None and spec.answer == "caption" else self.short

    def per_benchmark(self, benchmarks) -> dict:
        return {name: self.of(name) for name in benchmarks}


# Questions per generate call, per device, by default (llava-ln eval --batch_size, train --eval_batch_size):
# left padding gives the same answers at any batch size, so this only trades memory for speed.
GENERATION_BATCH_SIZE = 16
# llava-ln eval's name for any LLaVA question file: answered, but no official scorer covers it.
GENERIC_BENCHMARK = "generic"

# llava-ln eval's default, for any model: LLaVA's model_vqa scripts' max_new_tokens.
LLAVA_ANSWER_LENGTHS = AnswerLengths(short=128, caption=128)
# Evaluation during training (--eval_max_new_tokens 0): a learning curve's fixed subsets, asked often.
LEARNING_CURVE_ANSWER_LENGTHS = AnswerLengths(short=16, caption=64)
# The toy world's final evaluations (demo, compare --world): short answers are parsed from their first
# words (MME looks at 4 characters, POPE at the first sentence), so a few tokens suffice, and an untuned
# model would otherwise ramble to the limit.
TOY_ANSWER_LENGTHS = AnswerLengths(short=8, caption=32)
