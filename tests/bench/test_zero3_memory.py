"""bench/zero3_memory.py at CI size: under 2-rank ZeRO-3 each rank holds about half the model, not all of it.

A 100M-parameter LLaMA (hidden 512, so 32 blocks: one block, which ZeRO-3 keeps gathered, is a
similar share of the model as in the 600M run docs/training.md reports). The ratio that matters
(what the model adds to a rank's peak, over what it adds to one process) is asserted loosely: a whole
model per rank gives about 1, an exact half 0.5; the 600M measurement is in docs/training.md.
"""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_two_rank_zero3_adds_about_half_of_what_one_process_adds():
    done = subprocess.run([sys.executable, os.path.join(REPO, "bench", "zero3_memory.py"), "--params", "100e6",
                           "--hidden", "512", "--steps", "2"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ratio"] <= 0.65, result
    # The loading itself: right after the build each rank holds its half of the model (plus a little).
    runs, half = result["runs"], result["model_gb_fp32"] / 2
    added_at_build = max(runs["zero3"]["after_build_gb"]) - max(runs["zero3_toy"]["after_build_gb"])
    assert added_at_build <= 1.2 * half, result
