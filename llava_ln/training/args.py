"""Training flags: the usual Hugging Face TrainingArguments names plus LLaVA's stage-2 adapter flag.

Only flags that this trainer really honours exist here; a LLaVA launch script ports by
keeping these names (see docs/training.md for the few LLaVA flags that became --tune_mode).
"""
import os
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from llava_ln.core.args import LaunchArguments, OutputArguments, SeedArguments
from llava_ln.core.benchmarks import BENCHMARKS, GENERATION_BATCH_SIZE, LEARNING_CURVE_ANSWER_LENGTHS, benchmark_list
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import SEEDS, Domain
from llava_ln.core.flags import CommandFlags
from llava_ln.data.args import DataArguments
from llava_ln.kernels import KERNEL_CHOICES
from llava_ln.model.args import ModelArguments
from llava_ln.tuning.args import LEARNING_RATES, TuningArguments

REPORT_TARGETS = ("none", "tensorboard", "wandb")
# What each --report_to target imports, and how to install it: checked with the flags, before any work.
REPORT_PACKAGES = {"tensorboard": ("tensorboard", "pip install 'llava-ln[train]'"), "wandb": ("wandb", "pip install wandb")}
SAVE_STRATEGIES = ("steps", "epoch", "no")
OPTIM_STATE_DTYPES = ("fp32", "bf16")
# token: a step's loss is the mean over every supervised token of the step (all micro-batches, all ranks);
# llava: the mean of each micro-batch's own token mean (LLaVA's and transformers' Trainer's weighting until 2024).
LOSS_WEIGHTINGS = ("token", "llava")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(kw_only=True)
class MemoryArguments:
    """How a training step spends memory: training's flags, and describe's for its estimate of the same step."""

    kernels: str = field(default="auto", metadata={
        "help": "Memory-lean norm/MLP modules and the fused head + loss: auto (liger-kernel on CUDA when "
                "installed, else torch) | torch | liger | none (transformers' modules, unfused loss)."})
    # A string so that `auto` parses; __post_init__ turns true/false back into booleans (LLaVA passes True).
    gradient_checkpointing: str = field(default=False, metadata={
        "help": "Recompute LLM blocks in backward to save memory: true | false | auto (the fewest blocks "
                "whose estimated peak fits --memory_budget_gib; llava-ln describe shows the choice).",
        "nargs": "?", "const": "true"})
    memory_budget_gib: Optional[float] = field(default=None, metadata={
        "help": "GiB per device --gradient_checkpointing auto plans for (default: the GPU's free memory minus "
                "10%%, at least 2 GiB; on a CPU auto then checkpoints every block).", "domain": Domain(gt=0)})

    def __post_init__(self):
        if isinstance(self.gradient_checkpointing, str):
            lowered = self.gradient_checkpointing.strip().lower()
            if lowered in _TRUE + _FALSE:
                self.gradient_checkpointing = lowered in _TRUE

    def check_memory_flags(self) -> None:
        gradient_checkpointing_choice(self.gradient_checkpointing)
        if self.kernels not in KERNEL_CHOICES:
            raise LlavaLnError(f"--kernels {self.kernels!r} is not one of {', '.join(KERNEL_CHOICES)}")


@dataclass(kw_only=True)
class PackingArguments:
    """Padding-free micro-batches: training's flags, and describe's for its estimate of the same step."""

    packing: bool = field(default=False, metadata={
        "help": "Padding-free micro-batches: each holds whole samples side by side (one row under FlashAttention, "
                "rows of like length otherwise), up to --max_tokens_per_batch tokens, attention confined to each "
                "sample (see docs/training.md)."})
    max_tokens_per_batch: Optional[int] = field(default=None, metadata={
        "help": "With --packing: tokens per micro-batch per device (image positions included), the same on every "
                "rank; replaces --per_device_train_batch_size. At least the longest sample (--model_max_length "
                "is always enough).", "domain": Domain(ge=2)})

    def check_packing_flags(self) -> None:
        if self.max_tokens_per_batch is not None and not self.packing:
            raise LlavaLnError("--max_tokens_per_batch sizes packed micro-batches: add --packing, or drop it")
        if self.packing and self.max_tokens_per_batch is None:
            raise LlavaLnError("--packing needs --max_tokens_per_batch (tokens per micro-batch per device)")


@dataclass(kw_only=True)
class TrainingArguments(PackingArguments, MemoryArguments, LaunchArguments, SeedArguments, OutputArguments):
    required_flags: ClassVar[tuple] = ("output_dir",)  # checked by check_training_args; --help says so
    pretrain_mm_mlp_adapter: Optional[str] = field(
        default=None,
        metadata={"help": "Stage 2: the stage-1 connector (its safetensors file or its run folder) to start from."},
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs (may be fractional); see --max_steps.",
                                                           "domain": Domain(ge=0)})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps to run; overrides --num_train_epochs.",
                                                 "domain": Domain(ge=1, special={-1: "--num_train_epochs decides"})})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Samples per device per micro-step.",
                                                                  "domain": Domain(ge=1)})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-steps per optimizer step.",
                                                                  "domain": Domain(ge=1)})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak LR (groups without their own rate).",
                                                         "domain": LEARNING_RATES})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (never on norms or biases).",
                                                       "domain": Domain(ge=0)})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1.", "domain": Domain(ge=0, lt=1)})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2.", "domain": Domain(ge=0, lt=1)})
    # 0 divides by a second moment that is 0 for every parameter whose gradient was 0: NaN at step 1.
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon.", "domain": Domain(gt=0)})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the global gradient norm to this.",
                                                        "domain": Domain(gt=0, special={0: "no clipping"})})
    loss_weighting: str = field(default="token", metadata={
        "help": "token: a step's loss is the mean over all its supervised tokens (every micro-batch and rank), so "
                "the gradient does not depend on how the step is split | llava: each micro-batch's own mean, "
                "averaged over micro-batches and ranks (LLaVA's weighting, for like-for-like comparisons)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name: cosine, "
                                                               "linear, constant, constant_with_warmup, ..."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Warmup as a share of all steps.",
                                                       "domain": Domain(ge=0, le=1)})
    warmup_steps: int = field(default=0, metadata={"help": "Warmup steps (overrides --warmup_ratio).",
                                                   "domain": Domain(ge=1, special={0: "--warmup_ratio decides"})})
    bf16: bool = field(default=False, metadata={"help": "bf16 compute: frozen weights bf16, trainable fp32 master."})
    fp16: bool = field(default=False, metadata={"help": "fp16 compute with loss scaling."})
    tf32: Optional[bool] = field(default=None, metadata={"help": "Allow TF32 matmuls on Ampere+ GPUs."})
    gradient_checkpointing_ratio: float = field(
        default=1.0,
        metadata={"help": "Share of the LLM's blocks (the first ones) that recompute under "
                  "--gradient_checkpointing; lower trades memory for speed.", "domain": Domain(ge=0, le=1)},
    )
    save_strategy: str = field(default="steps", metadata={"help": "steps | epoch | no (intermediate checkpoints)."})
    # 0 would never save nor log: no saving is --save_strategy no.
    save_steps: float = field(default=500, metadata={"help": "Save checkpoint-<step>/ every N optimizer steps "
                                                     "(a value below 1 is a share of all steps).",
                                                     "domain": Domain(gt=0)})
    save_total_limit: Optional[int] = field(default=None, metadata={"help": "Keep only the newest N checkpoints.",
                                                                    "domain": Domain(ge=1)})
    logging_steps: float = field(default=10, metadata={"help": "Log every N optimizer steps (below 1: a share).",
                                                       "domain": Domain(gt=0)})
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | wandb (comma separated)."})
    run_name: Optional[str] = field(default=None, metadata={"help": "Run name for wandb / tensorboard."})
    logging_dir: Optional[str] = field(default=None, metadata={"help": "TensorBoard folder (default "
                                                               "OUTPUT_DIR/runs)."})
    deepspeed: Optional[str] = field(default=None, metadata={"help": "DeepSpeed JSON config (zero_configs/*.json); "
                                                             "without it: plain PyTorch (DDP when distributed)."})
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "OUTPUT_DIR/checkpoint-<step> to continue from exactly."}
    )
    dataloader_num_workers: int = field(default=0, metadata={
        "help": "DataLoader worker processes per rank.", "domain": Domain(ge=1, special={0: "read in the training "
                                                                                            "process"})})
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU even when CUDA is available."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bar."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Start afresh in a folder that holds a "
                                                                "run: that run is moved aside to "
                                                                "OUTPUT_DIR.previous-<time>."})
    # Accepted so LLaVA scripts port unchanged (in-training evaluation is --eval_benchmarks below; data is always lazy).
    evaluation_strategy: str = field(default="no", metadata={"help": "Only `no` (evaluate with `llava-ln eval`)."})
    lazy_preprocess: bool = field(default=True, metadata={"help": "Always lazy; accepted for LLaVA scripts."})
    # ---- LLaVA / Hugging Face names with their meaning (training/llava_flags.py maps the rest) ----
    data_seed: Optional[int] = field(default=None, metadata={"help": "Seed of the data order and of --data_path "
                                                             "subsets (default: --seed).", "domain": SEEDS})
    # Run reliability (docs/reliability.md, "Runs"): non-finite steps and resuming with changed flags.
    max_nonfinite_steps: int = field(
        default=3, metadata={"help": "Skip up to N optimizer steps in a row whose loss or gradient norm is not finite "
                             "(no update, a warning each); one more stops the run with an error.",
                             "domain": Domain(ge=0)})
    allow_changed_flags: bool = field(
        default=False, metadata={"help": "Resume although flags that change the run (seed, rates, schedule, data, "
                                 "...) differ from the checkpoint's; the change is recorded in run_config.json and "
                                 "log.jsonl."})
    stop_signals: str = field(
        default="TERM,INT,HUP,USR1", metadata={"help": "Signals that stop a run after a checkpoint (names, comma "
                                               "separated; HUP: a dropped ssh session, USR1: SLURM's --signal=USR1@90 "
                                               "warning before the time limit). TERM and INT always stop it."})

    # --- Efficiency (memory and speed, not what is learned): trainable-state memory ---
    optim_state_dtype: str = field(default="fp32", metadata={
        "help": "fp32 | bf16: Adam moments stored in bf16 with stochastic rounding (half their memory, "
                "approximate; plain PyTorch strategy only). See docs/training.md."})
    sparse_embedding_grad: bool = field(default=False, metadata={
        "help": "Trainable input embeddings get a gradient for the rows a step uses only (exact AdamW; "
                "one process, plain PyTorch strategy). See docs/training.md."})

    # ---- Evaluation during training and gradient statistics (run by train.py through Loop hooks) ----
    eval_benchmarks: str = field(default="", metadata={
        "help": f"Benchmarks to score during training, comma separated ({', '.join(BENCHMARKS)}); needs --eval_data."})
    eval_data: Optional[str] = field(default=None, metadata={
        "help": "Folder holding one folder per benchmark in its official layout (LLaVA's playground/data/eval: "
                f"{', '.join(spec.folder for spec in BENCHMARKS.values())})."})
    eval_steps: float = field(default=0, metadata={
        "help": "Evaluate every N optimizer steps (below 1: a share of all steps) and after the last.",
        "domain": Domain(gt=0, special={0: "only after the last step"})})
    eval_limit: int = field(default=200, metadata={
        "help": "Items per benchmark, evenly spaced over its list, the same ones every time.",
        "domain": Domain(ge=1, special={0: "all"})})
    eval_batch_size: int = field(default=GENERATION_BATCH_SIZE, metadata={
        "help": "Questions per generate call, per device.", "domain": Domain(ge=1)})
    eval_max_new_tokens: int = field(default=0, metadata={
        "help": "Longest answer in tokens.", "domain": Domain(ge=1, special={
            0: f"{LEARNING_CURVE_ANSWER_LENGTHS.short} for short-answer benchmarks, "
               f"{LEARNING_CURVE_ANSWER_LENGTHS.caption} for captions"})})
    log_grad_stats: bool = field(default=False, metadata={
        "help": "Log each optimizer group's gradient norm (before clipping) per step and its variance over "
                "the logging window to log.jsonl."})


def check_training_args(args: TrainingArguments) -> None:
    """Reject impossible combinations before any model is loaded (each flag's own domain: parse_flags)."""
    args.require_output_dir("llava-ln train")
    if os.path.lexists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise LlavaLnError(f"--output_dir {args.output_dir}: exists and is not a folder")
    if args.bf16 and args.fp16:
        raise LlavaLnError("--bf16 and --fp16 are exclusive")
    if args.max_steps <= 0 and args.num_train_epochs <= 0:
        raise LlavaLnError("set --max_steps > 0 or --num_train_epochs > 0")
    if args.loss_weighting not in LOSS_WEIGHTINGS:
        raise LlavaLnError(f"--loss_weighting {args.loss_weighting!r} is not one of {', '.join(LOSS_WEIGHTINGS)}")
    if args.save_strategy not in SAVE_STRATEGIES:
        raise LlavaLnError(f"--save_strategy {args.save_strategy!r} is not one of {', '.join(SAVE_STRATEGIES)}")
    if args.evaluation_strategy != "no":
        raise LlavaLnError("--evaluation_strategy: only `no` is supported; evaluate during training with "
                           "--eval_benchmarks/--eval_steps, or afterwards with `llava-ln eval`")
    unknown = [t for t in report_targets(args) if t not in REPORT_TARGETS]
    if unknown:
        raise LlavaLnError(f"--report_to {','.join(unknown)} is not one of {', '.join(REPORT_TARGETS)}")
    for target in report_targets(args):
        refuse_missing_reporter(target)
    benchmark_list(args.eval_benchmarks, "--eval_benchmarks")
    if args.eval_benchmarks and not args.eval_data:
        raise LlavaLnError("--eval_benchmarks needs --eval_data (the folder holding the benchmarks' folders)")
    args.check_memory_flags()
    args.check_packing_flags()
    if args.optim_state_dtype not in OPTIM_STATE_DTYPES:
        raise LlavaLnError(f"--optim_state_dtype {args.optim_state_dtype!r} is not one of "
                           f"{', '.join(OPTIM_STATE_DTYPES)}")
    lean_states = args.optim_state_dtype != "fp32" or args.sparse_embedding_grad
    if lean_states and args.deepspeed:
        raise LlavaLnError("--optim_state_dtype bf16 and --sparse_embedding_grad need the plain PyTorch strategy; "
                           "drop --deepspeed (ZeRO partitions the optimizer states across ranks instead)")


def gradient_checkpointing_choice(value) -> str:
    """--gradient_checkpointing as "on", "off" or "auto" (True/False from code, LLaVA's True/False, auto)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    if text in _TRUE:
        return "on"
    if text in _FALSE:
        return "off"
    if text == "auto":
        return "auto"
    raise LlavaLnError(f"--gradient_checkpointing {value!r} is not one of true, false, auto")


def refuse_missing_reporter(target: str) -> None:
    """A --report_to target whose package is not installed: one line, before the model, data or run folder."""
    import importlib.util

    package, install = REPORT_PACKAGES[target]
    if importlib.util.find_spec(package) is None:
        raise LlavaLnError(f"--report_to {target} needs the {package} package, which is not installed ({install}); "
                           "or leave it out of --report_to")


def report_targets(args: TrainingArguments) -> list[str]:
    return [t.strip() for t in (args.report_to or "none").split(",") if t.strip() and t.strip() != "none"]


def steps_from(value: float, total_steps: int) -> int:
    """HF semantics: an interval below 1 is a share of the whole run."""
    if value <= 0:
        return 0
    return max(1, round(value * total_steps)) if value < 1 else int(value)


# train.py parses these; cli.py answers `llava-ln train --help` from them without importing train.py.
TRAIN_FLAGS = CommandFlags("llava-ln train", "Stage 1 or stage 2 training of a LLaVA-style model.",
                           (ModelArguments, DataArguments, TuningArguments, TrainingArguments))
