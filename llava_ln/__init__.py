"""llava-ln: build LLaVA-style multimodal LLMs from any Hugging Face LLM and tune only what matters.

Packages and top-level modules, bottom to top (each imports only from those above it in this list;
LAYERS below is the order as data, which tests/test_layering.py enforces and checks this list against):
  core/         errors, flag parsing, atomic writes, shared constants, process groups, child processes
  model/        compose LLM + vision tower + connector into a native LlavaForConditionalGeneration
  kernels/      memory-lean norm / MLP autograd functions and the fused LM head + loss
  tuning/       the --tune_mode switch: apply_tune_mode returns the TuningPlan everything else reads
  data/         LLaVA-format records, conversation templates, exact label masks, images, batches
  checkpoint/   run, merged and ZeRO checkpoint folders, checksums, ZeRO-3 partitions; load_checkpoint
  training/     the loop, strategies, checkpoints and resume, reporting; zero/ (DeepSpeed), memory/, guards/
  scoring/      the official scoring rules of VQAv2, MME, POPE and COCO / Flickr30k captioning
  evaluation/   benchmark readers and writers, batched generation, rank split, restartable answers
  export/       merge, transformers-native export with verification, PEFT LN-tuning adapter
  toy/          the embedded toy world and its tiny pretrained backbones
  experiments/  the demo (the whole pipeline on the toy world), compare, analyze and the paper's claims
  train         training's entry point: stage 1 / stage 2 under deepspeed, torchrun or python
  commands/     the `llava-ln` subcommands
  cli           the console script `llava-ln`
"""

__version__ = "0.1.0"

# The layers, bottom to top: the packages above, then the entry points (train.py sits below commands/,
# whose demo calls it, and cli.py above everything).
LAYERS = ("core", "model", "kernels", "tuning", "data", "checkpoint", "training", "scoring", "evaluation", "export",
          "toy", "experiments", "train", "commands", "cli")


def _quiet_bitsandbytes_cpu_notice() -> None:
    """PEFT imports bitsandbytes whenever it is installed (the [quant] extra), and on AVX512-BF16 CPUs
    bitsandbytes then warns that an optional hub kernel package is absent. Its own fallback is what
    llava-ln runs and tests, so that one notice would only be noise on every command's stderr."""
    import logging

    notice = "Failed to load CPU gemm_4bit_forward from kernels-community"
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda record: notice not in str(record.msg))


_quiet_bitsandbytes_cpu_notice()
