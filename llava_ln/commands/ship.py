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
from llava_ln.commands.args import EXPORT_FLAGS, MERGE_FLAGS
from llava_ln.core.flags import parse_command_flags


def merge_main(argv) -> int:
    from llava_ln.export.merge import merge_checkpoint
    from llava_ln.export.output_folder import owned_output

    args, overrides = parse_command_flags(argv, MERGE_FLAGS)
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


def export_main(argv) -> int:
    from llava_ln.export.verify import ExportSettings, Tolerance

    args, overrides = parse_command_flags(argv, EXPORT_FLAGS)
    settings = ExportSettings(dtype=args.dtype, device=args.device, verify=args.verify,
                              max_new_tokens=args.max_new_tokens, overwrite=args.overwrite,
                              tolerance=Tolerance(atol=args.atol, rtol=args.rtol), bits=args.bits)
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
