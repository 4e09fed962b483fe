"""TensorBoard event files in the run dir: scalar curves that continue across requeues and resumes.

Written with ``tensorboard``'s own writer and protos (no torch, no TensorFlow): rank 0's training curves under
``tensorboard/train/``, each node's telemetry under ``tensorboard/node{r}/`` (paths: ``hpc_ft.rundir.layout``).
Every attempt writes a new event file beside the earlier ones; TensorBoard reads them as one run.

No duplicate or missing steps across a resume: an attempt that resumes at step S first writes TensorBoard's
``purge_step`` marker (a ``SessionLog.START`` event at step S + 1), so readers drop what an earlier attempt
logged after its checkpoint (a node killed at step 7 after a checkpoint at 5 logged 6 and 7; they are trained
and logged again). The training loop's curves are flushed before each checkpoint (and by the writer every
``flush_secs``), so what was logged before a checkpoint is on disk when the checkpoint is; other writers flush at
every ``log`` call by default.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping


class ScalarEvents:
    """One directory's scalar event file: ``log(step, {tag: value})``, ``close()``.

    ``purge_step``: steps at and after it that earlier files hold are dropped by TensorBoard's readers
    (None: nothing is purged, e.g. a fresh run). Raises ImportError when tensorboard is not installed.
    """

    def __init__(self, logdir: str | os.PathLike, purge_step: int | None = None, flush_secs: float = 30.0):
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._Event, self._Summary = Event, Summary
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(self.logdir), flush_secs=flush_secs)
        if purge_step is not None:
            self._writer.add_event(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def log(self, step: int, scalars: Mapping[str, float | None], wall_time_s: float | None = None,
            flush: bool = True) -> None:
        """Append ``scalars`` (None and non-numbers skipped) at ``step``; flushed to disk unless ``flush=False``."""
        import time

        values = [self._Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))]
        if not values:
            return
        self._writer.add_event(self._Event(wall_time=time.time() if wall_time_s is None else wall_time_s,
                                           step=int(step), summary=self._Summary(value=values)))
        if flush:
            self._writer.flush()

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
