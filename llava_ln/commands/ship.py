"""Commands for shipping a run: `llava-ln merge` and `llava-ln export`.

merge: fold a run's trained tensors (LoRA included) into one standalone checkpoint folder
    llava-ln merge --checkpoint RUN_OR_CHECKPOINT --output_dir OUT [--dtype auto|float32|bfloat16|float16]
The folder layout is llava_ln/checkpoint/merged_folder.py's; llava_ln.checkpoint.loading.load_checkpoint
loads it, and with the native connector it is also a plain LlavaForConditionalGeneration folder.
ZeRO shard-only checkpoints are consolidated on the way.

export: the transformers-native LLaVA format, original LLaVA's layout, or a PEFT adapter for the base LLM
    llava-ln export --checkpoint RUN_OR_CHECKPOINT --format hf --output_dir OUT [--bits 4]
    llava-ln export --checkpoint RUN_OR_CHECKPOINT --format llava --output_dir OUT
    llava-ln export --checkpoint LN_RUN --format peft-ln --output_dir OUT
    llava-ln export --checkpoint LORA_RUN --format peft-lora --output_dir OUT
Each verifies the written folder (hf and the PEFT formats in a fresh process with plain transformers
and PEFT; llava by reading it back as an original LLaVA checkpoint) and exits with status 3 when it
does not reproduce our model; refusals (a connector or image mode a format cannot express, a
non-norm run for peft-ln, a non-LoRA run for peft-lora) exit with status 2.
"""
from dataclasses import dataclass, field

from llava_ln.checkpoint.loading import BaseOverrides
from llava_ln.core.flags import parse_flags


@dataclass
class MergeArguments:
    checkpoint: str = field(default=None, metadata={"help": "Run folder or OUTPUT_DIR/checkpoint-<step> to merge."})
    output_dir: str = field(default=None, metadata={"help": "Folder to write the merged checkpoint into."})
    dtype: str = field(default="auto", metadata={"help": "auto (the base LLM's dtype) | float32 | bfloat16 | float16."})
    device: str = field(default="cpu", metadata={"help": "Device for loading and the LoRA-fold check (cpu, cuda)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty --output_dir."})


def merge_main(argv) -> int:
    from llava_ln.core.errors import LlavaLnError
    from llava_ln.export.merge import merge_checkpoint
    from llava_ln.export.output_folder import owned_output

    args, overrides = parse_flags(argv, (MergeArguments, BaseOverrides), prog="llava-ln merge",
                                  description="Fold trained tensors into one standalone checkpoint folder.")
    if not args.checkpoint:
        raise LlavaLnError("llava-ln merge: --checkpoint is required")
    with owned_output(args.output_dir, "merge", args.checkpoint, overrides, args.overwrite):
        result = merge_checkpoint(args.checkpoint, args.output_dir, overrides, dtype=args.dtype,
                                  overwrite=args.overwrite, device=args.device)
    print(f"merged {args.checkpoint} -> {result.output_dir} ({str(result.dtype).replace('torch.', '')}"
          f"{', LoRA folded' if result.folded_lora else ''})")
    if result.non_native:
        print(f"  {len(result.non_native)} tensor(s) transformers' LlavaForConditionalGeneration cannot hold are in "
              f"non_native.safetensors (e.g. {result.non_native[0]}); load this folder with "
              "llava_ln.checkpoint.loading.load_checkpoint")
    return 0


FORMATS = ("hf", "llava", "peft-ln", "peft-lora")


@dataclass
class ExportArguments:
    checkpoint: str = field(default=None, metadata={"help": "Run folder, OUTPUT_DIR/checkpoint-<step> or merged folder."})
    format: str = field(default="hf", metadata={"help": "hf (LlavaForConditionalGeneration + LlavaProcessor) | llava "
                                                      "(original LLaVA layout) | peft-ln | peft-lora."})
    output_dir: str = field(default=None, metadata={"help": "Folder to write the export into."})
    dtype: str = field(default="auto", metadata={"help": "hf weights: auto (the base LLM's dtype) | float32 | bfloat16 | "
                                                         "float16."})
    device: str = field(default="cpu", metadata={"help": "Device for loading and verification (cpu, cuda)."})
    verify: bool = field(default=True, metadata={"help": "Load the export in a fresh process and compare outputs."})
    max_new_tokens: int = field(default=8, metadata={"help": "Greedy tokens compared per probe in verification."})
    atol: float = field(default=1e-4, metadata={"help": "Verification: absolute logit tolerance."})
    rtol: float = field(default=1e-4, metadata={"help": "Verification: logit tolerance relative to the largest logit."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty --output_dir."})
    bits: int = field(default=16, metadata={"help": "hf: 4 stores the LLM's block linears in 4 bits (transformers' "
                                                   "bitsandbytes config; the run's 4-bit type, else nf4 + double "
                                                   "quant); 16: unquantized, also for runs trained with --bits."})


def export_main(argv) -> int:
    from llava_ln.core.errors import LlavaLnError
    from llava_ln.export.verify import ExportSettings, Tolerance

    args, overrides = parse_flags(argv, (ExportArguments, BaseOverrides), prog="llava-ln export",
                                  description="Export to the transformers-native LLaVA format or a PEFT adapter.")
    if args.format not in FORMATS:
        raise LlavaLnError(f"llava-ln export: --format {args.format!r} is not one of {', '.join(FORMATS)}")
    if not args.checkpoint:
        raise LlavaLnError("llava-ln export: --checkpoint is required")
    settings = ExportSettings(dtype=args.dtype, device=args.device, verify=args.verify,
                              max_new_tokens=args.max_new_tokens, overwrite=args.overwrite,
                              tolerance=Tolerance(atol=args.atol, rtol=args.rtol), bits=args.bits)
    if args.bits != 16 and args.format != "hf":
        raise LlavaLnError(f"llava-ln export: --bits applies to --format hf only, not {args.format}")
    from llava_ln.export.output_folder import owned_output

    with owned_output(args.output_dir, "export", args.checkpoint, overrides, args.overwrite):
        return _export(args, overrides, settings)


def _export(args, overrides, settings) -> int:
    if args.format == "peft-lora":
        from llava_ln.export.peft_lora import export_peft_lora

        export_peft_lora(args.checkpoint, args.output_dir, overrides, settings)
        print(f"exported {args.checkpoint} -> {args.output_dir} (PEFT LoRA for the base LLM, "
              f"{'verified' if args.verify else 'not verified'})")
        return 0
    if args.format == "llava":
        from llava_ln.export.llava_layout import export_llava

        export_llava(args.checkpoint, args.output_dir, overrides, settings)
        print(f"exported {args.checkpoint} -> {args.output_dir} (original LLaVA layout, "
              f"{'verified' if args.verify else 'not verified'})")
        return 0
    if args.format == "peft-ln":
        from llava_ln.export.peft_ln import export_peft_ln

        result = export_peft_ln(args.checkpoint, args.output_dir, overrides, settings)
        print(f"exported {args.checkpoint} -> {result.output_dir} (PEFT LN tuning, "
              f"{'verified' if result.verified else 'not verified'})")
        return 0
    from llava_ln.export.hf import export_hf

    result = export_hf(args.checkpoint, args.output_dir, overrides, settings)
    state = (f"verified with transformers {result.transformers_version}" if result.verified else "not verified")
    quantized = f", block linears {result.quantization.describe()}" if result.quantization else ""
    print(f"exported {args.checkpoint} -> {result.output_dir} (LlavaForConditionalGeneration + LlavaProcessor, "
          f"{str(result.dtype).replace('torch.', '')}{quantized}, {state})")
    return 0
