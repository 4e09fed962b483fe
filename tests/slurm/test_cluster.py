"""The local cluster is a real Slurm: two nodes, GPUs as GRES, accounting, requeue."""

from __future__ import annotations

import subprocess

import pytest


pytestmark = pytest.mark.slurm


def sh(*argv: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def test_script_is_shellcheck_clean(slurm_cluster):
    proc = sh("shellcheck", str(slurm_cluster.script))
    assert proc.returncode == 0, proc.stdout


def test_two_idle_nodes_with_gpus(slurm_cluster):
    assert len(slurm_cluster.nodes) >= 2
    out = sh("sinfo", "-h", "-N", "-p", "debug", "-o", "%N %t %G").stdout.splitlines()
    assert all("gpu:testgpu:2" in line for line in out if line), out


def test_up_is_idempotent(slurm_cluster):
    proc = sh("bash", str(slurm_cluster.script), "up", timeout_s=120)
    assert proc.returncode == 0 and "already up" in proc.stdout, proc.stdout + proc.stderr


def test_two_node_step_sees_two_hosts_and_gpus(slurm_cluster):
    proc = sh("srun", "-N2", "--ntasks-per-node=1", "--gpus-per-node=2", "--mem=100M", "-t", "1",
              "bash", "-c", 'echo "$(hostname) $SLURM_NODEID $CUDA_VISIBLE_DEVICES"')
    assert proc.returncode == 0, proc.stderr
    lines = sorted(proc.stdout.splitlines())
    assert [ln.split()[:2] for ln in lines] == [["node01", "0"], ["node02", "1"]]
    assert all(ln.split()[2] == "0,1" for ln in lines)


def test_unknown_gpu_type_is_refused(slurm_cluster):
    proc = sh("sbatch", "--gpus-per-node=a100:1", "--mem=100M", "--wrap", "true")
    assert proc.returncode != 0 and "node configuration is not available" in proc.stderr


def test_sacct_answers(slurm_cluster):
    jid = sh("sbatch", "--parsable", "--wait", "--mem=100M", "-t", "1", "-o", "/dev/null", "--wrap", "true",
             timeout_s=120).stdout.strip()
    proc = sh("sacct", "-n", "-X", "-j", jid, "-o", "State")
    assert proc.returncode == 0 and proc.stdout.split() == ["COMPLETED"], proc.stdout + proc.stderr
