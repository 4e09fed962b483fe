"""A search's job array (an executor with ``trial_arrays``: Slurm): which trial each task runs, what a restarted
driver reads back, which tasks are cancelled. Pure: the driver asks the executor to submit, release and cancel.

Every task is submitted held and points at its trial's ``job.yaml`` (``SWEEP/<trial number>/job.yaml``); the
driver proposes a trial, writes its job.yaml, then releases its task. Slurm's throttle (``%parallelism``) starts
a released task as soon as a running one ends, so the driver keeps up to ``parallelism`` trials released ahead of
the running ones (``in_flight_limit``); a task is never started without its job.yaml, so nothing on a node waits.
Tasks whose trial was never started (the search has its trials, or the budget cannot pay for more) are cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ArrayRecord:
    """One submitted array: task i runs trial ``trials[i]`` and is the scheduler's job ``task_ids[i]``."""

    trials: tuple[int, ...]
    task_ids: tuple[str, ...]

    def task_of(self, number: int) -> str | None:
        """The task that runs trial ``number``, or None when this array has none for it."""
        try:
            return self.task_ids[self.trials.index(number)]
        except ValueError:
            return None

    def to_dict(self) -> dict[str, Any]:
        return {"trials": list(self.trials), "task_ids": list(self.task_ids)}

    @classmethod
    def from_dict(cls, d: Any) -> "ArrayRecord | None":
        """The record stored in the study (None when there is none, or it was dropped)."""
        if not isinstance(d, dict) or not d.get("trials"):
            return None
        return cls(trials=tuple(int(n) for n in d["trials"]), task_ids=tuple(str(t) for t in d["task_ids"]))


def array_trials(unstarted: list[int], next_number: int, total: int) -> list[int]:
    """The trial numbers a new array runs, in task order: trials proposed but never started (a driver stopped in
    between), then every trial still to be proposed (Optuna numbers them in order, from ``next_number``)."""
    return sorted(set(unstarted)) + list(range(next_number, total))


def tasks_to_cancel(record: ArrayRecord | None, started: set[int]) -> list[str]:
    """Tasks of ``record`` whose trial was never released (not in ``started``): they must never run."""
    if record is None:
        return []
    return [tid for n, tid in zip(record.trials, record.task_ids) if n not in started]


def in_flight_limit(parallelism: int, arrays: bool) -> int:
    """Trials started at once: ``parallelism`` running, and with an array as many released ahead, waiting in the
    queue for the throttle (so the scheduler starts the next trial as soon as one ends, not at the driver's poll)."""
    return 2 * parallelism if arrays else parallelism
