"""Where this node sits in the job: node rank, node count and the rendezvous endpoint.

Derived from the allocation's environment only, so every node agrees without talking:
Slurm (SLURM_*), submitit's local executor (SUBMITIT_LOCAL_*, one task per emulated node), or a
plain single process.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Mapping

from hpc_ft.errors import LaunchError

# Below Linux's ephemeral range (32768+) so an outgoing connection never holds our port.
PORT_BASE = 10000
PORT_SPAN = 20000


@dataclass(frozen=True)
class Placement:
    node_rank: int
    nnodes: int
    job_id: str
    host: str  # this node's hostname
    rdzv_host: str  # host of the c10d store (first node of the allocation)
    rdzv_port: int | None  # None: one node, torchrun --standalone picks a free port

    @property
    def standalone(self) -> bool:
        return self.rdzv_port is None


def derive_port(job_id: str) -> int:
    """A port every node computes alike from the job id; two jobs with different ids differ.

    Array tasks have their own SLURM_JOB_ID, so each gets its own port.
    """
    digits = re.sub(r"\D", "", job_id)
    if not digits:
        raise LaunchError(f"cannot derive a rendezvous port from job id {job_id!r}: no digits")
    return PORT_BASE + int(digits) % PORT_SPAN


def placement_from_env(env: Mapping[str, str] | None = None) -> Placement:
    """Read this node's placement from Slurm, submitit-local or (fallback) a single node."""
    env = os.environ if env is None else env
    host = socket.gethostname()
    if "SLURM_JOB_ID" in env and "SLURM_NODEID" in env:
        from hpc_ft.node.hostlist import expand_hostlist

        job_id = env["SLURM_JOB_ID"]
        nnodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or "1")
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
        hosts = expand_hostlist(nodelist) if nodelist else []
        if nnodes > 1 and len(hosts) != nnodes:
            raise LaunchError(f"SLURM_JOB_NODELIST={nodelist!r} expands to {len(hosts)} hosts, "
                              f"but SLURM_JOB_NUM_NODES={nnodes}")
        rank = int(env["SLURM_NODEID"])
        if nnodes == 1:
            return Placement(rank, 1, job_id, host, "localhost", None)
        return Placement(rank, nnodes, job_id, env.get("SLURMD_NODENAME", host), hosts[0], derive_port(job_id))
    if "SUBMITIT_LOCAL_JOB_ID" in env:
        # submitit's local executor runs one task per emulated node on this machine.
        job_id = env["SUBMITIT_LOCAL_JOB_ID"]
        nnodes = int(env.get("SUBMITIT_LOCAL_NTASKS", "1"))
        rank = int(env.get("SUBMITIT_LOCAL_GLOBALID", "0"))
        if nnodes == 1:
            return Placement(0, 1, job_id, host, "localhost", None)
        return Placement(rank, nnodes, job_id, host, "127.0.0.1", derive_port(job_id))
    return Placement(0, 1, str(os.getpid()), host, "localhost", None)
