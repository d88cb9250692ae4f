"""Installing llava-ln keeps the torch an environment already has, even one newer than any we tested.

pip itself is the judge: its dry-run report, run against a throwaway environment whose installed packages are
stand-ins (metadata only), with every index switched off, so nothing is downloaded. The same environment shows
that `make setup`'s torch step leaves an existing torch alone.
"""
import ast
import json
import os
import subprocess
import sys
import venv

import pytest
from packaging.requirements import Requirement

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEWER_TORCH = "2.15.0"


def core_requirements() -> list[str]:
    """setup.py's install_requires, read from the file itself (not from a possibly stale installed copy)."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no install_requires")


def a_satisfying_version(requirement: Requirement) -> str:
    """The lowest bound the requirement names (it satisfies the requirement), else any version."""
    lower = [s.version for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    return lower[0] if lower else "1.0"


def fake_installed(site_packages: str, name: str, version: str) -> None:
    """A package pip sees as installed: its dist-info metadata, plus an importable (empty) module."""
    info = os.path.join(site_packages, f"{name}-{version}.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    open(os.path.join(info, "RECORD"), "w").close()
    open(os.path.join(info, "INSTALLER"), "w").write("pip\n")
    if name == "torch":
        os.makedirs(os.path.join(site_packages, "torch"))
        open(os.path.join(site_packages, "torch", "__init__.py"), "w").close()


@pytest.fixture(scope="module")
def env_with_newer_torch(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("env"))
    venv.create(root, with_pip=False)  # pip runs from the test environment with --python (no ensurepip: fast)
    python = os.path.join(root, "bin", "python")
    site_packages = subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    for line in core_requirements():
        requirement = Requirement(line)
        version = NEWER_TORCH if requirement.name == "torch" else a_satisfying_version(requirement)
        fake_installed(site_packages, requirement.name, version)
    return python


def pip_dry_run(python: str, requirements: list[str], tmp_path) -> subprocess.CompletedProcess:
    """pip install --dry-run into `python`'s environment, no index, no config (this machine's pip config caps
    torch; a user's machine has no such cap)."""
    req_file, report = tmp_path / "requirements.txt", tmp_path / "report.json"
    req_file.write_text("\n".join(requirements) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--dry-run", "--no-index",
                           "--report", str(report), "-r", str(req_file)], env=env, capture_output=True, text=True)


def test_pip_keeps_a_newer_torch(env_with_newer_torch, tmp_path):
    result = pip_dry_run(env_with_newer_torch, core_requirements(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["install"] == [], f"pip would install {[i['metadata']['name'] for i in report['install']]}"
    assert f"({NEWER_TORCH})" in next(line for line in result.stdout.splitlines() if "torch" in line)


def test_an_upper_bound_would_have_replaced_it(env_with_newer_torch, tmp_path):
    """The check discriminates: the requirement the project used to have makes pip want another torch."""
    capped = [("torch>=2.4,<2.14" if Requirement(r).name == "torch" else r) for r in core_requirements()]
    result = pip_dry_run(env_with_newer_torch, capped, tmp_path)
    assert result.returncode != 0 and "torch" in result.stderr


def test_setup_step_keeps_an_existing_torch(env_with_newer_torch):
    out = subprocess.run([env_with_newer_torch, os.path.join(REPO, "scripts", "install_torch.py"), "--dry_run"],
                         capture_output=True, text=True, check=True).stdout
    assert f"keeping the installed torch {NEWER_TORCH}" in out


def test_setup_step_installs_torch_where_none_is(tmp_path):
    root = str(tmp_path / "bare")
    venv.create(root, with_pip=False)
    out = subprocess.run([os.path.join(root, "bin", "python"), os.path.join(REPO, "scripts", "install_torch.py"),
                          "--dry_run", "--version", "2.13.0"], capture_output=True, text=True, check=True,
                         env={**os.environ, "LLAVA_LN_TORCH_INDEX": ""}).stdout
    assert "no torch" in out and "torch==2.13.0" in out
