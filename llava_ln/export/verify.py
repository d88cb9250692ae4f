"""Verification: compare our probe outputs with the other side's, which runs in a fresh process.

Tolerances (both sides compute in float32 with the same weights, so differences are only
kernel-order rounding):
  * input ids: identical;
  * pixel values: max |diff| <= pixel_atol (1e-4);
  * image features (the tower + connector output, so a tuned tower is checked on its own): max |diff|
    <= atol + rtol * max |reference feature|;
  * logits: max |diff| <= atol + rtol * max |reference logit| (1e-4 + 1e-4 * scale by default), and
    finite on both sides (a NaN compares false with everything, so it would otherwise pass);
  * greedy answers: identical, except that a divergence is accepted at a near-tie, i.e.
    where the reference scores both candidate tokens within the logit tolerance (rounding
    may legitimately pick either; anything else is a real difference).

The other side runs fresh_child.py with `python -I`, which keeps PYTHONPATH and the script's
folder off sys.path, with the hub offline: the child sees only installed packages and the
written folder, so if the folder needed custom code or a download, the child fails and so does
the export.
"""
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file

from llava_ln.core.bounded_json import read_json_object
from llava_ln.core.errors import LlavaLnError

CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fresh_child.py")

class VerificationError(LlavaLnError):
    """The exported artefact does not reproduce our model: exit code 3, distinct from bad input."""

    exit_code = 3


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4
    rtol: float = 1e-4
    pixel_atol: float = 1e-4

    def logit_bound(self, reference: torch.Tensor) -> float:
        return self.atol + self.rtol * float(reference.abs().max()) if reference.numel() else self.atol


@dataclass
class ExportSettings:
    dtype: str = "auto"
    device: str = "cpu"
    verify: bool = True
    max_new_tokens: int = 8
    tolerance: Tolerance = field(default_factory=Tolerance)
    overwrite: bool = False
    bits: int = 16  # hf: 4 stores the LLM's block linears in 4 bits (export/quantized.py)


@dataclass
class ProbeComparison:
    name: str
    max_logit_diff: float
    logit_bound: float
    max_pixel_diff: float | None
    answers_equal: bool
    problem: str | None  # None when the probe passes
    max_feature_diff: float | None = None

    def line(self) -> str:
        pixels = "-" if self.max_pixel_diff is None else f"{self.max_pixel_diff:.2e}"
        features = "-" if self.max_feature_diff is None else f"{self.max_feature_diff:.2e}"
        verdict = "ok" if self.problem is None else f"FAIL: {self.problem}"
        return (f"  {self.name:<12} max|dlogit| {self.max_logit_diff:.2e} (bound {self.logit_bound:.2e})  "
                f"max|dpixel| {pixels}  max|dfeature| {features}  greedy {'same' if self.answers_equal else 'differs'}"
                f"  {verdict}")


def _first_difference(a: list, b: list) -> int | None:
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def _greedy_problem(reference, tokens: list, bound: float, tokenizer) -> str | None:
    index = _first_difference(reference.generated, tokens)
    if index is None:
        return None
    if index >= len(reference.generated) or index >= len(tokens):
        return f"answers differ in length ({len(reference.generated)} vs {len(tokens)} tokens)"
    row = reference.step_logits[index]
    ours, theirs = reference.generated[index], tokens[index]
    margin = float(row[ours] - row[theirs]) if theirs < row.shape[0] else float("inf")
    if margin <= bound:
        return None  # a near-tie: rounding may pick either token
    return (f"greedy answers diverge at token {index}: ours {tokenizer.convert_ids_to_tokens(ours)!r}, "
            f"theirs {tokenizer.convert_ids_to_tokens(theirs)!r} (our logit margin {margin:.3g} > {bound:.2g})")


def compare_probe(reference, other: dict, tolerance: Tolerance, tokenizer) -> ProbeComparison:
    """other: {"input_ids", "pixel_values" (or None), "logits", "generated"} from the other side."""
    name = reference.name
    ids = other["input_ids"].tolist()
    if ids != reference.input_ids.tolist():
        index = _first_difference(reference.input_ids.tolist(), ids)
        ours = reference.input_ids.tolist()[index:index + 3]
        return ProbeComparison(name, float("nan"), float("nan"), None, False,
                               f"prompt token ids differ from position {index}: ours {ours}, theirs "
                               f"{ids[index:index + 3]} (chat template or <image> expansion mismatch)")
    pixel_diff = None
    if reference.pixel_values is not None:
        theirs = other.get("pixel_values")
        if theirs is None or tuple(theirs.shape) != tuple(reference.pixel_values.shape):
            return ProbeComparison(name, float("nan"), float("nan"), None, False,
                                   f"pixel_values shape {None if theirs is None else tuple(theirs.shape)} "
                                   f"!= ours {tuple(reference.pixel_values.shape)}")
        pixel_diff = float((theirs.float() - reference.pixel_values.float()).abs().max())
    feature_diff, feature_problem = _feature_difference(reference, other.get("image_features"), tolerance)
    logits = other["logits"].float()[:, : reference.logits.shape[1]]
    logit_diff = float((logits - reference.logits).abs().max())
    bound = tolerance.logit_bound(reference.logits)
    tokens = list(other["generated"])
    problem = None
    if pixel_diff is not None and pixel_diff > tolerance.pixel_atol:
        problem = (f"image preprocessing differs (max |pixel diff| {pixel_diff:.3g} > {tolerance.pixel_atol:g}); "
                   "the exported image processor does not reproduce llava-ln's")
    elif feature_problem is not None:
        problem = feature_problem
    elif not (math.isfinite(logit_diff) and math.isfinite(bound)):
        side = "ours" if not math.isfinite(bound) else "the export's"
        problem = f"{side} logits are not finite (NaN or infinity): nothing to compare, the weights are broken"
    elif logit_diff > bound:
        problem = f"logits differ by up to {logit_diff:.3g} (> {bound:.3g})"
    else:
        problem = _greedy_problem(reference, tokens, bound, tokenizer)
    return ProbeComparison(name, logit_diff, bound, pixel_diff, tokens == reference.generated, problem, feature_diff)


def _feature_difference(reference, theirs, tolerance: Tolerance) -> tuple:
    """(max |diff| of the image features or None, the problem or None)."""
    ours = getattr(reference, "image_features", None)
    if ours is None:
        return None, None
    if theirs is None or tuple(theirs.shape) != tuple(ours.shape):
        return None, (f"image features of shape {None if theirs is None else tuple(theirs.shape)} != ours "
                      f"{tuple(ours.shape)}")
    diff = float((theirs.float() - ours).abs().max())
    bound = tolerance.logit_bound(ours)
    if not math.isfinite(diff) or diff > bound:
        return diff, (f"image features (vision tower + connector) differ by up to {diff:.3g} (> {bound:.3g}); "
                      "the written tower or connector is not the model's")
    return diff, None


def as_other_side(outputs: list) -> list:
    """Our ProbeOutputs in the shape compare_probe takes for the other side (e.g. a model after a LoRA fold)."""
    return [{"input_ids": o.input_ids, "pixel_values": o.pixel_values, "logits": o.logits, "generated": o.generated,
             "image_features": o.image_features} for o in outputs]


def compare_all(references: list, others: list, tolerance: Tolerance, tokenizer, what: str, log=print) -> list:
    """Compare and print a table; raise VerificationError naming the first failing probe."""
    results = [compare_probe(ref, other, tolerance, tokenizer) for ref, other in zip(references, others)]
    log(f"verification: {what}")
    for result in results:
        log(result.line())
    failed = [r for r in results if r.problem]
    if failed:
        raise VerificationError(f"verification failed ({what}): probe {failed[0].name}: {failed[0].problem}")
    return results


# ---- the other side, in a fresh process ----

def run_child(spec: dict, work_dir: str, what: str, timeout_s: int = 3600) -> tuple:
    """Run fresh_child.py on spec (its "output" key is set here); returns (tensors, summary)."""
    spec = dict(spec, output=os.path.join(work_dir, "child_output"))
    spec_path = os.path.join(work_dir, "child_spec.json")
    with open(spec_path, "w", encoding="utf-8") as handle:
        json.dump(spec, handle)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               TOKENIZERS_PARALLELISM="false")
    try:
        done = subprocess.run([sys.executable, "-I", CHILD_SCRIPT, spec_path], env=env,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise VerificationError(f"{what}: the fresh process did not finish within {timeout_s} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        sys.stderr.write("\n".join(lines[-25:]) + "\n")
        last = lines[-1] if lines else f"exit code {done.returncode}"
        raise VerificationError(f"{what}: plain transformers failed on the exported folder in a fresh process: {last}")
    summary = read_json_object(spec["output"] + ".json", "the fresh process's summary")
    if summary.get("custom_modules_imported"):
        raise VerificationError(f"{what}: the fresh process imported llava-ln code: {summary['custom_modules_imported']}")
    return load_file(spec["output"] + ".safetensors"), summary


def probe_results(tensors: dict, summary: dict, names: list) -> list:
    """Reshape the child's flat outputs into one dict per probe (the layout compare_probe takes)."""
    return [{"input_ids": tensors[f"{n}.input_ids"], "pixel_values": tensors.get(f"{n}.pixel_values"),
             "logits": tensors[f"{n}.logits"], "generated": summary["generated"][n],
             "image_features": tensors.get(f"{n}.image_features")} for n in names]
