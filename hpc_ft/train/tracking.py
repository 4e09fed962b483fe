"""Experiment tracking beside metrics.jsonl: rank 0's training curves as TensorBoard event files.

``open_tracking(spec, d, start_step)`` returns the tracker the loop calls at each logging window and evaluation
(``log(step, values, prefix)``) and closes at the end. With ``tracking=tensorboard`` (the default) rank 0
writes ``tensorboard/train/`` (``hpc_ft.rundir.events``): ``train/loss``, ``train/lr``,
``train/samples_per_s``, ``train/tokens_per_s`` and the objective's ``eval/*`` metrics. A resumed attempt
purges what an earlier one logged after the checkpoint it resumes from, so every step is on the curve once.
``tracking=off``, other ranks, or no tensorboard installed: a tracker that does nothing. No torch here: the node
task asks ``telemetry_board_dir`` too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from hpc_ft.rundir.layout import RunDir

log = logging.getLogger("hpc_ft.train")

TENSORBOARD = "tensorboard"
TRACKING_OFF = "off"


class Tracker:
    """Does nothing: ``tracking=off``, or a rank other than 0."""

    def log(self, step: int, values: Mapping[str, Any], prefix: str = "train") -> None:
        """Record ``values`` (numbers; others skipped) at optimizer step ``step`` under ``prefix/``."""

    def close(self) -> None:
        """Flush and close; the tracker takes no more values."""


class TensorBoardTracker(Tracker):
    def __init__(self, logdir: Path, start_step: int):
        from hpc_ft.rundir.events import ScalarEvents

        # Purge whenever an earlier attempt may have logged here (even one that never reached a checkpoint).
        earlier = logdir.is_dir() and any(logdir.iterdir())
        self.events = ScalarEvents(logdir, purge_step=start_step + 1 if earlier else None)

    def log(self, step: int, values: Mapping[str, Any], prefix: str = "train") -> None:
        self.events.log(step, {f"{prefix}/{k}": v for k, v in values.items() if k != "step"})

    def close(self) -> None:
        self.events.close()


def tracking_backend(spec) -> str:
    """The job's ``tracking.backend`` (``tensorboard`` for a job.yaml written before tracking existed)."""
    tracking = getattr(spec.conf, "tracking", None)
    return getattr(tracking, "backend", TENSORBOARD) if tracking is not None else TENSORBOARD


def open_tracking(spec, d, start_step: int) -> Tracker:
    """The tracker of this worker (``d``: its Dist): TensorBoard on rank 0 with ``tracking=tensorboard``."""
    if not d.is_main or tracking_backend(spec) != TENSORBOARD:
        return Tracker()
    try:
        return TensorBoardTracker(RunDir.of(spec).tensorboard_train, start_step)
    except ImportError as exc:
        log.warning("tracking=tensorboard but tensorboard is not importable (%s): no TensorBoard curves", exc)
        return Tracker()


def telemetry_board_dir(spec, node_rank: int) -> Path | None:
    """Where node ``node_rank``'s sampler writes its TensorBoard curves (None: ``tracking=off``)."""
    return RunDir.of(spec).tensorboard_node(node_rank) if tracking_backend(spec) == TENSORBOARD else None
