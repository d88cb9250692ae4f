"""The flags of `llava-ln eval` (LLaVA's names where LLaVA has the concept)."""
from dataclasses import dataclass, field
from typing import Optional

from llava_ln.data.images import DEFAULT_MAX_IMAGE_PIXELS
from llava_ln.evaluation.benchmarks.registry import BENCHMARKS


@dataclass
class EvalArguments:
    benchmark: str = field(metadata={"help": "Which benchmark to generate answers for.", "choices": list(BENCHMARKS)})
    model_path: str = field(metadata={"help": "A training OUTPUT_DIR, a merged folder, or a transformers LLaVA folder."})
    output_dir: str = field(metadata={"help": "Where answers (restartable) and the official result files go."})
    data: Optional[str] = field(default=None, metadata={
        "help": "The benchmark's folder in its official layout (see eval/README.md); the flags below override parts."})
    question_file: Optional[str] = field(default=None, metadata={
        "help": "vqav2: questions JSON (official) or LLaVA's question JSONL; generic: LLaVA's question JSONL "
                "({question_id, image, text})."})
    annotation_file: Optional[str] = field(default=None, metadata={
        "help": "vqav2: annotations (enables scoring); pope: label file(s) (path, folder or split=path,...); "
                "captions: COCO-format caption file."})
    image_folder: Optional[str] = field(default=None, metadata={"help": "Folder the question files' images are in."})
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
    batch_size: int = field(default=16, metadata={"help": "Questions per generate call, per device."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer, in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "0 (default) decodes greedily; > 0 samples."})
    top_p: Optional[float] = field(default=None, metadata={"help": "Nucleus sampling mass (only with --temperature > 0)."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width (1: no beam search)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (each rank adds its rank)."})
    dtype: str = field(default="auto", metadata={"help": "auto (bfloat16 on a GPU that has it, else float32), "
                                                         "float32, bfloat16 or float16."})
    device: str = field(default="auto", metadata={"help": "auto, cuda or cpu."})
    attn_implementation: Optional[str] = field(default=None, metadata={
        "help": "auto | flash_attention_2 | sdpa | eager (default: llava-ln's automatic choice)."})
    score: bool = field(default=False, metadata={"help": "Score the written files right away (llava-ln score) and "
                                                         "include the scorer's JSON in the output."})
    overwrite: bool = field(default=False, metadata={"help": "Discard answers from an earlier run in --output_dir."})
    local_rank: int = field(default=-1, metadata={"help": "Set by the deepspeed launcher; not needed otherwise."})
    # ---- LLaVA's answer file (evaluation/llava_answers.py) ----
    answers_format: str = field(default="official", metadata={
        "help": "official: the benchmark's own files; llava: also OUTPUT_DIR/llava_answers.jsonl as LLaVA's "
                "model_vqa_loader writes it (generic always writes it).", "choices": ["official", "llava"]})

    # ---- reliability: untrusted image files ----
    max_image_pixels: int = field(default=DEFAULT_MAX_IMAGE_PIXELS, metadata={
        "help": "Largest image, in pixels, that reading a file may build (decoded, padded, resized); a file that "
                "would exceed it is refused before decoding (0: no limit)."})
    # ---- quantized base (llava_ln/model/quantize.py) ----
    bits: int = field(default=16, metadata={
        "help": "4 or 8: quantize the LLM's block linears at load, as a --bits run was trained (its 4-bit type "
                "and double quantization from the run's manifest, else nf4 + double quant); LoRA then stays "
                "unmerged on top. 16: as stored (the unquantized base for a --bits run, as merge/export ship it)."})
