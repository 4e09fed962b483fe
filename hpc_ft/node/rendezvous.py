"""Where this node sits in the job: node rank, node count and the rendezvous endpoint.

Rank, count and the rendezvous host come from the allocation's environment only: Slurm (SLURM_*),
submitit's local executor (SUBMITIT_LOCAL_*, one task per emulated node), or a plain single process.

The rendezvous port is not derived from the job id (``10000 + id % 20000`` gave jobs 1234567 and 1254567 the
same port, and job 19500 torchrun's own 29500, so two jobs sharing a host joined one c10d store). Instead
(``hpc_ft.node.rdzv_store``): node 0, which runs on the rendezvous host, hosts the c10d store itself on a
port the operating system assigns (bind to port 0: free by construction, never one already in use; a
well-known port in ``EXCLUDED_PORTS`` is handed back and another taken), and writes it to
``RUN_DIR/nodes/rendezvous.json`` with the job id and attempt. The other nodes read it from there (the run
dir is on a filesystem every node shares; they already read ``job.yaml`` from it), accepting only a record
of their own job and attempt, and fail with a LaunchError naming the file after ``PUBLISH_TIMEOUT_S``.
Every torchrun, node 0's too, joins that store as a client (``--rdzv-conf=is_host=0``), so none can fall
back to hosting or joining a store on a port some other job uses.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping

from hpc_ft.errors import LaunchError


@dataclass(frozen=True)
class Placement:
    node_rank: int
    nnodes: int
    job_id: str
    host: str  # this node's hostname
    rdzv_host: str  # host of the c10d store (first node of the allocation, where node 0 runs)
    rdzv_port: int | None = None  # chosen by node 0 at launch (rdzv_store.agree_endpoint); None before
    restart: int = 0  # SLURM_RESTART_COUNT: which run of a requeued job this is

    @property
    def standalone(self) -> bool:
        """One node: torchrun --standalone picks its own free port, nothing to agree on."""
        return self.nnodes == 1


def _restart_count(env: Mapping[str, str]) -> int:
    try:
        return int(env.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def placement_from_env(env: Mapping[str, str] | None = None) -> Placement:
    """Read this node's placement from Slurm, submitit-local or (fallback) a single node.

    The rendezvous port is left unset: node 0 chooses it when the node starts (see the module docstring).
    Raises LaunchError when SLURM_JOB_NODELIST and SLURM_JOB_NUM_NODES disagree.
    """
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
        restart = _restart_count(env)
        if nnodes == 1:
            return Placement(rank, 1, job_id, host, "localhost", None, restart)
        return Placement(rank, nnodes, job_id, env.get("SLURMD_NODENAME", host), hosts[0], None, restart)
    if "SUBMITIT_LOCAL_JOB_ID" in env:
        # submitit's local executor runs one task per emulated node on this machine.
        job_id = env["SUBMITIT_LOCAL_JOB_ID"]
        nnodes = int(env.get("SUBMITIT_LOCAL_NTASKS", "1"))
        rank = int(env.get("SUBMITIT_LOCAL_GLOBALID", "0"))
        if nnodes == 1:
            return Placement(0, 1, job_id, host, "localhost", None)
        return Placement(rank, nnodes, job_id, host, "127.0.0.1", None)
    return Placement(0, 1, str(os.getpid()), host, "localhost", None)
