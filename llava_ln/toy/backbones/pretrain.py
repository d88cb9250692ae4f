"""Rebuild the committed toy backbones: `python -m llava_ln.toy.backbones.pretrain [--out DIR] [--device cuda]`.

Trains, from --seed, the sentencepiece tokenizer and the LLaMA-architecture LLM on the
text-only corpus, then the CLIP vision tower contrastively (using that tokenizer for its
throwaway text encoder), and writes both as plain Hugging Face folders into
DIR/llm and DIR/vision (default: the package's assets/, which `llava-ln toy` copies).
PRETRAIN.json next to them records the settings and the quality checks of the run.
The committed weights came from the defaults below, on a 2-core CPU (about 21 minutes;
`--device cuda` runs the same recipe in a few minutes, with slightly different numbers).
"""
import argparse
import json
import os
import platform
import sys
import time

from llava_ln.toy.backbones.spec import ASSETS_DIR, LLM_CONFIG, LLM_FILES, VISION_CONFIG, VISION_FILES
from llava_ln.toy.layout import write_json

DEFAULTS = {"llm_documents": 50000, "llm_epochs": 1, "llm_batch_size": 32, "llm_lr": 3e-3,
            "vision_steps": 1200, "vision_batch_size": 128, "vision_lr": 2e-3, "eval_questions": 256}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m llava_ln.toy.backbones.pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=ASSETS_DIR, help="folder that receives llm/ and vision/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--tokenizer_from", default=None,
                        help="reuse a tokenizer folder made by an earlier run with the same seed (skips sentencepiece)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes rendering vision batches (default: 1 on cpu, up to 8 with a GPU)")
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name}", type=type(value), default=value, help=f"default {value}")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    import torch

    from llava_ln.toy.backbones.pretrain_llm import pretrain_llm
    from llava_ln.toy.backbones.pretrain_vision import pretrain_vision

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.workers is None:
        args.workers = 1 if args.device == "cpu" else min(8, max(1, (os.cpu_count() or 1) - 1))
    llm_dir, vision_dir = os.path.join(args.out, "llm"), os.path.join(args.out, "vision")
    started = time.time()
    llm = pretrain_llm(llm_dir, seed=args.seed, num_documents=args.llm_documents, epochs=args.llm_epochs,
                       batch_size=args.llm_batch_size, learning_rate=args.llm_lr, device=args.device,
                       tokenizer_dir=args.tokenizer_from, eval_questions=args.eval_questions)
    vision = pretrain_vision(vision_dir, args.tokenizer_from or llm_dir, seed=args.seed, steps=args.vision_steps,
                             batch_size=args.vision_batch_size, learning_rate=args.vision_lr, device=args.device,
                             workers=args.workers, eval_size=max(2, args.eval_questions))
    record = {
        "command": "python -m llava_ln.toy.backbones.pretrain " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "llm": {"config": LLM_CONFIG, "files": list(LLM_FILES), **llm},
        "vision": {"config": VISION_CONFIG, "files": list(VISION_FILES), **vision},
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
    }
    write_json(os.path.join(args.out, "PRETRAIN.json"), record, indent=2)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
