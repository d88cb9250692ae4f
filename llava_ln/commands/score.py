"""`llava-ln score`: score prediction files exactly as the official tools do; prints one JSON object.

The flags are llava_ln.scoring.dispatch.ScoreRequest (its docstring shows each benchmark's
result) plus --output_file. Ground-truth items without a prediction are a one-line error unless
--allow_missing, which scores them as wrong and counts them; extra, repeated and unparseable
predictions are counted in the output; unreadable files are one-line errors naming the file.
Rules: docs/scoring.md (§1 for what every benchmark shares).
"""
import json
from dataclasses import dataclass, field
from typing import Optional

from llava_ln.core.flags import parse_flags
from llava_ln.scoring.dispatch import ScoreRequest, score


@dataclass
class ScoreOutput:
    output_file: Optional[str] = field(default=None, metadata={"help": "Also write the JSON result to this file."})


def main(argv) -> int:
    request, output = parse_flags(
        argv, (ScoreRequest, ScoreOutput), prog="llava-ln score",
        description="Score prediction files as the official tools do; prints one JSON object.",
    )
    text = json.dumps(score(request), indent=2, allow_nan=False)
    if output.output_file:
        from llava_ln.core.atomic import atomic_path

        with atomic_path(output.output_file, ".json") as tmp:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
    print(text)
    return 0
