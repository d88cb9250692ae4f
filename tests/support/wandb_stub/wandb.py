"""A stand-in for the wandb package (not installed in tests): records what a run reports, offline.

LLaVA's scripts pass --report_to wandb; the ported-script tests keep that flag as it is and put this
folder first on the path. Each call appends one JSON line to $WANDB_STUB_LOG.
"""
import json
import os


def _record(kind: str, **fields) -> None:
    path = os.environ.get("WANDB_STUB_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"call": kind, **fields}, default=str) + "\n")


class _Run:
    def log(self, values: dict, step: int | None = None) -> None:
        _record("log", step=step, keys=sorted(values))

    def finish(self) -> None:
        _record("finish")


def init(name=None, config=None, dir=None, **kwargs):
    _record("init", name=name, dir=dir)
    return _Run()
