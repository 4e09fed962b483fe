"""The project's exceptions (one base class, a few kinds the CLI reports without a traceback) and the exit status
that tells a node a training run stopped for preemption."""

from __future__ import annotations

from dataclasses import dataclass

# Training's exit status after a preemption checkpoint (EX_TEMPFAIL: "try again"): the node requeues the job.
# Here, at the bottom of the imports, because both sides use it: hpc_ft.train exits with it, hpc_ft.node reads it.
PREEMPTED_EXIT_CODE = 75
# The exit status of every refusal of bad input (the CLI's commands, the launcher in a user's Hydra app, a worker
# that finds its job cannot run as configured): the request cannot run as given.
EXIT_BAD_CONFIG = 2


class HpcFtError(Exception):
    """Base of every error hpc_ft raises on purpose; the CLI prints it and exits non-zero."""


@dataclass(frozen=True)
class Problem:
    """One bad value: where it is, what it is, which rule it breaks and how to fix it."""

    key: str
    value: object
    rule: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: {self.rule}. Fix: {self.fix}"


class ConfigError(HpcFtError):
    """The job description is invalid; carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = [f"invalid job configuration ({len(self.problems)} problem(s)):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class SubmissionError(HpcFtError):
    """The scheduler refused the job, or the request does not fit the cluster."""


class LaunchError(HpcFtError):
    """A node could not start or finish its torchrun."""
