"""The hand-over between the sweep launcher and the CLI's submit task.

Hydra runs the task function once per sweep job (output dir, .hydra/, HydraConfig set). While the hpc_ft
launcher prepares a sweep, the submit task hands its job to the sweep (``take``) instead of submitting it:
the launcher then submits every job at once, as planned. The launcher validated and planned the whole sweep
first; a refusal is raised from ``take`` so the CLI reports it like any bad config (one error, exit 2).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

from hpc_ft.errors import HpcFtError
from hpc_ft.job import JobSpec


@dataclass
class SweepContext:
    """Jobs handed over so far, keyed by Hydra job number, and the sweep's refusal if it has one."""

    error: HpcFtError | None = None  # the whole sweep is refused (bad job, budget): raised at the first take
    specs: dict[int, JobSpec] = field(default_factory=dict)
    warnings: dict[int, list[str]] = field(default_factory=dict)
    refused: bool = False  # the error was delivered; the launcher prepares no more jobs

    def take(self, cfg) -> bool:
        """Hand over the current Hydra job; False in a dry run (the task describes the job itself)."""
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        from hpc_ft.submit.executors import resolve, validate

        if self.error is not None:
            self.refused = True
            raise self.error
        if cfg.dry_run:
            return False
        from hpc_ft.config.overrides import to_job_conf

        hc = HydraConfig.get()
        overrides = OmegaConf.to_container(hc.overrides.task, resolve=False)  # as typed: ${...} unresolved
        conf = to_job_conf(cfg, overrides)
        self.warnings[int(hc.job.num)] = validate(conf)
        self.specs[int(hc.job.num)] = resolve(conf, overrides)
        return True


_ACTIVE: list[SweepContext] = []


def current_sweep() -> SweepContext | None:
    """The sweep being prepared, or None (a single run, or a launcher other than hpc_ft's)."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def preparing(ctx: SweepContext) -> Iterator[SweepContext]:
    _ACTIVE.append(ctx)
    try:
        yield ctx
    finally:
        _ACTIVE.remove(ctx)
