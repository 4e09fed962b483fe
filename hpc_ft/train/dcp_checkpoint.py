"""Sharded checkpoints of ``train.strategy=fsdp`` through ``torch.distributed.checkpoint`` (DCP).

Every worker writes its own shards of the weights and optimizer state into ``checkpoints/.step_N.dcp.tmp``;
DCP's coordinator (rank 0) writes the metadata once all shards are in. Only then does rank 0 add ``meta.pt``
(step, schedule, loss scaler, every rank's RNG state, the job) and rename the directory to ``step_N.dcp``:
a checkpoint counts only once complete, so a worker killed mid-write (preemption past its grace time) leaves a
temporary directory that is never read, and the next run resumes from the previous complete checkpoint.

A checkpoint loads at any world size: DCP reads each tensor's pieces into whatever sharding the model has now
(and into plain tensors for the export, ``load_full_model_state``). A LoRA job writes only its trainable
weights (``keys``).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from hpc_ft.rundir.atomic import atomic_write
from hpc_ft.train.checkpoint import META, ckpt_dir, prune, sharded_ckpt_path

log = logging.getLogger("hpc_ft.train")

_TMP_SUFFIX = ".tmp"


def _tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{_TMP_SUFFIX}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer | None, keys: set[str] | None):
    """The model's (sharded) state dict, restricted to ``keys`` when given, and the optimizer's (keyed by
    parameter names, so it loads into another sharding); optimizer None: its state is not wanted."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        model_sd, optim_sd = get_model_state_dict(model), None
    else:
        model_sd, optim_sd = get_state_dict(model, optimizer)
    if keys is not None:
        model_sd = {k: v for k, v in model_sd.items() if k in keys}
    return model_sd, optim_sd


def save_sharded(run_dir: str | os.PathLike, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                 meta: dict[str, Any], is_main: bool, keep: int, keys: set[str] | None = None,
                 before_complete: Callable[[], None] | None = None) -> Path:
    """Write the checkpoint of ``step`` (called by every worker): the shards, then (rank 0) ``meta`` and the
    rename that makes it count; prunes all but the newest ``keep``. Returns its directory once complete on every
    worker. ``before_complete`` runs on every worker between the shards and the rename (a test hook)."""
    import torch.distributed.checkpoint as dcp

    final = sharded_ckpt_path(run_dir, step)
    tmp = _tmp_path(final)
    if is_main:
        ckpt_dir(run_dir).mkdir(parents=True, exist_ok=True)
        for stale in ckpt_dir(run_dir).glob(f".step_*.dcp{_TMP_SUFFIX}"):  # an earlier run killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # the same step again (a resumed run that stopped where it started)
            shutil.rmtree(final)
    _barrier()
    model_sd, optim_sd = _state_dicts(model, optimizer, keys)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    if before_complete is not None:
        before_complete()
    if is_main:
        atomic_write(tmp / META, lambda f: torch.save(meta, f))
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        prune(run_dir, keep)
        size = sum(p.stat().st_size for p in final.iterdir())
        log.info("checkpoint step %d: %.2f MB in %s (sharded)", step, size / 1e6, final)
    _barrier()  # nobody goes on (or exits) before the checkpoint counts
    return final


def load_sharded(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                 keys: set[str] | None = None) -> None:
    """Load a sharded checkpoint into ``model`` (and ``optimizer``; None: leave it fresh), whatever the world
    size that wrote it (every worker calls it). ``keys``: a LoRA job's trainable weights (the rest is the base's
    own). Raises RuntimeError when the checkpoint lacks a tensor the model needs."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    model_sd, optim_sd = _state_dicts(model, optimizer, keys)
    state: dict[str, Any] = {"model": model_sd}
    if optimizer is not None:
        state["optim"] = optim_sd
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer if optimizer is not None else [], model_state_dict=state["model"],
                   optim_state_dict=state.get("optim", {}), options=StateDictOptions(strict=keys is None))


def load_full_model_state(path: Path, model: nn.Module, keys: set[str] | None = None) -> None:
    """Gather a sharded checkpoint's weights into a plain (unsharded) ``model`` in this one process, without a
    process group (the export). ``keys``: as ``load_sharded``."""
    import warnings

    import torch.distributed.checkpoint as dcp

    sd = {k: v for k, v in model.state_dict().items() if keys is None or k in keys}
    with warnings.catch_warnings():
        # dcp.load warns "torch.distributed is disabled, unavailable or uninitialized, assuming the intent is to
        # load in a single process" even when told so (no_dist=True; seen with torch 2.13): `hpc-ft export`
        # of an FSDP2 run printed it. Only that message is silenced, only here, where one process is the intent.
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized",
                                category=UserWarning)
        dcp.load({"model": sd}, checkpoint_id=str(path), no_dist=True)
    model.load_state_dict(sd, strict=keys is None)
