"""Which of the demo's steps are done, so that running the demo again continues where the last run stopped.

OUT/demo_state.json records each step's settings as it starts (a training stage's command line, an
evaluation's model and sets) and, for an evaluation, its scores once it ends. A step counts as done only
when its output is complete and was made with the same settings: a training stage when its run folder
holds the manifest (written last, after the final weights) and the recorded command line is this run's;
an evaluation when its scores are recorded with the same settings, the model's run id among them. A
folder that merely exists counts for nothing. A stage stopped part-way continues from its newest
checkpoint. Settings that differ from the recorded ones are refused in one line (--restart starts
over), so a rerun never silently mixes two recipes.
"""
import os
import shutil

from llava_ln.checkpoint.manifest import MANIFEST_NAME
from llava_ln.core.atomic import write_json_atomic
from llava_ln.core.bounded_json import read_json_object
from llava_ln.core.errors import LlavaLnError
from llava_ln.training.checkpointing import list_checkpoints

STATE_FILE = "demo_state.json"


class DemoState:
    """OUT/demo_state.json: {"steps": {step name: {"settings": ..., "scores": ...}}}."""

    def __init__(self, out: str):
        self.out = out
        self.path = os.path.join(out, STATE_FILE)
        self.steps: dict = {}
        if os.path.isfile(self.path):
            try:
                self.steps = read_json_object(self.path, "demo state")["steps"]
            except (ValueError, KeyError, TypeError):
                raise LlavaLnError(f"{self.path} is not a demo state file; remove it or pass --restart") from None

    def _save(self) -> None:
        write_json_atomic(self.path, {"steps": self.steps})

    def restart(self, folders: list[str], files: list[str] = ()) -> None:
        """Forget every step and remove the demo's own output folders and files (never anything else under OUT)."""
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        for path in files:
            if os.path.isfile(path):
                os.remove(path)
        self.steps = {}
        if os.path.exists(self.path):
            os.remove(self.path)

    # ---- training stages ----
    def training_plan(self, name: str, run_dir: str, argv: list[str]) -> str:
        """"done", "resume" (a checkpoint to continue from) or "start"; refuses another recipe's folder."""
        record = self.steps.get(name)
        if record is not None and record["settings"] != argv:
            raise LlavaLnError(f"{self.out} holds {name} of another recipe ({_first_difference(record['settings'], argv)}"
                               "); pass --restart to start the demo over, or choose another --out")
        if record is None and os.path.isdir(run_dir) and os.listdir(run_dir):
            raise LlavaLnError(f"{run_dir} holds a run this demo did not record; pass --restart to start the demo "
                               "over, or choose another --out")
        if record is not None and os.path.isfile(os.path.join(run_dir, MANIFEST_NAME)):
            return "done"
        return "resume" if newest_checkpoint(run_dir) else "start"

    def start_training(self, name: str, argv: list[str]) -> None:
        self.steps[name] = {"settings": argv}
        self._save()

    # ---- evaluations ----
    def scores(self, name: str, settings: dict) -> dict | None:
        """The recorded scores of an evaluation made with exactly these settings, else None."""
        record = self.steps.get(name)
        if record is None or record["settings"] != settings or "scores" not in record:
            return None
        return record["scores"]

    def finish_evaluation(self, name: str, settings: dict, scores: dict) -> None:
        self.steps[name] = {"settings": settings, "scores": scores}
        self._save()


def newest_checkpoint(run_dir: str) -> str | None:
    found = list_checkpoints(run_dir) if os.path.isdir(run_dir) else []
    return found[-1][1] if found else None


def _first_difference(recorded: list, wanted: list) -> str:
    """'--max_steps 300 now 20': the first flag whose value differs between two command lines."""
    def as_flags(argv):
        flags, key = {}, None
        for word in argv:
            if word.startswith("--"):
                key = word
                flags[key] = ""
            elif key is not None:
                flags[key] = word
        return flags

    old, new = as_flags(recorded), as_flags(wanted)
    for flag in dict.fromkeys([*old, *new]):
        if old.get(flag) != new.get(flag):
            return f"{flag} {old.get(flag, '(unset)') or '(set)'}, now {new.get(flag, '(unset)') or '(set)'}"
    return "the same flags in another order"
