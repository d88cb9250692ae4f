"""Record how gpu_suite.sh's wheel install went (WORK/install.json) and whether the installed packages import.

    python -m bench.gpu_suite_install WORK/install.json PIP_STATUS START_EPOCH WHEEL,NAMES,... EXTRA_DIR

PIP_STATUS is "0", pip's exit code, or "missing" when WHEELS held no wheel. The import tries
are reported, never fatal: the suite's steps say what works. liger-kernel and bitsandbytes are
tried from EXTRA_DIR, the folder the steps do not see.
"""
import importlib
import importlib.metadata
import json
import sys
import time


def main(argv: list[str]) -> int:
    path, status, started, names, extra_dir = argv
    record = {"status": "passed" if status == "0" else "failed", "seconds": round(time.time() - float(started), 1),
              "wheels": [n for n in names.split(",") if n], "imports": {}}
    if status != "0":
        record["reason"] = "no wheels in WHEELS" if status == "missing" else f"pip exit {status} (logs/install.log)"
    sys.path.insert(0, extra_dir)
    for module, dist in (("deepspeed", "deepspeed"), ("pydantic", "pydantic"), ("liger_kernel", "liger-kernel"),
                         ("bitsandbytes", "bitsandbytes")):
        try:
            importlib.import_module(module)
            record["imports"][module] = importlib.metadata.version(dist)
        except Exception as err:  # any import failure is a finding to report, not a reason to stop
            record["imports"][module] = f"error: {type(err).__name__}: {str(err)[:200]}"
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
