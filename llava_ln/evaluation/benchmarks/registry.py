"""The benchmarks `llava-ln eval` knows: how to find, read and write each one, and its default prompt.

The scored benchmarks are core.benchmarks' (names, folders, answer kinds); this adds how `llava-ln eval`
reads and writes each, and `generic`: any LLaVA question file (benchmarks/generic.py), whose answers are
LLaVA's answer file and which no official scorer covers.
"""
import os
from dataclasses import dataclass
from functools import partial
from typing import Callable

from llava_ln.core.benchmarks import BENCHMARKS, GENERIC_BENCHMARK
from llava_ln.core.errors import LlavaLnError
from llava_ln.evaluation.benchmarks import captions, generic, mme, pope, vqav2
from llava_ln.evaluation.benchmarks.common import CAPTION_PROMPT, SHORT_ANSWER_SUFFIX


@dataclass(frozen=True, kw_only=True)
class EvalBenchmark:
    """locate(DataFlags) -> sources; read_items(sources, prompt) -> [EvalItem] in official order;
    write_outputs(sources, items, {key: answer}, output_dir) -> {"files", "counts", "score": ScoreRequest}.

    prompt_is_suffix: the prompt is appended to each question (VQA-style) rather than being the
    whole instruction (captioning). scored: write_outputs gives a ScoreRequest (False: it gives None,
    there is no ground truth), known before anything is generated so --score can be refused up front.
    """

    name: str
    default_prompt: str
    prompt_is_suffix: bool
    locate: Callable
    read_items: Callable
    write_outputs: Callable
    scored: bool = True


def _source_paths(sources: dict) -> list:
    """The files and folders a benchmark's sources name (split names and the like left out)."""
    values = [v for value in sources.values() for v in (value.values() if isinstance(value, dict) else [value])]
    return [value for value in values if isinstance(value, str) and os.path.exists(value)]


def _refusing_empty(name: str, reader: Callable) -> Callable:
    """reader, with an empty question list an error: a run that answers nothing and scores 0 items hides a
    wrong or truncated file."""
    def read_items(sources: dict, prompt: str) -> list:
        items = reader(sources, prompt)
        if not items:
            raise LlavaLnError(f"--benchmark {name}: no questions in {', '.join(dict.fromkeys(_source_paths(sources)))}")
        return items

    return read_items


def _scored(name: str, module, *layout) -> EvalBenchmark:
    """A core.benchmarks entry read and written by `module` (captions': one module, one layout per benchmark)."""
    short = BENCHMARKS[name].answer == "short"
    return EvalBenchmark(name=name, default_prompt=SHORT_ANSWER_SUFFIX if short else CAPTION_PROMPT,
                         prompt_is_suffix=short, locate=partial(module.locate, *layout),
                         read_items=_refusing_empty(name, partial(module.read_items, *layout)),
                         write_outputs=partial(module.write_outputs, *layout))


_READERS = {"vqav2": (vqav2,), "pope": (pope,), "mme": (mme,), "coco_caption": (captions, captions.COCO),
            "flickr30k": (captions, captions.FLICKR30K)}
EVAL_BENCHMARKS = {
    **{name: _scored(name, *_READERS[name]) for name in BENCHMARKS},
    # LLaVA's question files carry their own instruction line: nothing is added unless --prompt says so.
    GENERIC_BENCHMARK: EvalBenchmark(name=GENERIC_BENCHMARK, default_prompt="", prompt_is_suffix=True, locate=generic.locate,
                           read_items=_refusing_empty(GENERIC_BENCHMARK, generic.read_items), write_outputs=generic.write_outputs,
                                   scored=False),
}


def get_benchmark(name: str) -> EvalBenchmark:
    if name not in EVAL_BENCHMARKS:
        raise LlavaLnError(f"--benchmark {name!r} is not one of {', '.join(EVAL_BENCHMARKS)}")
    return EVAL_BENCHMARKS[name]
