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
