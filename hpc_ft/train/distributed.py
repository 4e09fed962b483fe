"""Where a worker sits in the job: ranks from torchrun's environment, the device, the process group.

Runs as one torchrun worker (RANK/LOCAL_RANK/WORLD_SIZE from torchrun) or in-process for the debug executor
(world size 1, no process group).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from hpc_ft.job import JobSpec


@dataclass
class Dist:
    """Where this worker sits: ranks from torchrun's environment, the device it trains on."""

    rank: int
    local_rank: int
    world_size: int
    node_rank: int
    device: torch.device
    control: Any = None  # a gloo group for tiny CPU-side agreements (no GPU sync); None: the default group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_node_main(self) -> bool:
        return self.local_rank == 0


def attempt_store(rank: int, world_size: int) -> dist.Store:
    """The rendezvous store of this torchrun attempt, under a prefix of its own.

    torchrun keeps one store across worker restarts (``--max-restarts``) and its env:// path adds no
    per-attempt prefix, so restarted workers could read the dead workers' addresses and hang or fail
    in gloo's connect. Keys under ``attempt_N`` start clean on every restart.
    """
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=not agent_store and rank == 0, multi_tenant=True,
                          timeout=datetime.timedelta(minutes=10))
    return dist.PrefixStore(f"hpc_ft/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def setup_dist(spec: JobSpec) -> Dist:
    """Join the job's process group (NCCL on GPU, gloo on CPU) when there is more than one worker."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = spec.conf.resources.gpus_per_node > 0 and torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda else None,
                                store=attempt_store(rank, world_size), rank=rank, world_size=world_size)
    # The per-step "anyone preempted?" vote runs over gloo on CPU tensors: with NCCL it would need a
    # device tensor and a .item() that stalls the GPU queue every step.
    control = dist.new_group(backend="gloo") if (world_size > 1 and use_cuda) else None
    return Dist(rank, local_rank, world_size, int(os.environ.get("HPC_FT_NODE_RANK", "0")), device, control)


def teardown_dist(d: Dist) -> None:
    """Leave the process group (every rank, once training returned or refused)."""
    if d.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj``, in rank order (a list of one without a process group)."""
    if d.world_size == 1:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch on ``device`` (asynchronous copies; the CPU batch itself on CPU)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
