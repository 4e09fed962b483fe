"""The contract between hpc_ft and a user's own torchrun script (README "Bring your own script").

A script needs none of this to run under hpc_ft (``script.path=train.py``): torchrun gives it RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT as usual, and the node task samples telemetry, writes the node reports
and the run report, and records the script's exit status and error tail. A script that wants more uses:

- **the run dir**: ``run_dir()`` (environment variable ``HPC_FT_RUN_DIR``): where to keep checkpoints, so a
  requeued run (same run dir) finds them;
- **preemption**: the scheduler's signal (``executor.preempt_signal``, named in ``HPC_FT_PREEMPT_SIGNAL``) is
  forwarded to every worker; importing this module under hpc_ft installs a handler that only sets a flag, and
  ``preempted()`` answers "did any rank get it?", the same on every rank (an all-reduce: call it at the same
  point on every rank, e.g. after each step);
- **requeue**: after checkpointing, ``exit_for_requeue()`` ends the worker with ``REQUEUE_EXIT_CODE`` (75,
  EX_TEMPFAIL); the node task then requeues the job (up to ``executor.max_requeues``) into the same run dir;
- **progress**: ``report(step, samples=, tokens=, **metrics)`` on every rank (rank 0 writes), or the script's
  own lines appended to the file named by ``HPC_FT_PROGRESS_FILE``: one JSON object per line with ``step``
  and optionally ``time`` (Unix seconds), ``samples`` and ``tokens`` (counts since step 0, whole job),
  ``flops_per_sample`` (forward + backward, for MFU) and any numeric metric (``loss``, ``eval_accuracy``, ...).
  hpc_ft turns them into the run's throughput, MFU and metrics columns (report and sweep results).

This module imports only the standard library (torch only inside ``preempted()``, when torch.distributed is
initialized), so a cluster's Python needs this one file, not hpc_ft: copy it beside the script if hpc_ft is
not installed there. Outside hpc_ft every call is harmless: ``run_dir()`` is None, ``report`` writes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: "checkpointed, run me again"; hpc_ft.errors.PREEMPTED_EXIT_CODE
RUN_DIR_ENV = "HPC_FT_RUN_DIR"
PROGRESS_ENV = "HPC_FT_PROGRESS_FILE"
PREEMPT_SIGNAL_ENV = "HPC_FT_PREEMPT_SIGNAL"
# The keys of a progress record that are not metrics.
RECORD_KEYS = ("step", "time", "samples", "tokens", "flops_per_sample", "event")
REQUEUE_EVENT = "requeue"  # the ``event`` of the record exit_for_requeue() writes

_flag = {"requested": False, "installed": False}


def run_dir() -> Path | None:
    """The job's run directory (shared by every node and kept across requeues); None outside hpc_ft."""
    d = os.environ.get(RUN_DIR_ENV)
    return Path(d) if d else None


def _on_signal(signum: int, frame: Any) -> None:
    _flag["requested"] = True  # only a flag: the script decides where to stop (at a step end)


def install_preemption_handler() -> None:
    """Catch the preemption signal (and SIGTERM) instead of dying on it; done on import under hpc_ft.

    Call it yourself only to re-install after code of yours replaced the handlers.
    """
    names = {"SIGTERM", os.environ.get(PREEMPT_SIGNAL_ENV, "SIGUSR2")}
    for name in names:
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, _on_signal)
    _flag["installed"] = True


def preemption_requested() -> bool:
    """This process got the preemption signal (no communication; ranks may differ: prefer ``preempted()``)."""
    return _flag["requested"]


def preempted() -> bool:
    """Whether any rank got the preemption signal, the same answer on every rank.

    A collective when torch.distributed is initialized (an all-reduce of one number over the default group):
    every rank must call it at the same point, e.g. once per step. Without torch.distributed it is
    ``preemption_requested()``.
    """
    local = _flag["requested"]
    dist = sys.modules.get("torch.distributed")  # torch is imported by the script already if it uses it
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return local
    import torch

    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def _append(record: dict[str, Any]) -> None:
    path = os.environ.get(PROGRESS_ENV)
    if not path or _rank() != 0:
        return
    # One write of one line on an O_APPEND descriptor: a reader never sees half a record from this process.
    with open(path, "a") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")


def report(step: int, *, samples: int | None = None, tokens: int | None = None,
           flops_per_sample: float | None = None, **metrics: float) -> None:
    """Record progress at ``step`` (rank 0 writes; other ranks may call it too, it does nothing there).

    ``samples`` and ``tokens``: how many the whole job (all ranks) has trained on since step 0, not per call;
    hpc_ft derives samples/s and tokens/s from consecutive records. ``flops_per_sample``: forward + backward
    FLOPs per sample, for MFU. ``metrics``: numbers by name (``loss=...``, ``eval_accuracy=...``); the last
    value of each is the run's. Raises ValueError for a metric that is not a finite number or a reserved name.
    """
    rec: dict[str, Any] = {"step": int(step), "time": time.time()}
    for key, value in (("samples", samples), ("tokens", tokens), ("flops_per_sample", flops_per_sample)):
        if value is not None:
            rec[key] = value
    for name, value in metrics.items():
        if name in RECORD_KEYS:
            raise ValueError(f"metric name {name!r} is reserved ({', '.join(RECORD_KEYS)}): rename it")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (
                float("inf"), float("-inf")):
            raise ValueError(f"metric {name}={value!r} must be a finite number")
        rec[name] = float(value)
    _append(rec)


def exit_for_requeue(step: int | None = None) -> NoReturn:
    """End this worker asking hpc_ft to requeue the job (call it on every rank, after the checkpoint is saved).

    Rank 0 records the request in the progress file; the exit status is ``REQUEUE_EXIT_CODE``.
    """
    rec: dict[str, Any] = {"event": REQUEUE_EVENT, "time": time.time()}
    if step is not None:
        rec["step"] = int(step)
    _append(rec)
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(REQUEUE_EXIT_CODE)


if os.environ.get(PREEMPT_SIGNAL_ENV):  # under hpc_ft: the forwarded signal must not kill the worker
    install_preemption_handler()
