"""Atomic checkpoints in RUN_DIR/checkpoints and resume from the newest complete one.

A checkpoint is written to a temporary file in the same directory, fsynced and renamed, so a crash
or a kill mid-write never leaves a file that looks complete. A damaged newest file (a truncated
copy, a full disk) is skipped with a warning for the previous one. ``train.strategy=fsdp`` writes sharded
checkpoints instead, directories ``step_N.dcp`` (``hpc_ft.train.dcp_checkpoint``), listed, pruned and found
here alike.

torch is imported inside the functions that read or write checkpoint files: listing them
(``list_checkpoints``) is part of the checks before dispatch, which must stay fast on a login node.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_ft.rundir.atomic import atomic_write
from hpc_ft.rundir.layout import RunDir

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step_(\d{8})\.(pt|dcp)$")
META = "meta.pt"  # a sharded checkpoint's step, schedule, RNG states and job (its tensors are DCP's files)


@dataclass
class Checkpoint:
    step: int
    path: Path
    state: dict[str, Any]  # model (unwrapped state_dict), optimizer, scheduler, scaler, rng, step
    sharded: bool = False  # a DCP directory: ``state`` holds no model/optimizer (hpc_ft.train.dcp_checkpoint)


def ckpt_dir(run_dir: str | os.PathLike) -> Path:
    return RunDir(run_dir).checkpoints


def ckpt_path(run_dir: str | os.PathLike, step: int) -> Path:
    return ckpt_dir(run_dir) / f"step_{step:08d}.pt"


def sharded_ckpt_path(run_dir: str | os.PathLike, step: int) -> Path:
    return ckpt_dir(run_dir) / f"step_{step:08d}.dcp"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint (file or sharded directory), oldest first (temporary files and
    directories being written excluded)."""
    d = ckpt_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any], keep: int = 2,
                    note: str = "") -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically, then prune all but the newest ``keep``; its size
    is logged (with ``note``: what it holds)."""
    import torch

    path = ckpt_path(run_dir, step)
    atomic_write(path, lambda f: torch.save(state, f))
    dfd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    log.info("checkpoint step %d: %.2f MB in %s%s", step, path.stat().st_size / 1e6, path,
             f" ({note})" if note else "")
    prune(run_dir, keep)
    return path


def prune(run_dir: str | os.PathLike, keep: int) -> None:
    """Remove all but the newest ``keep`` complete checkpoints (files or sharded directories)."""
    import shutil

    if keep > 0:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


def load_latest(run_dir: str | os.PathLike) -> Checkpoint | None:
    """The newest checkpoint that loads completely, or None; unreadable newer ones are skipped with a warning."""
    import torch

    for step, path in reversed(list_checkpoints(run_dir)):
        sharded = path.is_dir()
        try:
            state = torch.load(path / META if sharded else path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any damage means: try the previous one
            log.warning("skipping damaged checkpoint %s (%s: %s); trying the previous one",
                        path, type(exc).__name__, exc)
            continue
        if not isinstance(state, dict) or state.get("step") != step or ("model" not in state and not sharded):
            log.warning("skipping checkpoint %s: not an hpc_ft checkpoint of step %d", path, step)
            continue
        return Checkpoint(step=step, path=path, state=state, sharded=sharded)
    return None
