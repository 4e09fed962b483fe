"""The c10d rendezvous store of a multi-node job: hosted by node 0 on a port the OS assigns, published in the run dir.

Why not a port derived from the job id: any rule mapping ids into a range maps two ids to one port (the old
``10000 + id % 20000`` gave 1234567 and 1254567 both 24567, and 19500 torchrun's 29500), and a derived port
may already be in use on the host; torchrun's agents then silently join the other job's store and die with
it. Binding port 0 asks the kernel for a port that is free at that instant and holds it from then on, so no
other job, hpc_ft's or not, can get it while this job runs.

- node 0 (always on the rendezvous host: the first host of the allocation) creates the store, then writes
  ``RUN_DIR/nodes/rendezvous.json`` (atomically) with the job id, the attempt and the port;
- every other node polls that file until it names its own job id and attempt (a record left by an earlier
  run or requeue is never used), up to ``PUBLISH_TIMEOUT_S``, then fails with a LaunchError;
- every torchrun joins as a client (``--rdzv-conf=is_host=0``, see launch.py).

The store lives as long as node 0's node task, which outlives its torchrun: the same lifetime as when
torchrun's node-0 agent hosted it.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

from hpc_ft.errors import LaunchError
from hpc_ft.job import atomic_write_text
from hpc_ft.node.rendezvous import Placement

RECORD_FILE = "rendezvous.json"  # under RUN_DIR/nodes/
RECORD_VERSION = 1
# A node 0 that is merely slow to start (imports, a busy file system) is tolerated as long as torchrun
# itself would wait for a missing node (its default join timeout).
PUBLISH_TIMEOUT_S = 600.0
POLL_S = 0.1
# Never host on these even if the kernel offers them (hosts whose ephemeral range covers them): other
# launchers on the same host start on them without checking.
EXCLUDED_PORTS: dict[int, str] = {
    29400: "torchrun's c10d rendezvous default",
    29500: "torchrun's MASTER_PORT default (also DeepSpeed's and Accelerate's)",
}
_MAX_EXCLUDED_RETRIES = 8


@dataclass(frozen=True)
class RendezvousRecord:
    """What node 0 publishes: the endpoint of this attempt of this job."""

    job_id: str
    attempt: str  # attempt_key(): differs between requeues of one job id
    host: str  # node 0's host (informative; nodes connect to their Placement.rdzv_host)
    port: int
    version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "RendezvousRecord":
        d: dict[str, Any] = json.loads(text)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def record_path(run_dir: Path) -> Path:
    return Path(run_dir) / "nodes" / RECORD_FILE


def attempt_key(place: Placement, requeues: int) -> str:
    """Names one run of the job, the same on every node: Slurm's restart count and submitit's requeue count
    (a requeue keeps the job id; the local executor's requeue does not bump SLURM_RESTART_COUNT)."""
    return f"restart{place.restart}.requeue{requeues}"


def _host_store(port: int = 0):
    """A c10d TCPStore server on ``port`` (0: one the kernel picks), as torchrun's agents expect it."""
    from torch.distributed import TCPStore

    return TCPStore("localhost", port, is_master=True, wait_for_workers=False, multi_tenant=True,
                    timeout=timedelta(seconds=60))


def _store_off_excluded_ports():
    """A hosted store whose port is not a well-known default; the others are closed again."""
    rejected = []
    try:
        for _ in range(_MAX_EXCLUDED_RETRIES):
            store = _host_store()
            if store.port not in EXCLUDED_PORTS:
                return store
            rejected.append(store)  # keep it bound so the kernel offers another port next
        raise LaunchError(f"the kernel kept offering well-known ports {sorted(EXCLUDED_PORTS)} for the rendezvous "
                          "store; widen net.ipv4.ip_local_port_range")
    finally:
        del rejected


@contextlib.contextmanager
def agree_endpoint(place: Placement, run_dir: Path, requeues: int = 0,
                   timeout_s: float = PUBLISH_TIMEOUT_S) -> Iterator[Placement]:
    """Yield ``place`` with the rendezvous port every node of this attempt agrees on.

    One node: unchanged (torchrun --standalone). Node 0: hosts the store (held until the block ends) and
    publishes its port. Other nodes: wait for node 0's record. Raises LaunchError when node 0's record of
    this job and attempt does not appear within ``timeout_s`` seconds.
    """
    if place.standalone:
        yield place
        return
    key = attempt_key(place, requeues)
    path = record_path(run_dir)
    if place.node_rank == 0:
        store = _store_off_excluded_ports()
        try:
            atomic_write_text(path, RendezvousRecord(place.job_id, key, place.host, int(store.port)).to_json())
            yield replace(place, rdzv_port=int(store.port))
        finally:
            del store  # closes the server: its port is free again once every client has gone
        return
    yield replace(place, rdzv_port=wait_for_port(path, place.job_id, key, timeout_s))


def wait_for_port(path: Path, job_id: str, attempt: str, timeout_s: float) -> int:
    """Poll ``path`` until it holds node 0's record for ``job_id``/``attempt``; return its port.

    Raises LaunchError after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    seen = None
    while True:
        try:
            rec = RendezvousRecord.from_json(path.read_text())
            if rec.job_id == job_id and rec.attempt == attempt:
                return rec.port
            seen = rec
        except (OSError, ValueError, TypeError, KeyError):
            pass  # not written yet (the write is atomic: never half a record)
        if time.monotonic() > deadline:
            other = f"; it holds job {seen.job_id} {seen.attempt}, an earlier run" if seen else ""
            raise LaunchError(
                f"node 0 did not publish the rendezvous port of job {job_id} ({attempt}) in {path} within "
                f"{timeout_s:.0f} s{other}. Node 0 hosts the rendezvous: see its log (nodes/node0/, submitit/) for "
                "why it did not start; the run dir must be on a filesystem every node shares.")
        time.sleep(POLL_S)
