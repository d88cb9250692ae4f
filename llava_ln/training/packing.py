"""--packing in a training run: the combinations it refuses, the model check, and what a micro-batch is.

The packed micro-batches themselves (the token-budget packer and the packed row) are data.packing's;
this module decides whether a run may use them and what the rest of training sees of them:
  * refusals, one line each: flags that contradict a token budget (--group_by_modality_length, an
    explicit --per_device_train_batch_size), and a model whose attention cannot be confined to each
    sample of a row from restarting position ids (model.packed_attention judges the model);
  * whether a packed micro-batch is one row (under FlashAttention) or several, and the micro-batch
    shape the memory plan and describe reason with: --max_tokens_per_batch tokens instead of
    --per_device_train_batch_size rows of --model_max_length;
  * the step size a resume must match: tokens per optimizer step instead of samples.
"""
import logging
import time

from llava_ln.core.errors import LlavaLnError
from llava_ln.data.packing import PackedCollator, TokenBudgetPacker
from llava_ln.model.packed_attention import packed_attention_problem
from llava_ln.model.parts import language_model_of

logger = logging.getLogger(__name__)


def check_packing_combination(args, data_args, given: set) -> None:
    """Flags that cannot be right together with --packing (given: the flag names on the command line)."""
    if not args.packing:
        return
    if data_args.group_by_modality_length:
        raise LlavaLnError("--group_by_modality_length sorts padded batches by length; --packing has no padding "
                           "to save: drop one")
    if "per_device_train_batch_size" in given:
        raise LlavaLnError("--per_device_train_batch_size counts samples; with --packing a micro-batch is "
                           "--max_tokens_per_batch tokens: drop --per_device_train_batch_size")


def packing_attention_problem(model) -> str | None:
    """Why the LLM of `model` cannot keep packed samples apart, or None when it can (model.packed_attention)."""
    return packed_attention_problem(language_model_of(model))


def check_packing_model(model) -> None:
    problem = packing_attention_problem(model)
    if problem:
        raise LlavaLnError(f"--packing: {problem}; train without --packing")


def one_row_for(model) -> bool:
    """Whether a packed micro-batch is one row: under FlashAttention's variable-length kernel, where a sample's
    attention costs its own length only; other attention computes every score of a row (data.packing)."""
    implementation = getattr(language_model_of(model).config, "_attn_implementation", "") or ""
    return implementation.startswith("flash_attention")


def micro_batch_shape(args, model_max_length: int) -> tuple[int, int]:
    """(rows, tokens per row) of the largest micro-batch: the shape the memory plan measures (with --packing the
    budget in rows of --model_max_length, the longest rows packing makes outside FlashAttention; the same tokens
    in one row under it)."""
    if getattr(args, "packing", False):
        rows = -(-args.max_tokens_per_batch // model_max_length)
        return rows, args.max_tokens_per_batch // rows
    return args.per_device_train_batch_size, model_max_length


def samples_or_tokens_per_step(args, world_size: int) -> int:
    """What one optimizer step reads, the figure a resume must match: samples, or tokens with --packing."""
    per_micro_batch = args.max_tokens_per_batch if args.packing else args.per_device_train_batch_size
    return world_size * args.gradient_accumulation_steps * per_micro_batch


def build_packer(dataset, budget: int, seed: int, one_row: bool, context=None) -> TokenBudgetPacker:
    """The token-budget packer over the dataset's exact sample lengths (every sample tokenized once, the
    work shared by the ranks of `context`)."""
    started = time.perf_counter()
    lengths = dataset.token_lengths(context)
    packer = TokenBudgetPacker(lengths, budget, seed, one_row=one_row, describe_sample=dataset.where_read)
    tokens, computed = packer.computed_tokens()
    logger.info("packing: %d samples (%d tokens) measured in %.1fs; micro-batches of up to %d tokens, %s, %.1f%% of "
                "computed tokens padding", len(lengths), tokens, time.perf_counter() - started, budget,
                "one row each" if one_row else f"rows of several samples up to {packer.row_tokens} tokens",
                100 * (1 - tokens / computed))
    return packer


def collator_for(args, default_collator, *, pad_token_id: int, packer: TokenBudgetPacker | None):
    """The packed collator (rows as the packer makes them, always one under FlashAttention) under --packing, else
    the padded one given."""
    if not args.packing:
        return default_collator
    return PackedCollator(pad_token_id, None if packer.one_row else packer.row_tokens)
