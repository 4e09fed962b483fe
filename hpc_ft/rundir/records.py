"""The records that cross stages through the run dir: typed, versioned, JSON round-trip.

- ``TrainResult`` (``nodes/node{r}/train.json``): written by the training loop on each node's local rank 0,
  read by the node task into its report.
- ``NodeReport`` (``nodes/node{r}/node_report.json``, and each entry of ``results.json``): written by the node task
  (and by the submitter for a node that died), read by gather, the results table, ``hpc-ft report`` and
  sweep history.
- ``SweepManifest`` (a sweep dir's ``manifest.json``): written by the sweep launcher, updated by the sweep driver.

Readers use attributes, so a renamed field is an AttributeError/type error at the reader, not a silent None.
Every record carries ``version``. Reading accepts the current version and the unversioned records of earlier
hpc_ft versions (read as version 1: ``NodeReport.requeued`` became ``preempted``); a record of a newer version,
or one with a field this version does not know, is refused with a RecordError (a ValueError) naming the file
and the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpc_ft.errors import PREEMPTED_EXIT_CODE  # noqa: F401  re-exported: the node's modules read it from here
from hpc_ft.rundir.atomic import atomic_write_text

TRAIN_RESULT_VERSION = 3  # 1: unversioned (before the run-dir contract); 3: precision_reason
NODE_REPORT_VERSION = 2  # 1: unversioned, the field ``preempted`` was called ``requeued``
LEGACY_VERSION = 1


class RecordError(ValueError):
    """A record this hpc_ft cannot read: a newer version, an unknown field, not a JSON object."""



def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _check(cls: type, d: Any, current: int, renamed: dict[str, str], where: str,
           versioned: bool = True) -> dict[str, Any]:
    """``d`` as keyword arguments of ``cls``: version checked, earlier names mapped, unknown fields refused.
    ``versioned=False``: a part of a versioned record (no version of its own)."""
    name = cls.__name__
    if not isinstance(d, dict):
        raise RecordError(f"{where}: a {name} is a JSON object, not {type(d).__name__}")
    if not versioned:
        unknown = sorted(set(d) - set(_fields(cls)))
        if unknown:
            raise RecordError(f"{where}: {name} has no field(s) {unknown}")
        return dict(d)
    version = d.get("version", LEGACY_VERSION)
    if not isinstance(version, int) or not LEGACY_VERSION <= version <= current:
        raise RecordError(f"{where}: {name} version {version!r} is not one this hpc_ft reads "
                          f"({LEGACY_VERSION}..{current}); read it with the hpc_ft that wrote it")
    out = dict(d)
    if version < current:
        for old, new in renamed.items():
            if old in out and new not in out:
                out[new] = out.pop(old)
        out["version"] = current
    unknown = sorted(set(out) - set(_fields(cls)))
    if unknown:
        raise RecordError(f"{where}: {name} version {version} has no field(s) {unknown}: written by another "
                          f"hpc_ft version, or edited by hand")
    return out


def _require_fields(cls: type, kw: dict[str, Any], where: str) -> None:
    """Raise RecordError naming the fields of ``cls`` without a default that ``kw`` lacks."""
    missing = [n for n, f in _fields(cls).items() if n not in kw and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RecordError(f"{where}: {cls.__name__} lacks field(s) {missing}")


def _load_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``; OSError and ValueError (json.JSONDecodeError) propagate."""
    return json.loads(Path(path).read_text())


# The tasks' evaluation metrics and baselines as reports and sweep tables show them: (key, label, format).
EVAL_METRICS = (("eval_accuracy", "eval accuracy", ".3f"), ("majority_accuracy", "majority baseline", ".3f"),
                ("eval_loss", "eval loss", ".4f"), ("eval_perplexity", "perplexity", ".2f"),
                ("eval_token_accuracy", "token accuracy", ".3f"), ("unigram_perplexity", "unigram baseline", ".2f"))


def eval_summary(metrics: dict[str, Any]) -> str:
    """``metrics`` (a TrainResult's, or a report's) in words, in EVAL_METRICS order; "-" when none is set."""
    parts = [f"{label} {format(metrics[key], fmt)}" for key, label, fmt in EVAL_METRICS
             if isinstance(metrics.get(key), (int, float))]
    return ", ".join(parts) or "-"


@dataclass
class TrainResult:
    """What training reports on one node (``train.json``), written once training stops, preempted or not.

    Every node logs the same global figures (steps, samples/s of the whole job), so any node's result describes
    the run. Fields are None when unknown (no logged window, no evaluation). ``metrics`` holds what the training
    objective evaluates and its baselines (classification: ``eval_accuracy``, ``eval_loss``,
    ``majority_accuracy``): their names are the objective's, so they are a mapping, not fields. In the JSON they
    sit beside the fields, as train.json always had them.
    """

    steps: int = 0  # optimizer steps done, counted from step 0 of the run (resumed steps included)
    max_steps: int | None = None  # train.max_steps
    start_step: int = 0  # the step this attempt resumed at (0: a fresh start)
    samples_per_s: float | None = None  # median over logged windows, whole job (global batch per step)
    tokens_per_s: float | None = None  # the same for non-padding tokens
    step_time_s: float | None = None  # median optimizer step time
    final_loss: float | None = None  # the last logged training loss (NaN when none was logged)
    world_size: int | None = None
    precision: str | None = None  # the dtype trained in (precision=auto: decided on the device at start)
    precision_reason: str | None = None  # why that dtype (auto's decision, or "as configured")
    device: str | None = None
    preempted: bool = False  # stopped at a preemption checkpoint before max_steps
    wall_s: float | None = None  # the training function's wall time on this node
    flops_per_sample: float | None = None  # forward + backward
    model_params: int | None = None
    warnings: list[str] = field(default_factory=list)  # resumed with changes, data smaller than a batch, ...
    truncated_examples: int | None = None  # data=files: examples cut at data.max_length (None: not from files)
    peak_memory_bytes: int | None = None  # this worker's measured peak tensor memory (see peak_memory_source)
    peak_memory_source: str | None = None  # "cuda max_memory_allocated" (the run) or "MemTracker, first step" (CPU)
    metrics: dict[str, float | None] = field(default_factory=dict)  # the objective's (see above), by name
    version: int = TRAIN_RESULT_VERSION

    def eval_summary(self) -> str:
        """The task's evaluation in words, e.g. ``eval loss 0.512, perplexity 1.67, token accuracy 0.803`` (for a
        classification, ``eval accuracy 0.875 (majority baseline 0.470), eval loss 0.40``); "-" without any."""
        return eval_summary(self.metrics)

    def metric(self, name: str) -> float | None:
        """The objective's metric ``name`` (e.g. ``eval_accuracy``); None when this run's objective has none."""
        return self.metrics.get(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        metrics = d.pop("metrics")
        clash = sorted(set(metrics) & set(d))
        if clash:
            raise ValueError(f"objective metric(s) {clash} have the names of TrainResult fields: rename them")
        return {**d, **metrics}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: Any, where: str = "train result") -> "TrainResult":
        """Keys that are not fields are the objective's metrics (numbers or null). Raises RecordError for a
        record this version cannot read."""
        if not isinstance(d, dict):
            raise RecordError(f"{where}: a TrainResult is a JSON object, not {type(d).__name__}")
        names = set(_fields(cls)) - {"metrics"}
        metrics = {k: v for k, v in d.items() if k not in names}
        bad = sorted(k for k, v in metrics.items() if v is not None and (isinstance(v, bool)
                                                                       or not isinstance(v, (int, float))))
        if bad:
            raise RecordError(f"{where}: TrainResult has no field(s) {bad}, and an objective's metrics are "
                              f"numbers: written by another hpc_ft version, or edited by hand")
        kw = _check(cls, {k: v for k, v in d.items() if k in names}, TRAIN_RESULT_VERSION, {}, where)
        return cls(**kw, metrics=metrics)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainResult":
        """Raises OSError (no file), ValueError (not JSON) or RecordError (not a TrainResult this reads)."""
        return cls.from_dict(_load_json(path), str(path))


@dataclass
class NodeReport:
    """One node's outcome: identity, exit status, timing, training result and telemetry."""

    host: str
    node_rank: int
    job_id: str
    exit_code: int  # torchrun's exit status (0: every worker succeeded)
    wall_s: float  # torchrun's wall time on this node
    train: TrainResult | None = None  # None: training wrote no result (it never started or crashed)
    telemetry: dict[str, Any] = field(default_factory=dict)  # summary + bounded downsampled series
    error_tail: str = ""  # last lines of the node's error output when exit_code != 0
    preempted: bool = False  # the node stopped for preemption (exit 75, or training said it checkpointed)
    version: int = NODE_REPORT_VERSION

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def resumable(self) -> bool:
        """Stopped at a preemption checkpoint (resumable), not failed: torchrun's own non-zero exit after
        forwarding the signal says nothing about training."""
        return not self.ok and self.preempted and self.train is not None and self.train.preempted

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.to_dict() if self.train is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "node report") -> "NodeReport":
        """Reads this version's reports and earlier unversioned ones; raises RecordError otherwise (also for
        a missing required field)."""
        kw = _check(cls, d, NODE_REPORT_VERSION, {"requeued": "preempted"}, where)
        _require_fields(cls, kw, where)
        train = kw.get("train")
        # An earlier version wrote {} for "no result".
        kw["train"] = TrainResult.from_dict(train, f"{where}: train") if train else None
        return cls(**kw)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=str))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NodeReport":
        """Raises OSError, ValueError (not JSON) or RecordError (not a NodeReport this version reads)."""
        return cls.from_dict(_load_json(path), str(path))


def save_results(path: str | os.PathLike, reports: list[NodeReport]) -> None:
    """``results.json``: every node's report, in node order (atomic)."""
    atomic_write_text(path, json.dumps([r.to_dict() for r in reports], indent=1, default=str))


def load_results(path: str | os.PathLike) -> list[NodeReport]:
    """The reports of ``results.json``; raises like ``NodeReport.load``."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise RecordError(f"{path}: results are a JSON list of node reports, not {type(data).__name__}")
    return [NodeReport.from_dict(d, f"{path}[{i}]") for i, d in enumerate(data)]


MANIFEST_VERSION = 2  # 1: unversioned


@dataclass
class ManifestJob:
    """One sweep job in ``manifest.json``: where it runs, what it asked for, its scheduler id and outcome."""

    num: int  # Hydra's job number (the run dir's name under the sweep dir)
    run_dir: str
    overrides: list[str]
    order_index: int  # position in the plan's submission order
    nodes: int
    gpus_per_node: int
    job_id: str | None = None  # the scheduler's id, once submitted
    node_reports: list[str] = field(default_factory=list)  # each node's report, relative to run_dir
    ok: bool | None = None  # None until gathered


@dataclass
class SweepManifest:
    """``manifest.json`` of a sweep dir: the plan and every job, rewritten (atomically) as the sweep goes."""

    executor: str  # local | slurm | debug
    wait: bool
    state: str  # prepared | submitted | running | finished
    plan: dict[str, Any]  # hpc_ft.sched's SweepPlan.to_dict()
    jobs: list[ManifestJob] = field(default_factory=list)
    version: int = MANIFEST_VERSION

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=1, default=str))

    @classmethod
    def from_dict(cls, d: Any, where: str = "manifest") -> "SweepManifest":
        kw = _check(cls, d, MANIFEST_VERSION, {}, where)
        kw["jobs"] = [ManifestJob(**_check(ManifestJob, j, MANIFEST_VERSION, {}, f"{where}: jobs[{i}]",
                                           versioned=False)) for i, j in enumerate(kw.get("jobs") or [])]
        return cls(**kw)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SweepManifest":
        """Raises OSError, ValueError (not JSON) or RecordError."""
        return cls.from_dict(_load_json(path), str(path))


NODE_ATTEMPT_VERSION = 1


@dataclass
class NodeAttempt:
    """``nodes/node{r}/attempt.json``: which run of its job this node is in, rewritten when each run starts.

    ``requeues`` counts the requeues after preemption within one job (the node task's own count, carried by
    submitit's requeue): the run dir's record of it where no scheduler keeps one (the local executor).
    """

    job_id: str  # the scheduler's id: a local job's controller pid (the same across its requeues), Slurm's id
    requeues: int  # 0 on the first run of the job
    started_unix_s: float
    version: int = NODE_ATTEMPT_VERSION

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NodeAttempt":
        """Raises OSError (no file), ValueError (not JSON) or RecordError (not a NodeAttempt this reads)."""
        where = str(path)
        kw = _check(cls, _load_json(path), NODE_ATTEMPT_VERSION, {}, where)
        _require_fields(cls, kw, where)
        return cls(**kw)


CANCEL_RECORD_VERSION = 1


@dataclass
class CancelRecord:
    """``.hpc_ft.cancel.json``: ``hpc-ft cancel`` stopped job ``job_id`` of this run dir (written before it signals).

    Tied to that job: the state of a later submission into the dir (another job id, or the same local pid reused by
    another submission: another ``submitted_unix_s``) is not the cancel's.
    """

    job_id: str  # the scheduler's id of the cancelled job, as ``hpc-ft status`` shows it
    submitted_unix_s: float | None  # the run dir's owner record's start for that job (None: no owner record)
    cancelled_unix_s: float
    version: int = CANCEL_RECORD_VERSION

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CancelRecord":
        """Raises OSError (no file), ValueError (not JSON) or RecordError (not a CancelRecord this reads)."""
        where = str(path)
        kw = _check(cls, _load_json(path), CANCEL_RECORD_VERSION, {}, where)
        _require_fields(cls, kw, where)
        return cls(**kw)
