"""The flags of `llava-ln eval` (LLaVA's names where LLaVA has the concept)."""
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from llava_ln.core.args import LaunchArguments, ReplaceOutputArguments, SeedArguments
from llava_ln.core.benchmarks import BENCHMARKS, GENERATION_BATCH_SIZE, GENERIC_BENCHMARK, LLAVA_ANSWER_LENGTHS
from llava_ln.core.flag_domains import Domain
from llava_ln.data.args import ImageFileArguments
from llava_ln.model.args import BitsArguments


@dataclass(kw_only=True)
class EvalArguments(BitsArguments, ImageFileArguments, LaunchArguments, SeedArguments, ReplaceOutputArguments):
    required_flags: ClassVar[tuple] = ("output_dir",)  # checked in __post_init__; --help says so
    benchmark: str = field(metadata={"help": "Which benchmark to generate answers for.",
                                     "choices": [*BENCHMARKS, GENERIC_BENCHMARK]})
    model_path: str = field(metadata={"help": "A training OUTPUT_DIR, a merged folder, or a transformers LLaVA folder."})
    data: Optional[str] = field(default=None, metadata={
        "help": "The benchmark's folder in its official layout (see eval/README.md); the flags below override parts."})
    question_file: Optional[str] = field(default=None, metadata={
        "help": "vqav2: questions JSON (official) or LLaVA's question JSONL; generic: LLaVA's question JSONL "
                "({question_id, image, text})."})
    annotation_file: Optional[str] = field(default=None, metadata={
        "help": "vqav2: annotations (enables scoring); pope: label file(s) (path, folder or split=path,...); "
                "captions: COCO-format caption file."})
    split: Optional[str] = field(default=None, metadata={
        "help": "vqav2: which question split under --data (val2014, test-dev2015, ...; default val2014)."})
    upload_question_file: Optional[str] = field(default=None, metadata={
        "help": "vqav2: questions whose ids the EvalAI upload must cover (default for test splits: "
                "v2_OpenEnded_mscoco_test2015_questions.json under --data, else --question_file)."})
    prompt: Optional[str] = field(default=None, metadata={
        "help": "vqav2/mme/pope: the instruction added on a new line after each question (default LLaVA-1.5's "
                "'Answer the question using a single word or phrase.'); captions: the whole instruction "
                "(default 'Provide a one-sentence caption for the provided image.'). '' adds nothing."})
    conv_template: Optional[str] = field(default=None, metadata={
        "help": "Conversation template (default: the one in the checkpoint's manifest; 'auto' for a folder without one)."})
    image_aspect_ratio: Optional[str] = field(default=None, metadata={
        "help": "pad | resize | crop (default: the checkpoint manifest's, else pad)."})
    batch_size: int = field(default=GENERATION_BATCH_SIZE, metadata={"help": "Questions per generate call, per device.",
                                                                     "domain": Domain(ge=1)})
    max_new_tokens: Optional[int] = field(default=None, metadata={
        "help": f"Longest answer, in tokens (default {LLAVA_ANSWER_LENGTHS.short} for short answers, "
                f"{LLAVA_ANSWER_LENGTHS.caption} for captions: LLaVA's model_vqa scripts').", "domain": Domain(ge=1)})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature.",
                                                      "domain": Domain(gt=0, special={0: "greedy decoding"})})
    top_p: Optional[float] = field(default=None, metadata={"help": "Nucleus sampling mass (only with --temperature > 0).",
                                                           "domain": Domain(gt=0, le=1)})
    num_beams: int = field(default=1, metadata={"help": "Beam search width (1: no beam search).",
                                                "domain": Domain(ge=1)})
    share_image_prefix: bool = field(default=True, metadata={
        "help": "true: run the vision tower and the prompt up to the image once per image and answer all its "
                "questions from that key/value cache (same greedy answers, far less compute); false: fill every "
                "question's whole prompt (the per-question path, for checking). Beam search and models whose "
                "cache cannot be shared always take the per-question path."})
    dtype: str = field(default="auto", metadata={"help": "auto (bfloat16 on a GPU that has it, else float32), "
                                                         "float32, bfloat16 or float16."})
    device: str = field(default="auto", metadata={"help": "auto, cuda or cpu."})
    attn_implementation: Optional[str] = field(default=None, metadata={
        "help": "auto | flash_attention_2 | sdpa | eager (default: llava-ln's automatic choice)."})
    score: bool = field(default=False, metadata={"help": "Score the written files right away (llava-ln score) and "
                                                         "include the scorer's JSON in the output."})
    # ---- LLaVA's answer file (evaluation/llava_answers.py) ----
    answers_format: str = field(default="official", metadata={
        "help": "official: the benchmark's own files; llava: also OUTPUT_DIR/llava_answers.jsonl as LLaVA's "
                "model_vqa_loader writes it (generic always writes it).", "choices": ["official", "llava"]})

    def __post_init__(self):
        self.require_output_dir("llava-ln eval")
        if self.max_new_tokens is None:
            self.max_new_tokens = LLAVA_ANSWER_LENGTHS.of(self.benchmark)
