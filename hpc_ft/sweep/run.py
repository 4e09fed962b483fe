"""Submit a planned sweep and bring every node's report of every job back. The side-effect half of a sweep.

How the jobs are submitted and whether they are waited for is the executor's (``Executor.submit_sweep`` in
``hpc_ft.submit.executors``: a Slurm job array, local processes, or in-process one after the other).

The sweep dir gets ``manifest.json`` (the plan, every job's run dir and scheduler id, later its outcome); every run
dir gets ``job.yaml``, ``nodes/node_{r}.json`` (written by each node) and, once gathered, ``results.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hpc_ft.job import atomic_write_text
from hpc_ft.submit.executors import SweepEntry

MANIFEST = "manifest.json"


# -- the manifest -------------------------------------------------------------------------------------------
def write_manifest(sweep_dir: Path, plan: dict[str, Any], entries: Sequence[SweepEntry], *, executor: str,
                   wait: bool, state: str) -> Path:
    """Write sweep_dir/manifest.json atomically: the plan and, per job, run dir, scheduler id and outcome."""
    jobs = []
    for e in sorted(entries, key=lambda e: e.num):
        jobs.append({"num": e.num, "run_dir": str(e.spec.run_dir), "overrides": list(e.spec.overrides),
                     "order_index": e.order_index, "nodes": e.spec.nodes,
                     "gpus_per_node": e.spec.conf.resources.gpus_per_node,
                     "job_id": None if e.job is None else str(e.job.job_id),
                     "node_reports": [str(Path("nodes") / f"node_{r}.json") for r in range(e.spec.nodes)],
                     "ok": e.ok if e.reports else None})
    path = Path(sweep_dir) / MANIFEST
    atomic_write_text(path, json.dumps({"executor": executor, "wait": wait, "state": state, "plan": plan,
                                        "jobs": jobs}, indent=1, default=str))
    return path


def set_job_ids(sweep_dir: Path, ids: dict[int, str], state: str | None = None) -> None:
    """Record scheduler ids (and the sweep's state) in an existing manifest."""
    path = Path(sweep_dir) / MANIFEST
    data = json.loads(path.read_text())
    for j in data["jobs"]:
        if j["num"] in ids:
            j["job_id"] = ids[j["num"]]
    if state is not None:
        data["state"] = state
    atomic_write_text(path, json.dumps(data, indent=1, default=str))


@dataclass
class ManifestIds:
    """Records scheduler ids (and the sweep's state) in sweep_dir/manifest.json; picklable, so the local
    executor's detached sweep driver records them after hpc-ft returns."""

    sweep_dir: str

    def __call__(self, ids: dict[int, str], state: str | None = None) -> None:
        set_job_ids(Path(self.sweep_dir), ids, state)


def submit_sweep(entries: Sequence[SweepEntry], parallelism: int, sweep_dir: Path, *, plan: dict[str, Any],
                 executor: str, wait: bool, poll_s: float) -> bool:
    """Submit the planned ``entries`` (plan order) through their executor, keeping the manifest current.

    Returns whether the sweep was waited for (then every entry holds its node reports).
    """
    from hpc_ft.submit.executors import executor_named

    def record(state: str) -> None:  # manifest.json: what `hpc-ft report SWEEP_DIR` reads later
        write_manifest(sweep_dir, plan, entries, executor=executor, wait=wait, state=state)

    record("submitting")
    waited = executor_named(executor).submit_sweep(entries, parallelism, sweep_dir, wait=wait, poll_s=poll_s,
                                                   record_state=record, record_ids=ManifestIds(str(sweep_dir)))
    record("finished" if waited else "submitted")
    return waited
