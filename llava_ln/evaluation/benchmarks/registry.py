"""The benchmarks `llava-ln eval` knows: how to find, read and write each one, and its default prompt.

`generic` is any LLaVA question file (benchmarks/generic.py); its answers are LLaVA's answer file.
"""
from dataclasses import dataclass
from functools import partial
from typing import Callable

from llava_ln.core.errors import LlavaLnError
from llava_ln.evaluation.benchmarks import captions, generic, mme, pope, vqav2
from llava_ln.evaluation.benchmarks.common import CAPTION_PROMPT, SHORT_ANSWER_SUFFIX


@dataclass(frozen=True)
class Benchmark:
    """locate(DataFlags) -> sources; read_items(sources, prompt) -> [EvalItem] in official order;
    write_outputs(sources, items, {key: answer}, output_dir) -> {"files", "counts", "score": ScoreRequest}.

    prompt_is_suffix: the prompt is appended to each question (VQA-style) rather than being the
    whole instruction (captioning).
    """

    name: str
    default_prompt: str
    prompt_is_suffix: bool
    locate: Callable
    read_items: Callable
    write_outputs: Callable


BENCHMARKS = {
    "mme": Benchmark("mme", SHORT_ANSWER_SUFFIX, True, mme.locate, mme.read_items, mme.write_outputs),
    "vqav2": Benchmark("vqav2", SHORT_ANSWER_SUFFIX, True, vqav2.locate, vqav2.read_items, vqav2.write_outputs),
    "pope": Benchmark("pope", SHORT_ANSWER_SUFFIX, True, pope.locate, pope.read_items, pope.write_outputs),
    # LLaVA's question files carry their own instruction line: nothing is added unless --prompt says so.
    "generic": Benchmark("generic", "", True, generic.locate, generic.read_items, generic.write_outputs),
    **{
        layout.name: Benchmark(layout.name, CAPTION_PROMPT, False, partial(captions.locate, layout),
                               partial(captions.read_items, layout), partial(captions.write_outputs, layout))
        for layout in (captions.COCO, captions.FLICKR30K)
    },
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise LlavaLnError(f"--benchmark {name!r} is not one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]
