"""What a dry run prints: the job description, pure and torch-free."""

from __future__ import annotations

import shlex
from typing import Any

from hpc_ft.config.validate import threads_per_worker
from hpc_ft.job import JobSpec, local_paths
from hpc_ft.node.launch import torchrun_argv
from hpc_ft.node.rendezvous import Placement
from hpc_ft.submit.executors import executor_of

# Node 0 hosts the rendezvous store on a port the OS assigns at launch (hpc_ft.node.rdzv_store).
PORT_PLACEHOLDER = "<port node 0 publishes in RUN_DIR/nodes/rendezvous.json>"


def describe(spec: JobSpec) -> dict[str, Any]:
    """Resources, executor, run dir and the torchrun command of every node, as plain data."""
    c = spec.conf
    first = executor_of(c).first_host_hint
    nodes = []
    for rank in range(spec.nodes):
        if spec.nodes == 1:
            place = Placement(rank, 1, "JOB_ID", "<node>", "localhost", None)
        else:
            place = Placement(rank, spec.nodes, "JOB_ID", f"<node {rank}>", first, 0)
        argv = shlex.join(torchrun_argv(spec, place)).replace(f"{first}:0", f"{first}:{PORT_PLACEHOLDER}")
        nodes.append({"node_rank": rank, "torchrun": argv})
    r = c.resources
    return {
        "run_dir": str(spec.run_dir),
        "executor": c.executor.name,
        "resources": {"nodes": r.nodes, "gpus_per_node": r.gpus_per_node, "workers_per_node": spec.workers_per_node,
                      "world_size": spec.world_size, "cpus_per_task": r.cpus_per_task,
                      "threads_per_worker": threads_per_worker(c), "mem_gb": r.mem_gb,
                      "timeout_min": r.timeout_min, "partition": r.partition},
        "precision": c.precision.dtype,
        "script": ({"path": c.script.path, "module": c.script.module, "args": list(c.script.args)}
                   if c.script.path or c.script.module else None),  # the payload instead of hpc_ft's loop
        "model": c.model.get("_target_"),
        "data": c.data.get("_target_"),
        "paths": local_paths(c),  # the local files the job reads, absolute (made so by resolve) where they exist
        # The global batch is split over every worker and accumulation step: show what one forward pass sees.
        "train": {"max_steps": c.train.max_steps, "global_batch_size": c.train.global_batch_size,
                  "grad_accum_steps": c.train.grad_accum_steps,
                  "micro_batch_per_worker": c.train.global_batch_size // (spec.world_size * c.train.grad_accum_steps),
                  "eval_micro_batch_size": c.train.eval_micro_batch_size},
        "nodes": nodes,
        "overrides": spec.overrides,
    }
