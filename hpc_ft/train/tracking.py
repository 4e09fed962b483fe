"""Experiment tracking beside metrics.jsonl: rank 0's training curves as TensorBoard event files.

``open_tracking(spec, d, start_step)`` returns the tracker the loop calls at each logging window and evaluation
(``log(step, values, prefix)``) and closes at the end. With ``tracking=tensorboard`` (the default) rank 0
writes ``tensorboard/train/`` (``hpc_ft.rundir.events``): ``train/loss``, ``train/lr``,
``train/samples_per_s``, ``train/tokens_per_s`` and the objective's ``eval/*`` metrics. A resumed attempt
purges what an earlier one logged after the checkpoint it resumes from, so every step is on the curve once.
``tracking=mlflow`` logs the same curves to one MLflow run as well (``MlflowTracker``): its id is kept in the run
dir, so a requeued or resumed attempt continues that run instead of starting another. MLflow cannot delete a
metric's values at some steps, so the steps a resumed attempt trains again are logged again and marked on the run
(``RETRAINED_TAG``); ``metric_history`` reads a curve with one value per step, the one logged last.
``tracking=off``, other ranks, or no tensorboard installed: a tracker that does nothing. No torch here: the node task asks
``telemetry_board_dir`` too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from hpc_ft.rundir.layout import RunDir

log = logging.getLogger("hpc_ft.train")

TENSORBOARD = "tensorboard"
MLFLOW = "mlflow"
TRACKING_OFF = "off"
# MLflow run tags written when an attempt continues the run: the checkpoint step it resumed from (the newest
# resume), and every range of steps logged before and trained again since ("6-7,13-15"): their values are in the
# run's history twice, the later one the curve's.
RESUMED_FROM_TAG = "hpc_ft.resumed_from_step"
RETRAINED_TAG = "hpc_ft.retrained_steps"
MLFLOW_TAG_MAX_CHARS = 5000  # MLflow's limit on a tag value; the oldest ranges are dropped beyond it


class Tracker:
    """Does nothing: ``tracking=off``, or a rank other than 0."""

    def log(self, step: int, values: Mapping[str, Any], prefix: str = "train") -> None:
        """Record ``values`` (numbers; others skipped) at optimizer step ``step`` under ``prefix/``."""

    def flush(self) -> None:
        """Put what was logged so far on disk (the loop calls it before each checkpoint)."""

    def close(self) -> None:
        """Flush and close; the tracker takes no more values."""


class TensorBoardTracker(Tracker):
    def __init__(self, logdir: Path, start_step: int):
        from hpc_ft.rundir.events import ScalarEvents

        # Purge whenever an earlier attempt may have logged here (even one that never reached a checkpoint).
        earlier = logdir.is_dir() and any(logdir.iterdir())
        self.events = ScalarEvents(logdir, purge_step=start_step + 1 if earlier else None)

    def log(self, step: int, values: Mapping[str, Any], prefix: str = "train") -> None:
        # Not flushed here: a flush waits for the writer thread (~2 ms, a tenth of a 2 ms step's logging window);
        # the writer flushes every 30 s for a live TensorBoard, and the loop before each checkpoint.
        self.events.log(step, {f"{prefix}/{k}": v for k, v in values.items() if k != "step"}, flush=False)

    def flush(self) -> None:
        self.events.flush()

    def close(self) -> None:
        self.events.close()


class MlflowTracker(Tracker):
    """Rank 0's curves in one MLflow run per run dir (``RunDir.mlflow_run`` keeps its id across attempts).

    The store is ``tracking.mlflow_uri``, or a local file store in the run dir (``mlruns/``; MLflow 3 keeps its
    file backend in maintenance and asks for an opt-in, given here for that store only). The job's overrides are
    the run's parameters. Raises ImportError without mlflow (validation refuses ``tracking=mlflow`` then).
    """

    def __init__(self, spec, start_step: int):
        import json
        import os

        from hpc_ft.rundir.atomic import atomic_write_text

        rd = RunDir.of(spec)
        uri = spec.conf.tracking.mlflow_uri
        if not uri:
            uri = rd.mlflow_store.absolute().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = self._earlier_run(rd.mlflow_run, uri)
        if self.run_id is None:
            name = spec.conf.run.name
            exp = self.client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
            self.run_id = self.client.create_run(exp_id, run_name=rd.path.name).info.run_id
            from mlflow.entities import Param

            params = {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1][:500] for o in spec.overrides if "=" in o}
            if params:
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
            atomic_write_text(rd.mlflow_run, json.dumps({"run_id": self.run_id, "tracking_uri": uri}))
        else:
            self.client.update_run(self.run_id, status="RUNNING")
            log.info("tracking=mlflow: continuing MLflow run %s from step %d", self.run_id, start_step)
            self._mark_retrained(start_step)

    def _mark_retrained(self, start_step: int) -> None:
        """Tag the run with the steps an earlier attempt logged after ``start_step`` (the checkpoint this attempt
        resumes from): this attempt trains and logs them again, and MLflow keeps both values."""
        from mlflow.entities import RunTag

        logged = max((m.step for m in self.client.get_metric_history(self.run_id, "train/loss")), default=0)
        tags = {RESUMED_FROM_TAG: str(start_step)}
        if logged > start_step:
            earlier = self.client.get_run(self.run_id).data.tags.get(RETRAINED_TAG, "")
            ranges = [r for r in earlier.split(",") if r] + [f"{start_step + 1}-{logged}"]
            while len(",".join(ranges)) > MLFLOW_TAG_MAX_CHARS:
                ranges.pop(0)
            tags[RETRAINED_TAG] = ",".join(ranges)
            log.info("tracking=mlflow: steps %d-%d are logged again (MLflow keeps both values; tag %s)",
                     start_step + 1, logged, RETRAINED_TAG)
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def _earlier_run(self, record, uri: str) -> str | None:
        """The run an earlier attempt started in this run dir and store, if the store still has it."""
        import json

        try:
            d = json.loads(record.read_text())
            if d.get("tracking_uri") != uri:
                return None
            return self.client.get_run(d["run_id"]).info.run_id
        except Exception:  # noqa: BLE001 - no record, or a store that lost the run: start a new one
            return None

    def log(self, step: int, values: Mapping[str, Any], prefix: str = "train") -> None:
        import math
        import time

        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}/{k}", float(v), now_ms, int(step)) for k, v in values.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
                   and not math.isnan(float(v))]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED")


def latest_per_step(history: Iterable[Any]) -> list[Any]:
    """MLflow metric values (``mlflow.entities.Metric``) with one per step, the one logged last (newest
    timestamp; of equal ones, the later in ``history``), in step order. After a resume from an earlier checkpoint
    a run's history holds the retrained steps twice (``RETRAINED_TAG``): this is the curve as trained."""
    last: dict[int, Any] = {}
    for m in history:
        if m.step not in last or m.timestamp >= last[m.step].timestamp:
            last[m.step] = m
    return [last[step] for step in sorted(last)]


def metric_history(client: Any, run_id: str, key: str) -> list[Any]:
    """The MLflow curve ``key`` of run ``run_id`` as hpc_ft logged it: one value per step (``latest_per_step``).
    ``client``: an ``mlflow.tracking.MlflowClient``; raises what it raises (an unknown run)."""
    return latest_per_step(client.get_metric_history(run_id, key))


class _Both(Tracker):
    def __init__(self, *trackers: Tracker):
        self.trackers = trackers

    def log(self, step: int, values: Mapping[str, Any], prefix: str = "train") -> None:
        for t in self.trackers:
            t.log(step, values, prefix)

    def flush(self) -> None:
        for t in self.trackers:
            t.flush()

    def close(self) -> None:
        for t in self.trackers:
            t.close()


def tracking_backend(spec) -> str:
    """The job's ``tracking.backend`` (``tensorboard`` for a job.yaml written before tracking existed)."""
    tracking = getattr(spec.conf, "tracking", None)
    return getattr(tracking, "backend", TENSORBOARD) if tracking is not None else TENSORBOARD


def open_tracking(spec, d, start_step: int) -> Tracker:
    """The tracker of this worker (``d``: its Dist): on rank 0, TensorBoard with ``tracking=tensorboard``, and
    MLflow as well with ``tracking=mlflow``."""
    backend = tracking_backend(spec)
    if not d.is_main or backend not in (TENSORBOARD, MLFLOW):
        return Tracker()
    try:
        board: Tracker = TensorBoardTracker(RunDir.of(spec).tensorboard_train, start_step)
    except ImportError as exc:
        log.warning("tracking=%s but tensorboard is not importable (%s): no TensorBoard curves", backend, exc)
        board = Tracker()
    return _Both(board, MlflowTracker(spec, start_step)) if backend == MLFLOW else board


def telemetry_board_dir(spec, node_rank: int) -> Path | None:
    """Where node ``node_rank``'s sampler writes its TensorBoard curves (None: ``tracking=off``)."""
    return RunDir.of(spec).tensorboard_node(node_rank) if tracking_backend(spec) in (TENSORBOARD, MLFLOW) else None
