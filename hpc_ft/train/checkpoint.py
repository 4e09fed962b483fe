"""Atomic checkpoints in RUN_DIR/checkpoints and resume from the newest complete one.

A checkpoint is written to a temporary file in the same directory, fsynced and renamed, so a crash
or a kill mid-write never leaves a file that looks complete. A damaged newest file (a truncated
copy, a full disk) is skipped with a warning for the previous one.

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

_NAME = re.compile(r"^step_(\d{8})\.pt$")


@dataclass
class Checkpoint:
    step: int
    path: Path
    state: dict[str, Any]  # model (unwrapped state_dict), optimizer, scheduler, scaler, rng, step


def ckpt_dir(run_dir: str | os.PathLike) -> Path:
    return RunDir(run_dir).checkpoints


def ckpt_path(run_dir: str | os.PathLike, step: int) -> Path:
    return ckpt_dir(run_dir) / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file, oldest first (temporary files excluded)."""
    d = ckpt_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically, then prune all but the newest ``keep``."""
    import torch

    path = ckpt_path(run_dir, step)
    atomic_write(path, lambda f: torch.save(state, f))
    dfd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    if keep > 0:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_latest(run_dir: str | os.PathLike) -> Checkpoint | None:
    """The newest checkpoint that loads completely, or None; unreadable newer ones are skipped with a warning."""
    import torch

    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any damage means: try the previous one
            log.warning("skipping damaged checkpoint %s (%s: %s); trying the previous one",
                        path, type(exc).__name__, exc)
            continue
        if not isinstance(state, dict) or state.get("step") != step or "model" not in state:
            log.warning("skipping checkpoint %s: not an hpc_ft checkpoint of step %d", path, step)
            continue
        return Checkpoint(step=step, path=path, state=state)
    return None
