"""Run a verification script in a fresh, isolated Python process and read back what it wrote.

`python -I` keeps the script's own folder and PYTHONPATH off sys.path, and the hub is set
offline, so the child sees only installed packages and the exported folder: if the folder
needed custom code or a download, the child fails and so does the export.
"""
import json
import os
import subprocess
import sys

from safetensors.torch import load_file

from llava_ln.export.compare import VerificationError

HERE = os.path.dirname(os.path.abspath(__file__))


def run_child(script: str, spec: dict, work_dir: str, what: str, timeout_s: int = 3600) -> tuple:
    """Run HERE/script with spec (its "output" key is set here); returns (tensors, summary)."""
    spec = dict(spec, output=os.path.join(work_dir, "child_output"))
    spec_path = os.path.join(work_dir, "child_spec.json")
    with open(spec_path, "w", encoding="utf-8") as handle:
        json.dump(spec, handle)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               TOKENIZERS_PARALLELISM="false")
    try:
        done = subprocess.run([sys.executable, "-I", os.path.join(HERE, script), spec_path], env=env,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise VerificationError(f"{what}: the fresh process did not finish within {timeout_s} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        sys.stderr.write("\n".join(lines[-25:]) + "\n")
        last = lines[-1] if lines else f"exit code {done.returncode}"
        raise VerificationError(f"{what}: plain transformers failed on the exported folder in a fresh process: {last}")
    with open(spec["output"] + ".json", encoding="utf-8") as handle:
        summary = json.load(handle)
    if summary.get("custom_modules_imported"):
        raise VerificationError(f"{what}: the fresh process imported llava-ln code: {summary['custom_modules_imported']}")
    return load_file(spec["output"] + ".safetensors"), summary


def probe_results(tensors: dict, summary: dict, names: list) -> list:
    """Reshape the child's flat outputs into one dict per probe (the layout compare_probe takes)."""
    return [{"input_ids": tensors[f"{n}.input_ids"], "pixel_values": tensors.get(f"{n}.pixel_values"),
             "logits": tensors[f"{n}.logits"], "generated": summary["generated"][n]} for n in names]
