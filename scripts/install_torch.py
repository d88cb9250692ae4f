"""Install PyTorch into this Python environment only when it has none (`make setup` runs this first).

An environment that already has torch keeps it, whatever its version: llava-ln's requirement has no upper
bound, so neither this step nor `pip install -e .` replaces a user's newer (or CUDA) build.

Without torch, plain `pip install torch` on Linux resolves to the CUDA build (several GB, useless on a machine
without an NVIDIA driver). So on Linux without an NVIDIA driver, PyTorch's CPU wheel index is added when it can
be reached; pip then prefers the `+cpu` build of the pinned release. Elsewhere (macOS, Windows, a Linux box
with a GPU) pip's default build is the right one. pip runs with its progress bars, so a long download is
visible rather than silent.

    python scripts/install_torch.py [--version 2.13.0] [--dry_run]

Environment: LLAVA_LN_TORCH_SPEC overrides the requirement (e.g. "torch==2.11.0"), LLAVA_LN_TORCH_INDEX the
CPU index URL ("" disables it).
"""
import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import urllib.request

# The release the project's CI and demo numbers were measured with (a CPU build of it is what the
# project's own machines install); any torch >= 2.4 that is already present is kept instead.
DEFAULT_VERSION = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def installed_torch_version() -> str | None:
    """The version of the torch this interpreter would import, without importing it (fast, no CUDA init)."""
    if importlib.util.find_spec("torch") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:  # importable but not installed by pip (a source build on PYTHONPATH)
        return "unknown (not installed by pip)"


def wants_cpu_index() -> bool:
    """Linux without an NVIDIA driver: the default (CUDA) wheel would be the wrong, multi-GB build."""
    return platform.system() == "Linux" and shutil.which("nvidia-smi") is None and not os.path.exists(
        "/proc/driver/nvidia/version")


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the index answers at all (offline and registry-only machines skip it instead of retrying)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except Exception:  # any failure (DNS, refused, proxy, TLS) just means: do not use this index
        return False


def install_command(version: str) -> list[str]:
    spec = os.environ.get("LLAVA_LN_TORCH_SPEC") or f"torch=={version}"
    command = [sys.executable, "-m", "pip", "install", "--progress-bar", "on", spec]
    index = os.environ.get("LLAVA_LN_TORCH_INDEX", CPU_INDEX)
    if index and wants_cpu_index() and reachable(index + "/torch/"):
        command += ["--extra-index-url", index]
    return command


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=DEFAULT_VERSION, help="torch release to install when none is present")
    parser.add_argument("--dry_run", action="store_true", help="say what would happen, install nothing")
    args = parser.parse_args(argv)
    present = installed_torch_version()
    if present is not None:
        print(f"[setup] keeping the installed torch {present}", flush=True)
        return 0
    command = install_command(args.version)
    print(f"[setup] no torch in {sys.prefix}: {' '.join(command[3:])}", flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
