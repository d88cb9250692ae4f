"""Two nodes x one rank on this machine, started the way a cluster starts them: scripts/multinode_finetune.sh.

A two-entry hostfile (localhost and 127.0.0.1: two node names for one machine) and one rank per node:
  * no ssh (DeepSpeed's --no_ssh mode, what a scheduler such as SLURM uses): the script runs twice at
    once, NODE_RANK 0 and 1; the two nodes resume a one-process checkpoint (run with the script's own
    flags, the global batch kept through accumulation) from the shared OUTPUT_DIR and land on its weights;
    an OUTPUT_DIR that the other node cannot see stops both nodes with one line;
  * ssh (the launcher's default: pdsh from node 0 over passwordless ssh): with a private sshd on a free
    port, where sshd and pdsh are installed (skipped otherwise); the run matches the one-process run.
"""
import os
import shlex
import subprocess
import sys

import pytest
import torch
from launch_helpers import REPO
from train_helpers import read_log, stage1_run, train_world, trained

from llava_ln.core.processes import end_group, free_port, run_in_group, start_in_group
from llava_ln.train import main

pytestmark = pytest.mark.slow

# Overrides of the LLaVA recipe that finetune.sh passes: a CPU-sized run with a checkpoint at mid-run.
SMALL = ["--max_steps", "4", "--save_steps", "2", "--save_total_limit", "2", "--lr_scheduler_type", "constant",
         "--warmup_ratio", "0", "--learning_rate", "1e-3", "--norm_lr", "2e-2", "--gradient_checkpointing", "false",
         "--dataloader_num_workers", "0", "--model_max_length", "512", "--seed", "7", "--logging_steps", "1",
         "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def _script_env(world: dict, output: str, **extra) -> dict:
    # The scripts call `deepspeed` from PATH: this interpreter's.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return {**os.environ, "PATH": path, "TUNE_MODE": "ln", "MODEL": world["llm"], "VISION_TOWER": world["vision"],
            "ADAPTER": stage1_run(world), "DATA": world["instruct"], "IMAGES": os.path.dirname(world["instruct"]),
            "OUTPUT": output, "ZERO": os.path.join(REPO, "zero_configs", "zero3.json"), "GLOBAL_BATCH": "4",
            "PER_DEVICE": "2", "NUM_GPUS": "1", **extra}


def _two_nodes(world: dict, root: str, outputs: tuple, extra: list[str]) -> list[subprocess.CompletedProcess]:
    """Start node 0 and node 1 at once (one rank each) and wait for both."""
    hostfile = os.path.join(root, "hostfile")
    with open(hostfile, "w", encoding="utf-8") as handle:
        handle.write("localhost slots=1\n127.0.0.1 slots=1\n")  # two distinct names for the same machine
    port = str(free_port())
    nodes = [start_in_group(["bash", os.path.join(REPO, "scripts", "multinode_finetune.sh"), *SMALL, *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_script_env(world, outputs[rank], HOSTFILE=hostfile, NUM_NODES="2",
                                            NODE_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for rank in (0, 1)]
    done = []
    try:
        for node in nodes:
            stdout, _ = node.communicate(timeout=600)
            done.append(subprocess.CompletedProcess(node.args, node.returncode, stdout))
    finally:
        for node in nodes:  # each node's launcher and rank, however the wait ended
            end_group(node)
    return done


def _one_process_argv(world: dict, output: str) -> list[str]:
    """The script's own command on one node with one GPU (accumulation doubles), without DeepSpeed."""
    printed = subprocess.run(["bash", os.path.join(REPO, "scripts", "finetune.sh"), *SMALL], cwd=REPO, text=True,
                             capture_output=True, env=_script_env(world, output, DRY_RUN="1"), timeout=60, check=True)
    argv = shlex.split(printed.stdout)
    argv = argv[argv.index("llava_ln/train.py") + 1:]
    index = argv.index("--deepspeed")
    return argv[:index] + argv[index + 2:]


def _assert_close(run: str, ref: str, steps, atol: float) -> None:
    run_log, ref_log = read_log(run), read_log(ref)
    for step in steps:
        assert run_log[step]["loss"] == pytest.approx(ref_log[step]["loss"], rel=1e-4), step
    got, want = trained(run), trained(ref)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=atol, rtol=1e-4, msg=name)


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory) -> str:
    """One process, no DeepSpeed, the script's own flags (accumulation 2 keeps the global batch of 4)."""
    out = str(tmp_path_factory.mktemp("multinode") / "one_process")
    assert main(_one_process_argv(world, out)) == 0
    return out


def test_two_nodes_resume_a_one_process_checkpoint_exactly(world, reference, tmp_path):
    # ZeRO-3 on two nodes continues the one-process run from its step-2 checkpoint on the shared OUTPUT_DIR.
    out = str(tmp_path / "two_nodes")
    for node in _two_nodes(world, str(tmp_path), (out, out),
                           ["--resume_from_checkpoint", os.path.join(reference, "checkpoint-2")]):
        assert node.returncode == 0, node.stdout[-5000:]
    # Two ranks sum the two micro-batches in another order than one process with accumulation 2.
    _assert_close(out, reference, steps=(3, 4), atol=2e-5)


def _ssh_to_localhost(root: str):
    """A private sshd on a free port and pdsh's ssh options for it, or None where sshd or pdsh is missing."""
    import shutil

    if not (shutil.which("pdsh") and os.path.exists("/usr/sbin/sshd") and shutil.which("ssh-keygen")):
        return None
    keys = os.path.join(root, "ssh")
    os.makedirs(keys)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(keys, name)], check=True)
    shutil.copy(os.path.join(keys, "client_key.pub"), os.path.join(keys, "authorized_keys"))
    port = free_port()
    with open(os.path.join(keys, "sshd_config"), "w", encoding="utf-8") as handle:
        handle.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys}/host_key\n"
                     f"AuthorizedKeysFile {keys}/authorized_keys\nPasswordAuthentication no\nStrictModes no\n"
                     f"UsePAM no\nPidFile {keys}/sshd.pid\n")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    daemon = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", os.path.join(keys, "sshd_config")])
    options = f"-i {keys}/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    return daemon, port, options


def test_two_nodes_through_ssh_and_pdsh(world, reference, tmp_path):
    """DeepSpeed's default multi-node launch (pdsh over ssh from node 0), where this machine can run an sshd.

    --no_ssh_check: the launcher's own reachability check runs plain `ssh` with the default identity,
    and the test's key is not that (pdsh gets it through PDSH_SSH_ARGS_APPEND)."""
    ssh = _ssh_to_localhost(str(tmp_path))
    if ssh is None:
        pytest.skip("needs pdsh and openssh-server (sshd) on this machine")
    daemon, port, options = ssh
    try:
        hostfile = os.path.join(str(tmp_path), "hostfile")
        with open(hostfile, "w", encoding="utf-8") as handle:
            handle.write("localhost slots=1\n127.0.0.1 slots=1\n")
        out = str(tmp_path / "over_ssh")
        env = _script_env(world, out, HOSTFILE=hostfile, NUM_NODES="2", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()), LAUNCHER_ARGS=f"--ssh_port {port} --no_ssh_check",
                          PDSH_SSH_ARGS_APPEND=options)
        done = run_in_group(["bash", os.path.join(REPO, "scripts", "multinode_finetune.sh"), *SMALL], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
        assert "pdsh" in done.stdout + done.stderr
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    _assert_close(out, reference, steps=(1, 2, 3, 4), atol=2e-5)


def test_an_output_dir_that_one_node_cannot_see_stops_every_node(world, tmp_path):
    root = str(tmp_path)
    # Each node gets its own folder: what node-local disks look like to a multi-node run.
    nodes = _two_nodes(world, root, (os.path.join(root, "node0"), os.path.join(root, "node1")), [])
    for node in nodes:
        assert node.returncode != 0
    assert any("is not shared storage" in node.stdout for node in nodes), nodes[0].stdout[-3000:]
