"""`llava-ln merge`: fold a run's trained tensors (LoRA included) into one standalone checkpoint folder.

    llava-ln merge --checkpoint RUN_OR_CHECKPOINT --output_dir OUT [--dtype auto|float32|bfloat16|float16]

The folder layout is described in llava_ln/export/merged_io.py; llava_ln.checkpoint.loading
.load_checkpoint loads it, and with the native connector it is also a plain
LlavaForConditionalGeneration folder. ZeRO shard-only checkpoints are consolidated here.
"""
from dataclasses import dataclass, field

from llava_ln.core.flags import parse_flags
from llava_ln.export.source import BaseOverrides


@dataclass
class MergeArguments:
    checkpoint: str = field(default=None, metadata={"help": "Run folder or OUTPUT_DIR/checkpoint-<step> to merge."})
    output_dir: str = field(default=None, metadata={"help": "Folder to write the merged checkpoint into."})
    dtype: str = field(default="auto", metadata={"help": "auto (the base LLM's dtype) | float32 | bfloat16 | float16."})
    device: str = field(default="cpu", metadata={"help": "Device for loading and the LoRA-fold check (cpu, cuda)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty --output_dir."})


def main(argv) -> int:
    from llava_ln.core.errors import LlavaLnError
    from llava_ln.export.merge import merge_checkpoint

    args, overrides = parse_flags(argv, (MergeArguments, BaseOverrides), prog="llava-ln merge",
                                  description="Fold trained tensors into one standalone checkpoint folder.")
    if not args.checkpoint:
        raise LlavaLnError("llava-ln merge: --checkpoint is required")
    result = merge_checkpoint(args.checkpoint, args.output_dir, overrides, dtype=args.dtype,
                              overwrite=args.overwrite, device=args.device)
    print(f"merged {args.checkpoint} -> {result.output_dir} ({str(result.dtype).replace('torch.', '')}"
          f"{', LoRA folded' if result.folded_lora else ''})")
    if result.non_native:
        print(f"  {len(result.non_native)} tensor(s) transformers' LlavaForConditionalGeneration cannot hold are in "
              f"non_native.safetensors (e.g. {result.non_native[0]}); load this folder with "
              "llava_ln.checkpoint.loading.load_checkpoint")
    return 0
