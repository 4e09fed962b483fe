"""A user's script's progress file (``progress.jsonl``, written through hpc_ft.script_api) as a TrainResult.

Each line is one JSON object: ``step`` and optionally ``time`` (Unix seconds), ``samples`` and ``tokens`` (counts
since step 0, whole job), ``flops_per_sample`` and numeric metrics by name; ``event: requeue`` marks a worker
that asked to be requeued. The file is appended across requeues; the throughput of an attempt comes from the
records written during it (consecutive pairs, their median, as the loop's logging windows), the metrics and the
step from the newest records.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
from pathlib import Path
from typing import Any

from hpc_ft.rundir.records import TrainResult

log = logging.getLogger(__name__)

# The record keys that are not metrics; hpc_ft.script_api.RECORD_KEYS names the same (it imports nothing of
# hpc_ft, so the two are compared by tests/node/test_script_api.py instead).
RECORD_KEYS = ("step", "time", "samples", "tokens", "flops_per_sample", "event")
REQUEUE_EVENT = "requeue"


def read_progress(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a progress file, oldest first; a line that is not a JSON object is skipped with a warning
    (a script may be killed mid-line). [] when there is no file."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            log.warning("%s:%d: not a JSON object, skipped", path, i)
            continue
        if isinstance(rec, dict):
            out.append(rec)
        else:
            log.warning("%s:%d: not a JSON object, skipped", path, i)
    return out


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def rates(records: list[dict[str, Any]], key: str) -> list[float]:
    """``key`` (``samples``, ``tokens``) per second between consecutive records, oldest first, that both have it and a
    time; a pair whose time or count does not increase gives none. The throughput of a script's TrainResult and of
    `hpc-ft status` while it runs."""
    out = []
    prev = None
    for rec in records:
        t, v = _num(rec.get("time")), _num(rec.get(key))
        if t is None or v is None:
            continue
        if prev is not None and t > prev[0] and v > prev[1]:
            out.append((v - prev[1]) / (t - prev[0]))
        prev = (t, v)
    return out


def _step_times(records: list[dict[str, Any]]) -> list[float]:
    out, prev = [], None
    for rec in records:
        t, s = _num(rec.get("time")), _num(rec.get("step"))
        if t is None or s is None:
            continue
        if prev is not None and t > prev[0] and s > prev[1]:
            out.append((t - prev[0]) / (s - prev[1]))
        prev = (t, s)
    return out


def progress_result(records: list[dict[str, Any]], *, since_unix_s: float, world_size: int, wall_s: float,
                    requeue_asked: bool) -> TrainResult | None:
    """The training result of one attempt from a script's progress records; None when it reported none.

    ``since_unix_s``: when this attempt started (its throughput uses only its own records); ``requeue_asked``:
    the script ended with the requeue exit status (or its rank 0 recorded the request).
    """
    if not records:
        return None
    mine = [r for r in records if (_num(r.get("time")) or 0.0) >= since_unix_s]
    earlier = [r for r in records if (_num(r.get("time")) or 0.0) < since_unix_s]
    steps = [int(s) for r in records if (s := _num(r.get("step"))) is not None]
    before = [int(s) for r in earlier if (s := _num(r.get("step"))) is not None]
    fields = {f.name for f in dataclasses.fields(TrainResult)}
    metrics: dict[str, float | None] = {}
    flops = None
    for r in records:
        for k, v in r.items():
            if k == "flops_per_sample":
                flops = _num(v) if _num(v) is not None else flops
            elif k not in RECORD_KEYS and k not in fields and _num(v) is not None:
                metrics[k] = _num(v)  # a metric named like a TrainResult field (wall_s, ...) would shadow it
    requeue = requeue_asked or any(r.get("event") == REQUEUE_EVENT for r in mine)
    sps, tps, st = rates(mine, "samples"), rates(mine, "tokens"), _step_times(mine)
    final_loss = metrics.pop("loss", None)
    return TrainResult(
        steps=steps[-1] if steps else 0, start_step=max(before) if before else 0,
        samples_per_s=statistics.median(sps) if sps else None, tokens_per_s=statistics.median(tps) if tps else None,
        step_time_s=statistics.median(st) if st else None, final_loss=final_loss, world_size=world_size,
        preempted=requeue, wall_s=wall_s, flops_per_sample=flops, metrics=metrics)
