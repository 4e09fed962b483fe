"""A node's telemetry as TensorBoard curves: every sample's host and per-GPU values, one curve per column.

The x axis is the sample's tick since the node's first sample of the run (seconds at the default 1 s interval):
read from the header of the node's oldest series segment, so a requeued node continues the same curves after
the gap, never on top of the earlier attempt. A tick already written (the last sample of ``stop`` may share
the previous one's) is skipped, so no step appears twice.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Mapping

from hpc_ft.rundir.layout import series_files

log = logging.getLogger(__name__)

SKIP_COLS = frozenset({"t", "cost_ms"})


def _tag(col: str) -> str:
    """``gpu0_util_pct`` -> ``gpu0/util_pct``; host columns under ``host/``."""
    head, _, rest = col.partition("_")
    return f"{head}/{rest}" if head.startswith("gpu") and head[3:].isdigit() else f"host/{col}"


class TelemetryBoard:
    """Writes sampler rows to ``logdir`` (``RunDir.tensorboard_node(r)``); never raises into the sampler."""

    def __init__(self, logdir: str | os.PathLike, series_dir: str | os.PathLike, interval_s: float):
        from hpc_ft.rundir.events import ScalarEvents

        self.interval_s = interval_s
        self.t0 = _first_t0(Path(series_dir))
        self.last_step = -1
        self.events = ScalarEvents(logdir)

    def add_row(self, row: Mapping[str, float]) -> None:
        t = row.get("t")
        if t is None:
            return
        if self.t0 is None:
            self.t0 = t
        step = int(round((t - self.t0) / self.interval_s))
        if step <= self.last_step:
            return
        self.last_step = step
        self.events.log(step, {_tag(c): v for c, v in row.items() if c not in SKIP_COLS and not
                               (isinstance(v, float) and math.isnan(v))}, wall_time_s=t, flush=False)

    def close(self) -> None:
        self.events.close()


def _first_t0(series_dir: Path) -> float | None:
    """``t0`` of the node's oldest series segment (None when there is none yet)."""
    from hpc_ft.telemetry.records import SeriesFile

    for path in series_files(series_dir):
        try:
            return float(SeriesFile(path).header["t0"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None
