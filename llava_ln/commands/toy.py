"""`llava-ln toy`: write the toy world (images, training data, eval sets, tiny backbones) into --out."""
import json
import time
from dataclasses import dataclass, field

from llava_ln.core.flags import parse_flags


@dataclass
class ToyArguments:
    out: str = field(default="toy_world", metadata={"help": "Folder to write the world into (new or empty, "
                                                            "or an earlier toy world, which is replaced)."})
    seed: int = field(default=0, metadata={"help": "Same seed, byte-identical files."})
    scale: float = field(default=1.0, metadata={"help": "Multiply every set's size (0.05 gives a tiny world for tests)."})
    backbones: bool = field(default=True, metadata={"help": "Copy the pretrained toy LLM and vision tower into "
                                                            "--out/llm and --out/vision."})


def main(argv) -> int:
    from llava_ln.toy.generate import write_toy_world

    (args,) = parse_flags(argv, (ToyArguments,), prog="llava-ln toy",
                          description="Write the synthetic toy world deterministically from --seed.")
    started = time.time()
    manifest = write_toy_world(args.out, seed=args.seed, scale=args.scale, backbones=args.backbones)
    summary = {"out": args.out, "seconds": round(time.time() - started, 1), **manifest["counts"]}
    print(json.dumps(summary))
    return 0
