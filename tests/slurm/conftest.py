"""One real local Slurm cluster (scripts/local-slurm.sh) for the whole test session.

Started on first use, stopped at the end if this session started it. Skipped, loudly, only where
Slurm cannot be installed at all (no apt-get, not root); any other failure to start is an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "local-slurm.sh"
CLUSTER_DIR = Path(os.environ.get("HPC_FT_SLURM_DIR", "/tmp/hpc_ft-slurm"))
UP_TIMEOUT_S = 600


@dataclass(frozen=True)
class Cluster:
    conf: Path  # slurm.conf of the local cluster (also exported as SLURM_CONF)
    nodes: list[str]
    script: Path = SCRIPT


def _run_script(cmd: str, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), cmd], capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL)


def _cannot_install() -> str | None:
    """Why Slurm can't be installed here, or None when it is installed or installable."""
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("sbatch"):
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and this user is not root (scripts/local-slurm.sh needs root)"
    if not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get to install Debian's slurm-wlm"
    return None


def _skip_loudly(reason: str) -> None:
    msg = f"SLURM TESTS SKIPPED: {reason}"
    print(f"\n{'!' * 70}\n{msg}\n{'!' * 70}", file=sys.stderr)
    warnings.warn(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    """The running local cluster; SLURM_CONF is exported for clients and submitit."""
    reason = _cannot_install()
    if reason:
        _skip_loudly(reason)
    was_up = _run_script("status", 60).returncode == 0
    proc = _run_script("up", UP_TIMEOUT_S)
    if proc.returncode != 0:
        if not shutil.which("slurmctld"):  # the install itself failed (no mirror, no space, ...)
            _skip_loudly(f"installing Slurm failed:\n{proc.stdout}\n{proc.stderr}")
        pytest.fail(f"scripts/local-slurm.sh up failed:\n{proc.stdout}\n{proc.stderr}")
    conf = CLUSTER_DIR / "etc" / "slurm.conf"
    os.environ["SLURM_CONF"] = str(conf)  # clients and submitit find the cluster with or without /etc/slurm
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, check=True,
                           timeout=30).stdout.split()
    yield Cluster(conf=conf, nodes=sorted(set(nodes)))
    if not was_up:
        down = _run_script("down", 120)
        assert down.returncode == 0, f"scripts/local-slurm.sh down failed:\n{down.stdout}\n{down.stderr}"


# -- helpers for the cluster tests -------------------------------------------------------------------------
def sacct_runs(job_id: str) -> list[str]:
    """One state per run of the job (-D: a requeued job has a REQUEUED record per earlier run)."""
    out = subprocess.run(["sacct", "-n", "-D", "-X", "-P", "-j", str(job_id), "-o", "State"], capture_output=True,
                         text=True, timeout=30).stdout
    return [s.split()[0] for s in out.splitlines() if s.strip()]


FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL")


def wait_job_done(job_id: str, timeout_s: float = 300) -> list[str]:
    """Wait until Slurm's accounting shows the job's last run finished; returns every run's state."""
    def done():
        runs = sacct_runs(job_id)
        return runs if runs and runs[-1] in FINAL_STATES else None

    return wait_until(done, timeout_s, f"job {job_id} to finish")


@pytest.fixture(scope="session")
def reference_weights(tmp_path_factory):
    """``reference_weights(nodes)``: final weights of an uninterrupted synthetic run on the local executor
    with the same world size (nodes x 2 workers), computed once per node count."""
    import torch  # noqa: F401  (the checkpoint holds tensors)

    from hpc_ft.train.checkpoint import load_latest
    from tests.conftest import SYNTH, hpc_ft_cmd

    cache: dict[int, dict] = {}

    def get(nodes: int) -> dict:
        if nodes not in cache:
            run = tmp_path_factory.mktemp(f"reference{nodes}") / "run"
            res = hpc_ft_cmd("submit", *SYNTH, f"resources.nodes={nodes}", f"hydra.run.dir={run}")
            assert res.returncode == 0, res.stdout + res.stderr
            cache[nodes] = load_latest(run).state["model"]
        return cache[nodes]

    return get


def assert_bitwise_equal(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs from the uninterrupted run"


@pytest.fixture
def make_spec():
    """``make_spec(run_dir, *overrides, env=...)``: the synthetic task as a Slurm JobSpec, ready to submit."""
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from tests.conftest import SYNTH

    def make(run_dir, *overrides: str, env: dict | None = None):
        conf = compose_conf([*SYNTH, "executor=slurm", "resources.mem_gb=1", "resources.timeout_min=10",
                             "executor.preempt_signal_delay_s=60", *overrides], run_dir=run_dir)
        if env is not None:
            conf.executor.env = dict(env)
        return resolve(conf)

    return make


@pytest.fixture
def make_resources():
    """``make_resources(**fields)``: a ResourcesConf for preflight checks."""
    from hpc_ft.config.schema import ResourcesConf

    return lambda **kw: ResourcesConf(**kw)
