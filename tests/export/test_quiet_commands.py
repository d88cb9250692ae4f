"""merge and export import no DeepSpeed (they never use it; importing it prints its accelerator warning), and
load their models without progress bars unless --verbose."""
import json
import os
import subprocess
import sys

import pytest
from export_helpers import make_run

PROBE = """
import json, sys
from llava_ln.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "deepspeed": "deepspeed" in sys.modules}))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llm, tiny_vision):
    return make_run(str(tmp_path_factory.mktemp("quiet") / "run"), tiny_llm(), tiny_vision(), "ln")


def _merge(run: str, out: str, *extra) -> tuple[dict, str]:
    # As a user's shell starts it: without the variable an earlier command in this test process may have set.
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_DISABLE_PROGRESS_BARS"}
    done = subprocess.run([sys.executable, "-c", PROBE, "merge", "--checkpoint", run, "--output_dir", out, *extra],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_merge_imports_no_deepspeed_and_shows_no_loading_bars(run, tmp_path):
    result, stderr = _merge(run, str(tmp_path / "merged"))
    assert result == {"code": 0, "deepspeed": False}
    assert "Loading weights" not in stderr and "DeepSpeed" not in stderr
    _, stderr = _merge(run, str(tmp_path / "merged_verbose"), "--verbose")
    assert "Loading weights" in stderr
